"""A notebook container as a hostile user finds it: no capabilities, no way to gain privileges, a
bounded number of processes, never root, read-only mounts that stay read-only, and no way to choose
another image or container spec through the hub's API."""

from __future__ import annotations

import json
import time

import pytest

from swarm.conftest import NAME, deploy_here, docker
from swarm.helpers import _stop, http_login, notebook_container, spawn

pytestmark = pytest.mark.swarm

PROBE = r"""
import json, os, subprocess
def status_of(pid):
    return dict(line.split(":\t", 1) for line in open(f"/proc/{pid}/status").read().splitlines() if ":\t" in line)
status = status_of("self")
# docker exec (this probe) is not the user's path; the server, its kernels and terminals are
servers = [p for p in os.listdir("/proc") if p.isdigit() and p != str(os.getpid()) and b"jupyterhub-singleuser" in open(f"/proc/{p}/cmdline", "rb").read()]
def run(*argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=20).returncode
    except OSError:
        return None
pids_max = None
for path in ("/sys/fs/cgroup/pids.max", "/sys/fs/cgroup/pids/pids.max"):
    if os.path.exists(path):
        pids_max = open(path).read().strip()
setuid = subprocess.run(["find", "/", "-xdev", "-type", "f", "-perm", "/6000"], capture_output=True, text=True).stdout.split()
print("RESULT" + json.dumps({
    "uid": os.getuid(), "gid": os.getgid(),
    "no_new_privs": sorted({status_of(p)["NoNewPrivs"].strip() for p in servers + ["1"]}),
    "cap_eff": status["CapEff"].strip(), "cap_prm": status["CapPrm"].strip(), "cap_bnd": status["CapBnd"].strip(),
    "pids_max": pids_max, "setuid_programs": setuid,
    "remount_rw": run("mount", "-o", "remount,rw", "/home/jupyter/shared"),
    "write_ro": run("touch", "/home/jupyter/shared/x"),
}))
"""


def probe(container: str) -> dict:
    out = docker("exec", container, "python3", "-c", PROBE)
    return json.loads(out.split("RESULT", 1)[1])


def test_a_notebook_has_no_privileges_to_gain(hub) -> None:
    browser = http_login("jdoe")
    assert spawn(browser, "jdoe") == "ready"
    container = notebook_container("jdoe")
    spec = json.loads(docker("service", "inspect", f"{NAME}-nb-jdoe", "--format", "{{json .Spec.TaskTemplate}}"))
    assert spec["ContainerSpec"]["CapabilityDrop"] == ["ALL"]
    assert spec["Resources"]["Limits"]["Pids"] == 4096
    seen = probe(container)
    assert (seen["uid"], seen["gid"]) == (5001, 6001)
    assert seen["no_new_privs"] == ["1"]  # pid 1 and the server: every process of the user's session
    assert seen["cap_eff"] == seen["cap_prm"] == seen["cap_bnd"] == "0000000000000000"
    assert seen["pids_max"] == "4096"
    assert seen["setuid_programs"] == []
    assert seen["remount_rw"] != 0 and seen["write_ro"] != 0  # a read-only mount stays read-only
    # Even `docker exec -u 0` (the operator, not a user) gets no capabilities in this container.
    root = docker("exec", "-u", "0", container, "grep", "^CapEff", "/proc/self/status")
    assert root.split()[-1] == "0000000000000000"


def test_a_user_cannot_choose_the_image_or_the_container_spec(hub) -> None:
    browser = http_login("alice")
    browser.get("/hub/token")  # a page: sets the _xsrf cookie the API wants with cookie authentication
    token = browser.post("/hub/api/users/alice/tokens", json={"note": "cve"},
                         headers={"X-XSRFToken": browser.cookies.get("_xsrf", "")}).json().get("token")
    assert token, "the user could not make an API token of their own"
    headers = {"Authorization": f"token {token}"}
    browser.delete("/hub/api/users/alice/server", headers=headers)  # whatever an earlier test left running
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        model = browser.get("/hub/api/users/alice", headers=headers).json()
        if not model.get("pending") and not model.get("servers"):
            break
        time.sleep(0.5)
    # Anything in a server request on a hub without profiles is refused (with profiles, only an offered
    # profile's name passes: test_server_options): no image, no container spec, nothing ignored quietly.
    for options in ({"image": "deployer/jupyterhub:0.2.0"}, {"image": "alpine"},
                    {"extra_container_spec": {"user": "0:0", "cap_add": ["ALL"]}, "extra_host_config": {"privileged": True},
                     "cmd": ["sh", "-c", "id"], "mem_limit": "64G"}):
        answer = browser.post("/hub/api/users/alice/server", json=options, headers=headers)
        assert answer.status_code == 403 and "accepts no options" in answer.text, answer.text
        assert not docker("service", "ls", "-q", "--filter", f"name={NAME}-nb-alice")


def test_the_hub_reaches_docker_only_through_the_allowlisting_proxy(hub) -> None:
    """The hub container holds no engine socket (root on the host); its proxy's socket refuses what the
    spawner never does, such as a privileged container or a service mounting the host's root."""
    container = docker("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={NAME}-hub").splitlines()[0]
    mounts = json.loads(docker("inspect", container, "--format", "{{json .Mounts}}"))
    assert not [m for m in mounts if m["Source"].endswith("docker.sock")], mounts
    assert [m["Destination"] for m in mounts if m["Source"] == f"/srv/deployer/{NAME}/docker-proxy"] == ["/run/deployer-proxy"]
    attempt = r"""
import docker, json
api = docker.APIClient(base_url="unix:///run/deployer-proxy/docker.sock", version="auto")
out = {"version": bool(api.version().get("ApiVersion"))}
for name, call in {
    "containers": lambda: api.containers(),
    "privileged": lambda: api.create_container("deployer/jupyteruser:0.2.0", host_config=api.create_host_config(privileged=True)),
    "host root": lambda: api.create_service(docker.types.TaskTemplate(docker.types.ContainerSpec(
        "deployer/jupyteruser:0.2.0", ["sleep", "1"], mounts=[docker.types.Mount("/host", "/", type="bind")])), name="%s-nb-evil"),
    "other image": lambda: api.create_service(docker.types.TaskTemplate(docker.types.ContainerSpec(
        "deployer/jupyterhub:0.2.0", ["sleep", "1"])), name="%s-nb-evil"),
}.items():
    try:
        call()
        out[name] = "allowed"
    except docker.errors.APIError as exc:
        out[name] = exc.status_code
print("RESULT" + json.dumps(out))
""" % (NAME, NAME)
    seen = json.loads(docker("exec", container, "python3", "-c", attempt).split("RESULT", 1)[1])
    assert seen == {"version": True, "containers": 403, "privileged": 403, "host root": 403, "other image": 403}, seen
    assert not docker("service", "ls", "-q", "--filter", f"name={NAME}-nb-evil")


def test_a_uid_without_a_gid_runs_with_the_images_group_never_root(hub, site) -> None:
    """TAS gives the uid only (use_tas_gid: false, no jupyteruser_gid): Docker would run a bare uid
    with gid 0; the spawner gives it the image's group (100), and the proxy would refuse gid 0."""
    # Replacing the hub gives it a new address, which running servers' resolvers keep for up to 10
    # minutes (Docker's DNS TTL, cached by aiodns): no server runs across this test's redeploys.
    _stop("jdoe")
    _stop("alice")
    try:
        deploy_here(site.deployment("use_tas_gid=false"))
        assert spawn(http_login("alice"), "alice") == "ready"
        spec = json.loads(docker("service", "inspect", f"{NAME}-nb-alice", "--format", "{{json .Spec.TaskTemplate}}"))
        assert spec["ContainerSpec"]["User"] == "5003:100"
        assert docker("exec", notebook_container("alice"), "id", "-g") == "100"
    finally:
        _stop("alice")
        deploy_here(site.deployment())
