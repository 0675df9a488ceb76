"""Server options on the three-host lab (issue 15): a GPU profile lands on the worker that declares GPUs
and nowhere else, with a device of its own named in its environment, and survives updates of its node;
project mounts follow the user's membership (the tenant's projects API and the static list by group)
from one spawn to the next.

LAB SUBSTITUTION: as in test_gpus, worker1's dockerd (its container's main process) is restarted by
the container's restart policy. No GPU is needed: Swarm takes the device ids as names.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml
from sim.tenant import TenantSimulator

from lab.conftest import LAB_SHARE
from lab.deployment import NAME, SCOPE, deployer, http_login, hub_xsrf, notebook_container, text
from lab.harness import Lab

pytestmark = pytest.mark.lab

GPU_IDS = ["GPU-0a1b2c3d-0000-4000-8000-00000000aaaa", "GPU-0a1b2c3d-0000-4000-8000-00000000bbbb"]
PROJECTS = f"{LAB_SHARE}/projects"
SITE = "/srv/site"


def outer(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True, timeout=60).stdout.strip()


@pytest.fixture(scope="module")
def options_site(lab: Lab, site: Path, tenant: TenantSimulator):
    outer("update", "--restart", "unless-stopped", lab.container("worker1"))  # its "service manager" (see test_gpus)
    servers = yaml.safe_load((site / "site.hosts").read_text())
    next(h for h in servers[SCOPE]["hosts"] if h["host_id"] == "worker1")["gpus"] = GPU_IDS
    (site / "site.hosts").write_text(yaml.safe_dump(servers))
    configs = yaml.safe_load((site / "site.configs").read_text())
    configs[SCOPE].update({
        "tenant_groups_claim": "groups", "allow_named_servers": True,
        "notebook_profiles": [{"name": "Standard"}, {"name": "GPU", "description": "one GPU", "gpus": 1},
                              # a site's own file system on the workers only (Stockyard-like), below the user's own directory there
                              {"name": "Site", "volume_mounts": [f"{SITE}/{{username}}/work:/home/jupyter/site:rw"]}],
        "project_mounts": {"host_path": f"{PROJECTS}/{{project_id}}", "container_path": "/home/jupyter/projects", "mode": "rw",
                           "api_url": tenant.projects_url,
                           "projects": [{"id": "PRJ-STATIC", "name": "Static Team", "groups": ["team"]}]},
    })
    (site / "site.configs").write_text(yaml.safe_dump(configs))
    for worker in ("worker1", "worker2"):  # the site's file system: on the workers, not the hub (users own their directory)
        lab.ssh(worker, f"mkdir -p {SITE}/jdoe/work && chown -R 5001:6001 {SITE}/jdoe && chmod 0755 {SITE}")
    for project in ("PRJ-1", "PRJ-2", "PRJ-STATIC"):  # the site's project storage (on the share every host sees)
        lab.ssh("hub", f"mkdir -p {PROJECTS}/{project} && echo {project} >{PROJECTS}/{project}/README && chmod -R a+rwX {PROJECTS}/{project}")
    deployed = deployer(site, "deploy")
    assert deployed.returncode == 0, deployed.stderr[-4000:]
    yield site
    # The GPUs leave worker1's engine by a deploy without them (its engine restarted while the container's restart
    # policy still brings it back), so the next module's lab starts without them and restarts nothing.
    next(h for h in servers[SCOPE]["hosts"] if h["host_id"] == "worker1").pop("gpus")
    (site / "site.hosts").write_text(yaml.safe_dump(servers))
    cleared = deployer(site, "deploy")
    assert cleared.returncode == 0, cleared.stderr[-3000:]
    if os.environ.get("DEPLOYER_KEEP_LAB") != "1":
        deployer(site, "destroy", "-y", "--purge-data")
    outer("update", "--restart", "no", lab.container("worker1"))
    lab.ssh("worker1", "rm -f /etc/docker/daemon.json", check=False)


def start(hub: str, user: str, options: dict) -> httpx.Client:
    browser = http_login(hub, user)
    browser.get("/hub/home")
    response = browser.post(f"/hub/api/users/{user}/server", headers=hub_xsrf(browser), json=options)
    assert response.status_code in (201, 202), response.text
    deadline = time.monotonic() + 240
    while not browser.get("/hub/api/user", headers=hub_xsrf(browser)).json().get("servers", {}).get("", {}).get("ready"):
        assert time.monotonic() < deadline, f"the server of {user} did not start"
        time.sleep(2)
    return browser


def stop(browser: httpx.Client, user: str) -> None:
    browser.delete(f"/hub/api/users/{user}/server", headers=hub_xsrf(browser))
    deadline = time.monotonic() + 120
    while browser.get("/hub/api/user", headers=hub_xsrf(browser)).json().get("servers"):
        assert time.monotonic() < deadline, f"the server of {user} did not stop"
        time.sleep(1)


def server_environment(lab: Lab, worker: str, container: str) -> dict[str, str]:
    script = ("import os\nfor p in filter(str.isdigit, os.listdir('/proc')):\n"
              "    if b'jupyterhub-singleuser' in open(f'/proc/{p}/cmdline','rb').read():\n"
              "        print(open(f'/proc/{p}/environ').read().replace(chr(0), chr(10)))\n")
    out = text(lab.ssh(worker, f"docker exec -i {container} python3 -", input=script.encode()))
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_a_gpu_profile_lands_on_the_worker_with_gpus_and_gets_a_device_of_its_own(lab: Lab, options_site: Path, tenant: TenantSimulator) -> None:
    hub = lab.hosts["hub"]
    worker1 = text(lab.ssh("hub", "docker node inspect worker1 --format '{{.ID}}'"))
    seen = []
    for user in ("jdoe", "bob"):
        browser = start(hub, user, {"profile": "GPU"})
        worker, container = notebook_container(lab, user)
        assert worker == "worker1"  # the only host that declares GPUs
        spec = json.loads(text(lab.ssh("hub", f"docker service inspect {NAME}-nb-{user} --format '{{{{json .Spec}}}}'")))
        assert f"node.id=={worker1}" in spec["TaskTemplate"]["Placement"]["Constraints"]
        assert "GenericResources" not in json.dumps(spec)  # (Swarm's reservations: see deployer_hub.gpus)
        env = dict(item.split("=", 1) for item in json.loads(text(lab.ssh(worker, f"docker inspect {container} --format '{{{{json .Config.Env}}}}'"))))
        device = env["NVIDIA_VISIBLE_DEVICES"]  # what NVIDIA's runtime reads when it creates the container
        assert device in GPU_IDS and spec["Labels"]["deployer.gpus"] == f"{worker1}:{device}"
        assert server_environment(lab, worker, container)["NVIDIA_VISIBLE_DEVICES"] == device
        seen.append(device)
        browser.close()
    assert sorted(seen) == sorted(GPU_IDS)  # each server its own device

    # An update of the node (here a label; deploy, an operator or a flapping node do the same) leaves them running:
    # Docker 20.10 would reject tasks holding Swarm-reserved generic resources right here.
    lab.ssh("hub", "docker node update --label-add deployer.probe=1 worker1 && sleep 5 && docker node update --label-rm deployer.probe worker1")
    for user in ("jdoe", "bob"):
        assert notebook_container(lab, user)[0] == "worker1"

    # Both GPUs taken: a third GPU server (jdoe's second, a named one) cannot be placed, and he is told at once.
    third = http_login(hub, "jdoe")
    third.get("/hub/home")
    started = time.monotonic()
    third.post("/hub/api/users/jdoe/servers/more", headers=hub_xsrf(third), json={"profile": "GPU"})
    progress = third.get("/hub/api/users/jdoe/servers/more/progress", headers=hub_xsrf(third), timeout=120).text
    assert "No worker has 1 free GPU(s) right now (0 of 2 free" in progress, progress[-2000:]
    assert time.monotonic() - started < 60
    assert not text(lab.ssh("hub", f"docker service ls -q --filter name={NAME}-nb-jdoe--more"))
    # A server without GPUs is shown none, whatever its image asks for.
    for user in ("jdoe", "bob"):
        stop(http_login(hub, user), user)
    browser = start(hub, "bob", {"profile": "Standard"})
    worker, container = notebook_container(lab, "bob")
    assert server_environment(lab, worker, container)["NVIDIA_VISIBLE_DEVICES"] == "void"
    stop(browser, "bob")


def test_project_mounts_follow_membership_from_spawn_to_spawn(lab: Lab, options_site: Path, tenant: TenantSimulator) -> None:
    hub = lab.hosts["hub"]
    tenant.set_projects("jdoe", [{"id": "PRJ-1", "name": "Hurricane Harvey"}, {"id": "PRJ-2", "name": "Coastal Erosion"}])
    tenant.set_groups("jdoe", ["team"])
    browser = start(hub, "jdoe", {"profile": "Standard"})
    worker, container = notebook_container(lab, "jdoe")
    listing = text(lab.ssh(worker, f"docker exec {container} ls /home/jupyter/projects")).split()
    assert sorted(listing) == ["coastal-erosion", "hurricane-harvey", "static-team"]
    assert text(lab.ssh(worker, f"docker exec {container} cat /home/jupyter/projects/hurricane-harvey/README")) == "PRJ-1"
    assert text(lab.ssh(worker, f"docker exec {container} sh -c 'echo from-jdoe >/home/jupyter/projects/coastal-erosion/note'")) == ""
    assert text(lab.ssh("hub", f"cat {PROJECTS}/PRJ-2/note")) == "from-jdoe"
    stop(browser, "jdoe")

    # She left PRJ-2 and the team: at the next spawn (and login, where groups are read) only PRJ-1 is there.
    tenant.set_projects("jdoe", [{"id": "PRJ-1", "name": "Hurricane Harvey"}])
    tenant.set_groups("jdoe", [])
    browser = start(hub, "jdoe", {"profile": "Standard"})
    worker, container = notebook_container(lab, "jdoe")
    assert text(lab.ssh(worker, f"docker exec {container} ls /home/jupyter/projects")).split() == ["hurricane-harvey"]
    stop(browser, "jdoe")

    # The projects API down: a clear page, no server without the user's projects.
    tenant.projects_mode = "500"
    try:
        browser = http_login(hub, "jdoe")
        browser.get("/hub/home")
        browser.post("/hub/api/users/jdoe/server", headers=hub_xsrf(browser), json={"profile": "Standard"})
        deadline = time.monotonic() + 60
        while True:
            progress = browser.get("/hub/api/users/jdoe/server/progress", headers=hub_xsrf(browser)).text
            if "projects service answered with an error (HTTP 500)" in progress:
                break
            assert time.monotonic() < deadline, progress[-2000:]
            time.sleep(1)
    finally:
        tenant.projects_mode = "ok"
    assert not text(lab.ssh("hub", f"docker service ls -q --filter name={NAME}-nb-jdoe"))


def test_a_link_in_a_site_file_system_only_the_workers_see_is_refused_by_their_mount_guard(lab: Lab, options_site: Path) -> None:
    """Issue 21: the hub cannot see a site's file system (here /srv/site on the workers), so only the mount guard on
    the worker that runs the task can refuse a link there. jdoe (uid 5001) makes her work directory a link to / on
    both workers; her Site server fails with a page naming the mount and the worker; made a directory again, it starts
    and mounts that very directory."""
    hub = lab.hosts["hub"]
    for worker in ("worker1", "worker2"):
        lab.ssh(worker, f"cd {SITE}/jdoe && setpriv --reuid 5001 --regid 6001 --clear-groups sh -c 'mv work work.old && ln -s / work'")
    browser = http_login(hub, "jdoe")
    browser.get("/hub/home")
    browser.post("/hub/api/users/jdoe/server", headers=hub_xsrf(browser), json={"profile": "Site"})
    deadline = time.monotonic() + 180
    while True:
        progress = browser.get("/hub/api/users/jdoe/server/progress", headers=hub_xsrf(browser), timeout=200).text
        if '"failed": true' in progress:
            break
        assert time.monotonic() < deadline, progress[-2000:]
        time.sleep(1)
    assert "Your storage at /home/jupyter/site cannot be mounted on worker" in progress, progress[-2000:]
    assert f"{SITE}/jdoe/work is a symbolic link" in progress, progress[-2000:]
    assert not text(lab.ssh("hub", f"docker service ls -q --filter name={NAME}-nb-jdoe"))
    for worker in ("worker1", "worker2"):
        lab.ssh(worker, f"cd {SITE}/jdoe && rm work && mv work.old work && echo {worker} >work/here && chown 5001:6001 work/here")
    browser = start(hub, "jdoe", {"profile": "Site"})
    worker, container = notebook_container(lab, "jdoe")
    assert text(lab.ssh(worker, f"docker exec {container} cat /home/jupyter/site/here")) == worker  # that worker's own directory
    stop(browser, "jdoe")
