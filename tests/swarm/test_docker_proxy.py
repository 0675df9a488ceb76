"""The allowlisting Docker API proxy (deployer_hub.dockerproxy) against the real engine: the real
spawner works through it, and everything a compromised hub would try instead is refused with 403
before it reaches the engine. Notebooks' storage comes from a real mount guard (deployer_hub.mountguard,
run here as a process), which refuses at the engine's mount what the proxy cannot see: a link in the share."""

from __future__ import annotations

import asyncio
import copy
import http.client
import io
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import docker
import docker.errors
import proxyspec
import pytest
from deployer_hub import mountguard
from deployer_hub.auth import UserFacingError
from deployer_hub.spawner import TenantSwarmSpawner
from jupyterhub.objects import Hub
from proxyspec import policy as proxy_policy
from proxyspec import start_mount_guard, stop_mount_guard, volume

from swarm.conftest import docker as docker_cli

pytestmark = pytest.mark.swarm

ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENT = "pxtest"
PREFIX = "pxtest-nb"  # the deployment's notebooks; every object of this test is named pxtest-*
NETWORK = "pxtest-net"
OTHER_NETWORK = "pxtest-other-net"
CA_CONFIG = "pxtest-ca"
OTHER_CONFIG = "pxtest-xcfg"  # not below the policy's config_prefix
OUTSIDER = "pxtest-outsider"  # a service of someone else on the same swarm
NB_SECRET = "pxtest-nbenv-license"  # a notebook_secret_env value (below the policy's secret_prefix)
OTHER_SECRET = "pxtest-xsecret"  # someone else's secret
IMAGE = "deployer/jupyteruser:0.2.0"
WORKER = "node.labels.deployer.worker==true"
#: The group of the engine's socket here (docker's, or root's): a notebook never runs as it.
DOCKER_GID = os.stat("/var/run/docker.sock").st_gid or 998


def cleanup() -> None:
    """Every pxtest-* object, also those a killed run left."""
    services = docker_cli("service", "ls", "--filter", "name=pxtest-", "--format", "{{.Name}}", check=False).split()
    if services:
        docker_cli("service", "rm", *services, check=False)
    docker_cli("config", "rm", CA_CONFIG, OTHER_CONFIG, check=False)
    docker_cli("secret", "rm", NB_SECRET, OTHER_SECRET, check=False)
    for _ in range(30):  # a network is busy until the removed tasks have let go of it
        docker_cli("network", "rm", NETWORK, OTHER_NETWORK, check=False)
        if not docker_cli("network", "ls", "-q", "--filter", "name=pxtest-", check=False):
            return
        time.sleep(1)


@dataclass
class Proxy:
    socket: str
    log: Path
    share: Path
    process: subprocess.Popen
    guard: subprocess.Popen

    def client(self) -> docker.APIClient:
        return docker.APIClient(base_url=f"unix://{self.socket}", version="auto", timeout=60)

    def log_lines(self, since: int = 0) -> list[str]:
        return self.log.read_text().splitlines()[since:]


@pytest.fixture(scope="session")
def mount_guard(tmp_path_factory) -> Iterator[tuple[Path, subprocess.Popen]]:
    """This test deployment's mount guard, for the whole session: Docker forgets a volume driver of this kind only when
    the engine restarts, and one that stopped answering makes every later `docker volume ls` here wait for it."""
    base = tmp_path_factory.mktemp("docker-proxy-guard")
    share = base / "share"
    for directory in ("data/sim/jdoe", "shared"):
        (share / directory).mkdir(parents=True)
    rules = proxy_policy(DEPLOYMENT, str(share), network=NETWORK, constraint=WORKER)["mounts"]
    guard_policy = mountguard.Policy(DEPLOYMENT, tuple(mountguard.Rule.from_dict(r) for r in rules),
                                     staging=str(base / "staging"), state=str(base / "guard" / "volumes.json"))
    guard = start_mount_guard(guard_policy.to_json(), str(base / "mountguard.log"))
    yield share, guard
    stop_mount_guard(guard, DEPLOYMENT)


@pytest.fixture(scope="module")
def proxy(worker_node, mount_guard, tmp_path_factory) -> Iterator[Proxy]:
    cleanup()
    docker_cli("network", "create", "--driver", "overlay", "--attachable", NETWORK)
    docker_cli("network", "create", "--driver", "overlay", "--attachable", OTHER_NETWORK)
    for name in (CA_CONFIG, OTHER_CONFIG):
        subprocess.run(["docker", "config", "create", name, "-"], input=b"-----BEGIN CERTIFICATE-----\n", check=True, capture_output=True)
    for name in (NB_SECRET, OTHER_SECRET):
        subprocess.run(["docker", "secret", "create", name, "-"], input=b"lic-value-" + name.encode(), check=True, capture_output=True)
    docker_cli("service", "create", "--detach", "--quiet", "--no-resolve-image", "--name", OUTSIDER, "--restart-condition", "none", IMAGE, "sleep", "600")
    base = tmp_path_factory.mktemp("docker-proxy")
    share, guard = mount_guard
    policy = proxy_policy(DEPLOYMENT, str(share), network=NETWORK, constraint=WORKER, service_prefix=PREFIX,
                          listen=str(base / "run" / "docker.sock"), upstream="/var/run/docker.sock", config_prefix=CA_CONFIG,
                          secret_prefix="pxtest-nbenv-", refused_gids=[65534, DOCKER_GID])
    (base / "policy.json").write_text(json.dumps(policy))
    p = Proxy(policy["listen"], base / "proxy.log", share, start_proxy(base / "proxy.log", policy["listen"], base / "policy.json", verbose=True), guard)
    yield p
    stop_proxy(p.process, p.socket)
    cleanup()


def start_proxy(log: Path, listen: str, policy_file: Path | None = None, env_policy: dict | None = None, verbose: bool = False) -> subprocess.Popen:
    """``python -m deployer_hub.dockerproxy`` as it is started in production, once it listens."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "hub" / "src")}
    env.pop("DEPLOYER_DOCKER_PROXY_POLICY", None)
    if env_policy is not None:
        env["DEPLOYER_DOCKER_PROXY_POLICY"] = json.dumps(env_policy)
    argv = [sys.executable, "-m", "deployer_hub.dockerproxy"] + (["--policy", str(policy_file)] if policy_file else []) + (["--verbose"] if verbose else [])
    with open(log, "ab") as stderr:
        process = subprocess.Popen(argv, stdout=stderr, stderr=stderr, env=env)
    deadline = time.monotonic() + 20
    while not (os.path.exists(listen) and "listening on" in log.read_text()):
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    return process


def stop_proxy(process: subprocess.Popen, listen: str) -> None:
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 0
    assert not os.path.exists(listen)  # removed on a clean stop


@pytest.fixture
def client(proxy: Proxy) -> Iterator[docker.APIClient]:
    with proxy.client() as c:
        yield c


def service_exists(name: str) -> bool:
    return name in docker_cli("service", "ls", "--filter", f"name={name}", "--format", "{{.Name}}").split()


def wait_for_task(client: docker.APIClient, name: str, state: str = "running", timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tasks = client.tasks(filters={"service": name})
        if tasks and tasks[0]["Status"]["State"] == state:
            return tasks[0]
        time.sleep(0.3)
    raise AssertionError(f"{name}: no {state} task within {timeout} s: {tasks}")


# --- the spec the spawner sends -------------------------------------------------------------


def notebook_service(share: Path, name: str = f"{PREFIX}-probe", mounts: list | None = None) -> dict[str, Any]:
    """create_service's arguments as TenantSwarmSpawner.create_object builds them."""
    return proxyspec.notebook_service(DEPLOYMENT, str(share), network=NETWORK, constraint=WORKER, name=name, mounts=mounts)


def test_version_and_ping_with_or_without_an_api_version(client: docker.APIClient) -> None:
    assert client.version()["ApiVersion"] == docker.APIClient(version="auto").version()["ApiVersion"]
    assert client.ping() is True
    for path in ("/version", "/v1.41/version", "/v1.41/_ping", "/_ping"):
        assert client._get(f"http+docker://localhost{path}").status_code == 200, path
    assert client._get("http+docker://localhost/v1.24/_ping").status_code == 403  # one API version only


def test_a_notebook_service_is_created_runs_and_is_listed_inspected_and_removed(client: docker.APIClient, proxy: Proxy) -> None:
    name = f"{PREFIX}-lifecycle"
    spec = notebook_service(proxy.share, name)
    spec["task_template"]["ContainerSpec"]["Env"].append("PAD=" + "x" * 4096)  # answers over Docker's 2 KiB buffer come chunked
    created = client.create_service(**spec)
    try:
        task = wait_for_task(client, name)
        assert task["Spec"]["ContainerSpec"]["User"] == "5001:6001"
        conn = UnixHTTPConnection(proxy.socket)
        for _ in range(2):  # a chunked answer passed on as chunks, and the connection still in step after it
            conn.request("GET", "/v1.41/tasks?filters=" + quote(json.dumps({"service": [name]})))
            response = conn.getresponse()
            assert response.chunked and json.loads(response.read())[0]["ID"] == task["ID"]
        conn.close()
        assert name in [s["Spec"]["Name"] for s in client.services(filters={"name": PREFIX})]
        assert client.inspect_service(name)["ID"] == created["ID"]
        assert client.inspect_service(created["ID"][:10])["Spec"]["Name"] == name  # an ID prefix resolves, checked on the answer
        assert client.inspect_node(task["NodeID"])["ID"] == task["NodeID"]
    finally:
        client.remove_service(created["ID"])
    assert not service_exists(name)
    with pytest.raises(docker.errors.NotFound):  # the engine's 404, unchanged: the spawner reads it as "gone"
        client.inspect_service(name)
    with pytest.raises(docker.errors.NotFound):
        client.remove_service(created["ID"])


# --- the real spawner through the proxy -----------------------------------------------------


class FakeUser:
    """JupyterHub's User, as far as the spawner reads it."""

    id = 1

    def __init__(self, name: str) -> None:
        self.name = self.escaped_name = name
        self.url = f"/user/{name}/"
        self.settings: dict = {}
        self.orm_user = None


def proxied_spawner(proxy: Proxy, user: str) -> TenantSwarmSpawner:
    class Proxied(TenantSwarmSpawner):
        _client = None  # dockerspawner caches one client per class: this one talks to the proxy

    spawner = Proxied(
        user=FakeUser(user), hub=Hub(), tenant_id="sim", prefix=PREFIX, image=IMAGE, network_name=NETWORK,
        volume_mounts=[f"{proxy.share}/data/{{tenant_id}}/{{username}}:/home/jupyter/permanent:rw"], mount_guard=DEPLOYMENT, guard_label=DEPLOYMENT,
        notebook_uid=5001, notebook_gid=6001, ca_config=CA_CONFIG, mem_limit="256M", secret_env={"LICENSE_KEY": NB_SECRET},
        cmd=["sleep", "600"], http_timeout=1, task_timeout=60,
        client_kwargs={"base_url": f"unix://{proxy.socket}"},
    )
    spawner.api_token = "s3cr3t-token"
    return spawner


def endpoints(lines: list[str]) -> list[str]:
    """The allowed requests the proxy logged (--verbose), IDs and names replaced by {id}."""
    seen = []
    for line in lines:
        match = re.search(r"deployer-docker-proxy (GET|POST|DELETE) (\S+)$", line)
        if match:
            path = re.sub(r"^/v1\.\d+", "", match.group(2))
            path = re.sub(r"^/(services|nodes|configs|secrets)/(?!create$)[^/]+$", r"/\1/{id}", path)
            seen.append(f"{match.group(1)} {path}")
    return seen


def test_the_real_spawner_starts_polls_and_stops_a_notebook_through_the_proxy(proxy: Proxy) -> None:
    mark = len(proxy.log_lines())
    spawner = proxied_spawner(proxy, "jdoe")

    async def lifecycle() -> tuple[Any, Any, Any, str]:
        started = await spawner.start()
        running = await spawner.poll()
        container = docker_cli("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={PREFIX}-jdoe")
        secret = docker_cli("exec", container, "cat", "/run/secrets/deployer-env-LICENSE_KEY")  # (as the notebook's uid)
        await spawner.stop()
        return started, running, await spawner.poll(), secret

    (ip, port), running, stopped, secret = asyncio.run(lifecycle())
    spawner.client.close()
    assert port == spawner.guarded_port and ip.count(".") == 3 and running is None and stopped == 0
    assert secret == f"lic-value-{NB_SECRET}"
    assert not service_exists(f"{PREFIX}-jdoe")

    # A start that fails (the user's directory is missing on the worker) is explained with the
    # worker's name, which the spawner asks the engine for: GET /nodes/{id}, through the proxy too.
    ghost = proxied_spawner(proxy, "ghost")
    with pytest.raises(UserFacingError, match=r"storage directory .* missing on worker \S+"):
        asyncio.run(ghost.start())
    ghost.client.close()
    assert not service_exists(f"{PREFIX}-ghost")  # removed by the spawner, through the proxy

    lines = proxy.log_lines(mark)
    assert not [line for line in lines if "refused" in line], lines
    used = endpoints(lines)
    print("\nendpoints the spawner used:", *sorted(set(used)), sep="\n  ")
    # (GET /services and GET /nodes: the listing every poll shares, deployer_hub.swarmview)
    assert set(used) == {"GET /version", "GET /services/{id}", "GET /configs/{id}", "GET /secrets/{id}", "POST /services/create",
                         "GET /tasks", "DELETE /services/{id}", "GET /nodes/{id}", "GET /services", "GET /nodes"}
    assert not any("s3cr3t" in line for line in proxy.log_lines())  # bodies and env values never logged


def test_a_gpu_server_without_a_worker_with_gpus_is_told_at_once(proxy: Proxy) -> None:
    """The spawner reads the nodes and the deployment's GPU services through the proxy; this node declares
    no GPUs, so the user reads why at once and no service is created."""
    spawner = proxied_spawner(proxy, "gpuuser")
    spawner.gpus = 1
    started = time.monotonic()
    with pytest.raises(UserFacingError, match=r"No worker with GPUs can take a server right now"):
        asyncio.run(spawner.start())
    spawner.client.close()
    assert time.monotonic() - started < 30
    assert not service_exists(f"{PREFIX}-gpuuser")


# --- what is refused ------------------------------------------------------------------------


def _container(spec: dict) -> dict:
    return spec["task_template"]["ContainerSpec"]


def _set(path: str, value: Any) -> Callable[[dict], None]:
    """A change to the spec: ``path`` is dotted, into create_service's arguments."""
    def change(spec: dict) -> None:
        *parents, last = path.split(".")
        node: Any = spec
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[int(last) if isinstance(node, list) else last] = value
    return change


def _guard_options(spec: dict) -> dict:
    return _container(spec)["Mounts"][0]["VolumeOptions"]["DriverConfig"]["Options"]


def _guard_source(spec: dict) -> str:
    return _guard_options(spec)["source"]


def _network_id(name: str) -> str:
    return docker_cli("network", "inspect", name, "--format", "{{.Id}}")


def _config_id(name: str) -> str:
    return docker_cli("config", "inspect", name, "--format", "{{.ID}}")


def _secret_id(name: str) -> str:
    return docker_cli("secret", "inspect", name, "--format", "{{.ID}}")


MOUNT = "task_template.ContainerSpec.Mounts.0"
FORBIDDEN: dict[str, tuple[Callable[[dict], None], str]] = {
    "image": (_set("task_template.ContainerSpec.Image", "busybox:latest"), "Image"),
    "image-with-a-tag-trick": (_set("task_template.ContainerSpec.Image", IMAGE + "-evil"), "Image"),
    "capability-add": (_set("task_template.ContainerSpec.CapabilityAdd", ["SYS_ADMIN"]), "CapabilityAdd"),
    "privileges": (_set("task_template.ContainerSpec.Privileges", {"SELinuxContext": {"Disable": True}}), "Privileges"),
    "capabilities-kept": (_set("task_template.ContainerSpec.CapabilityDrop", ["NET_RAW"]), "CapabilityDrop"),
    "sysctls": (_set("task_template.ContainerSpec.Sysctls", {"net.ipv4.ip_forward": "1"}), "Sysctls"),
    "secrets": (_set("task_template.ContainerSpec.Secrets", [{"SecretID": "x", "SecretName": "x"}]), "SecretName"),
    "secret-outside-the-prefix": (lambda s: _container(s).update(Secrets=[{"SecretID": _secret_id(OTHER_SECRET), "SecretName": OTHER_SECRET,
                                                                            "File": {"Name": "x", "UID": "5001", "GID": "6001", "Mode": 0o400}}]), "SecretName"),
    "secret-id-of-another": (lambda s: _container(s).update(Secrets=[{"SecretID": _secret_id(OTHER_SECRET), "SecretName": NB_SECRET,
                                                                       "File": {"Name": "x", "UID": "5001", "GID": "6001", "Mode": 0o400}}]), "is not the secret"),
    "secret-to-a-path": (lambda s: _container(s).update(Secrets=[{"SecretID": _secret_id(NB_SECRET), "SecretName": NB_SECRET,
                                                                   "File": {"Name": "/etc/passwd", "UID": "0", "GID": "0", "Mode": 0o444}}]), "File.Name"),
    # (the hub pins GPU notebooks itself: Docker 20.10 rejects tasks holding generic resources at any node update)
    "generic-resources": (_set("task_template.Resources", {"Reservations": {"GenericResources": [
        {"DiscreteResourceSpec": {"Kind": "NVIDIA-GPU", "Value": 1}}]}}), "GenericResources"),
    "command": (_set("task_template.ContainerSpec.Command", ["/bin/sh", "-c", "id"]), "Command"),
    "case-trick": (_set("task_template.ContainerSpec.privileges", {"SELinuxContext": {"Disable": True}}), "privileges"),
    "bind-root": (_set(MOUNT, {"Type": "bind", "Source": "/", "Target": "/home/jupyter/permanent"}), "not allowed"),
    "bind-docker-socket": (_set(MOUNT, {"Type": "bind", "Source": "/var/run/docker.sock", "Target": "/home/jupyter/permanent"}), "not allowed"),
    "bind-in-the-share": (lambda s: _container(s)["Mounts"].__setitem__(0, {"Type": "bind", "Source": _guard_source(s), "Target": "/home/jupyter/permanent"}),
                          "not allowed"),
    "guard-volume-of-root": (lambda s: _container(s)["Mounts"].__setitem__(0, volume(DEPLOYMENT, "/", "/home/jupyter/permanent")), "not a directory this"),
    "guard-volume-of-the-docker-socket": (lambda s: _container(s)["Mounts"].__setitem__(0, volume(DEPLOYMENT, "/var/run/docker.sock", "/home/jupyter/permanent")),
                                          "not a directory this"),
    "guard-volume-escaping": (lambda s: _container(s)["Mounts"].__setitem__(0, volume(DEPLOYMENT, _guard_source(s) + "/../../../../../etc", "/home/jupyter/permanent")),
                              "clean absolute path"),
    "guard-volume-named-for-another-source": (lambda s: _guard_options(s).update(source=_guard_source(s).replace("jdoe", "bob")), "named for its source"),
    "guard-volume-mounted-elsewhere": (_set(f"{MOUNT}.Target", "/etc"), "is not where"),
    "guard-volume-copying-image-files": (_set(f"{MOUNT}.VolumeOptions.NoCopy", False), "NoCopy"),
    "guard-volume-more-options": (lambda s: _guard_options(s).update(o="bind"), "exactly"),
    "read-only-made-writable": (lambda s: _container(s)["Mounts"].__setitem__(0, volume(DEPLOYMENT, str(Path(_guard_source(s)).parents[2] / "shared"),
                                                                                        "/home/jupyter/shared", read_only=False)), "ReadOnly must be true"),
    "bind-propagation": (_set(f"{MOUNT}.BindOptions", {"Propagation": "rshared"}), "BindOptions"),
    "volume-binding-a-host-path": (_set(MOUNT, {"Type": "volume", "Source": "pxtest-evil", "Target": "/host", "VolumeOptions": {
        "DriverConfig": {"Name": "local", "Options": {"type": "none", "o": "bind", "device": "/"}}}}), "no other volume driver"),
    "nfs-volume": (_set(MOUNT, {"Type": "volume", "Source": "pxtest-nfs", "Target": "/x", "VolumeOptions": {
        "DriverConfig": {"Name": "local", "Options": {"type": "nfs", "o": "addr=10.9.9.9,rw", "device": ":/x"}}}}), "no other volume driver"),
    "existing-volume": (_set(MOUNT, {"Type": "volume", "Source": "pxtest-existing", "Target": "/x"}), "VolumeOptions must be an object"),
    "tmpfs": (_set(MOUNT, {"Type": "tmpfs", "Target": "/home/jupyter/permanent"}), "not allowed"),
    # the network guard firewalls only the containers its label names (with this deployment's value)
    "no-guard-label": (_set("task_template.ContainerSpec.Labels", {"deployer.user": "jdoe"}), "deployer.notebook=pxtest"),
    "another-deployments-guard-label": (_set("task_template.ContainerSpec.Labels", {"deployer.notebook": "other"}), "deployer.notebook=pxtest"),
    # keys the engine reads differently: Go matches them case-insensitively, with Unicode folding, the last one winning
    "folded-null-constraints": (lambda s: s["task_template"]["Placement"].update({"Con\u017ftraints": None}), "same field"),
    "folded-null-capability-drop": (lambda s: _container(s).update({"CapabilityDrop": ["ALL"], "capabilitydrop": None}), "same field"),
    # (a key beside the body's own; docker-py drops top-level nulls, so an empty object: the engine would keep the last)
    "kelvin-task-template": (lambda s: s.update(top={"Tas\u212aTemplate": {}}), "same field"),
    "folded-user": (lambda s: _container(s).update({"U\u017fer": _container(s).pop("User")}), "not spelled as the field User"),
    "folded-read-only-in-a-mount": (lambda s: _container(s)["Mounts"][0].update({"readonly": None}), "same field"),
    # who it runs as, where, how much
    "no-user": (lambda s: _container(s).pop("User"), "uid:gid"),
    "uid-below-the-floor": (_set("task_template.ContainerSpec.User", "999:6001"), "floors"),
    "gid-below-the-floor": (_set("task_template.ContainerSpec.User", "5001:99"), "floors"),
    "the-docker-group": (_set("task_template.ContainerSpec.User", f"5001:{DOCKER_GID}"), "refused"),
    "supplementary-groups": (_set("task_template.ContainerSpec.Groups", [str(DOCKER_GID)]), "Groups"),
    "another-deployments-worker": (_set("task_template.Placement.Constraints", [WORKER, "node.hostname==their-worker"]), "exactly"),
    "no-memory-limit": (lambda s: s["task_template"]["Resources"]["Limits"].pop("MemoryBytes"), "MemoryBytes must be set"),
    "more-memory-than-any-profile": (_set("task_template.Resources.Limits.MemoryBytes", 2 * 1024**3), "MemoryBytes must be set"),
    "no-pids-limit": (lambda s: s["task_template"]["Resources"]["Limits"].pop("Pids"), "Pids must be set"),
    "restarted-forever": (_set("task_template.RestartPolicy", {"Condition": "any"}), "Condition must be none"),
    "uid-0": (_set("task_template.ContainerSpec.User", "0"), "uid:gid"),
    "root": (_set("task_template.ContainerSpec.User", "root"), "uid:gid"),
    "gid-0": (_set("task_template.ContainerSpec.User", "5001:0"), "root"),
    "uid-00": (_set("task_template.ContainerSpec.User", "00:6001"), "root"),
    "uid-without-group": (_set("task_template.ContainerSpec.User", "5001"), "gid 0"),  # Docker gives it gid 0
    "name": (_set("name", "pxtest-hub"), "Name"),
    "other-network": (_set("task_template.Networks", [{"Target": OTHER_NETWORK}]), "Networks"),
    "other-network-by-id": (lambda s: s["task_template"].update(Networks=[{"Target": _network_id(OTHER_NETWORK)}]), "Networks"),
    "network-alias": (_set("task_template.Networks", [{"Target": NETWORK, "Aliases": ["pxtest-hub"]}]), "Aliases"),
    "published-port": (_set("endpoint_spec", {"Mode": "dnsrr", "Ports": [{"TargetPort": 8888, "PublishedPort": 18888, "PublishMode": "host"}]}), "Ports"),
    "vip": (_set("endpoint_spec", {"Mode": "vip"}), "dnsrr"),
    "global": (_set("mode", {"Global": {}}), "Mode"),
    "replicas": (_set("mode", {"Replicated": {"Replicas": 20}}), "Replicas"),
    "no-worker-constraint": (_set("task_template.Placement.Constraints", ["node.role==manager"]), WORKER),
    "update-config": (_set("update_config", {"Parallelism": 1}), "UpdateConfig"),
    "runtime-plugin": (_set("task_template.Runtime", "plugin"), "Runtime"),
    "log-driver": (_set("task_template.LogDriver", {"Name": "syslog"}), "LogDriver"),
    "config-outside-the-prefix": (lambda s: _container(s).update(Configs=[{"ConfigID": _config_id(OTHER_CONFIG), "ConfigName": OTHER_CONFIG,
                                                                            "File": {"Name": "/x", "UID": "0", "GID": "0", "Mode": 0o444}}]), "ConfigName"),
    "config-id-of-another": (lambda s: _container(s).update(Configs=[{"ConfigID": _config_id(OTHER_CONFIG), "ConfigName": CA_CONFIG,
                                                                       "File": {"Name": "/x", "UID": "0", "GID": "0", "Mode": 0o444}}]), "is not the config"),
}


@pytest.mark.parametrize("case", list(FORBIDDEN))
def test_a_service_the_spawner_would_never_create_is_refused(case: str, client: docker.APIClient, proxy: Proxy) -> None:
    change, field = FORBIDDEN[case]
    spec = copy.deepcopy(notebook_service(proxy.share, f"{PREFIX}-bad-{case}"))
    change(spec)
    data = {**proxyspec.body(spec), **spec.get("top", {})}  # the JSON create_service posts
    with pytest.raises(docker.errors.APIError) as refused:
        client._result(client._post_json(client._url("/services/create"), data=data), True)
    assert refused.value.status_code == 403
    assert refused.value.explanation.startswith("deployer docker proxy: POST /v1.41/services/create is not allowed")
    assert field in refused.value.explanation
    assert not service_exists(spec["name"])


def test_a_create_body_over_one_mebibyte_is_refused(proxy: Proxy) -> None:
    spec = notebook_service(proxy.share, f"{PREFIX}-huge")
    spec["task_template"]["ContainerSpec"]["Env"].append("X=" + "x" * (1024 * 1024))
    body = json.dumps({"Name": spec["name"], "TaskTemplate": spec["task_template"], "EndpointSpec": spec["endpoint_spec"]}).encode()
    status, _ = raw(proxy, b"POST /v1.41/services/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\n"
                           b"Content-Length: %d\r\n\r\n" % len(body) + body)
    assert status == 413
    assert not service_exists(spec["name"])


@pytest.mark.parametrize("version", ["1.40", "1.24", "1.12", "1.041", "1.41.0", "1.42"])
def test_a_create_in_another_api_version_is_refused(version: str, client: docker.APIClient, proxy: Proxy) -> None:
    """The engine drops CapabilityDrop, CapabilityAdd, Ulimits and Pids of a spec sent as an older version (1.041
    and 1.41.0 are 1.41 to the engine, but not one spelling a check could trust); the proxy reads only 1.41."""
    spec = notebook_service(proxy.share, f"{PREFIX}-v{version.replace('.', '-')}")
    with pytest.raises(docker.errors.APIError) as refused:
        client._result(client._post_json(f"http+docker://localhost/v{version}/services/create", data=proxyspec.body(spec)), True)
    assert refused.value.status_code == 403 and "version" in refused.value.explanation
    assert not service_exists(spec["name"])
    # ...and without a version the engine would read it as its newest: refused too (only /_ping and /version are not)
    status, _ = raw(proxy, b"POST /services/create HTTP/1.1\r\nHost: d\r\nContent-Length: 2\r\n\r\n{}")
    assert status == 403


def test_the_proxy_tells_clients_no_newer_version_than_it_reads(client: docker.APIClient) -> None:
    assert client.version()["ApiVersion"] == "1.41" == client._version


def _task_error(client: docker.APIClient, name: str) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        tasks = client.tasks(filters={"service": name})
        if tasks and tasks[0]["Status"]["State"] in ("rejected", "failed", "running"):
            return tasks[0]["Status"].get("Err") or tasks[0]["Status"]["State"]
        time.sleep(0.3)
    raise AssertionError(f"{name}: no task settled within 60 s: {tasks}")


@pytest.mark.parametrize("link", ["/var/run", "/", "../jdoe"])
def test_a_link_the_hub_planted_in_the_share_is_never_mounted(link: str, client: docker.APIClient, proxy: Proxy) -> None:
    """A compromised hub writes the share: it plants a link where a user's directory is expected (to the
    directory of the host's Docker socket, to /, to another user's files) and asks for it. The proxy cannot see
    the share, and allows the volume; the mount guard on the worker opens the source without following
    links, so the task fails with its reason and no container ever has the host's socket or root."""
    planted = proxy.share / "data" / "sim" / "mallory"
    planted.symlink_to(link)
    name = f"{PREFIX}-planted-{abs(hash(link)) % 1000}"
    spec = notebook_service(proxy.share, name, mounts=[volume(DEPLOYMENT, str(planted), "/home/jupyter/permanent")])
    try:
        client.create_service(**spec)
        error = _task_error(client, name)
        assert f"{mountguard.REFUSED} {planted}: {planted} is a symbolic link" in error, error
        for container in docker_cli("ps", "-aq", "--filter", f"label=com.docker.swarm.service.name={name}").split():  # created, never started
            assert docker_cli("inspect", "--type", "container", container, "--format", "{{.State.StartedAt}}").startswith("0001-01-01"), container
    finally:
        if service_exists(name):
            client.remove_service(name)
        planted.unlink()


def test_a_read_only_mount_is_read_only_in_the_container(client: docker.APIClient, proxy: Proxy) -> None:
    name = f"{PREFIX}-readonly"
    shared = volume(DEPLOYMENT, str(proxy.share / "shared"), "/home/jupyter/shared", read_only=True)
    spec = notebook_service(proxy.share, name, mounts=[shared])
    spec["task_template"]["ContainerSpec"]["Args"] = ["sh", "-c", "touch /home/jupyter/shared/x 2>&1; sleep 300"]
    client.create_service(**spec)
    try:
        wait_for_task(client, name)
        container = docker_cli("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={name}")
        deadline = time.monotonic() + 30
        while "Read-only file system" not in docker_cli("logs", container, check=False) + subprocess.run(
                ["docker", "logs", container], capture_output=True, text=True).stderr:
            assert time.monotonic() < deadline, "the write to the read-only mount did not fail"
            time.sleep(0.3)
        assert not (proxy.share / "shared" / "x").exists()
    finally:
        client.remove_service(name)


ENDPOINTS: dict[str, Callable[[docker.APIClient], Any]] = {
    "containers-create": lambda c: c.create_container(IMAGE, "true"),
    "containers-list": lambda c: c.containers(),
    "exec-create": lambda c: c.exec_create("pxtest-any", "id"),
    "exec-start": lambda c: c.exec_start("0123456789abcdef"),
    "attach": lambda c: c.attach("pxtest-any"),
    "images-create": lambda c: c.pull("busybox", tag="latest"),
    "images-list": lambda c: c.images(),
    # docker-py streams these without checking the status: asked for the way its other calls are
    "build": lambda c: c._result(c._post(c._url("/build"), data=io.BytesIO(b"FROM scratch\n"))),
    "volumes-create": lambda c: c.create_volume("pxtest-vol"),
    "networks-create": lambda c: c.create_network("pxtest-evil", driver="overlay"),
    "networks-list": lambda c: c.networks(),
    "network-inspect": lambda c: c.inspect_network(NETWORK),
    "secrets": lambda c: c.secrets(),
    "secret-create": lambda c: c.create_secret("pxtest-s", b"x"),
    "swarm": lambda c: c.inspect_swarm(),
    "swarm-join-token": lambda c: c.update_swarm(version=1, rotate_worker_token=True),
    "plugins": lambda c: c.plugins(),
    "system-df": lambda c: c.df(),
    "info": lambda c: c.info(),
    "events": lambda c: c._result(c._get(c._url("/events"))),
    "service-logs": lambda c: c._result(c._get(c._url("/services/{0}/logs", f"{PREFIX}-x"), params={"stdout": 1})),
    "service-update": lambda c: c._result(c._post_json(c._url("/services/{0}/update", f"{PREFIX}-x"), data={})),
    "services-unfiltered": lambda c: c.services(),
    "services-of-others": lambda c: c.services(filters={"name": "pxtest-"}),
    "tasks-unfiltered": lambda c: c.tasks(),
    "tasks-of-others": lambda c: c.tasks(filters={"service": OUTSIDER}),
    "tasks-of-ours-and-others": lambda c: c.tasks(filters={"service": [f"{PREFIX}-x", OUTSIDER]}),
    "inspect-outsider": lambda c: c.inspect_service(OUTSIDER),
    "inspect-outsider-by-id": lambda c: c.inspect_service(docker_cli("service", "inspect", OUTSIDER, "--format", "{{.ID}}")),
    "remove-outsider": lambda c: c.remove_service(docker_cli("service", "inspect", OUTSIDER, "--format", "{{.ID}}")),
    "remove-outsider-by-name": lambda c: c.remove_service(OUTSIDER),
    "config-outside-the-prefix": lambda c: c.inspect_config(OTHER_CONFIG),
    "configs-list": lambda c: c.configs(),
    "secret-outside-the-prefix": lambda c: c.inspect_secret(OTHER_SECRET),
}


@pytest.mark.parametrize("case", list(ENDPOINTS))
def test_everything_else_is_refused(case: str, client: docker.APIClient) -> None:
    with pytest.raises(docker.errors.APIError) as refused:
        ENDPOINTS[case](client)
    assert refused.value.status_code == 403
    assert "deployer docker proxy" in (refused.value.explanation or "")
    assert service_exists(OUTSIDER)


def test_what_the_spawner_reads_of_its_own_deployment_is_allowed(client: docker.APIClient) -> None:
    assert client.inspect_config(CA_CONFIG)["Spec"]["Name"] == CA_CONFIG
    found = client.inspect_secret(NB_SECRET)  # (its metadata: the engine never answers with a secret's value)
    assert found["Spec"]["Name"] == NB_SECRET and "Data" not in found["Spec"]
    with pytest.raises(docker.errors.NotFound):  # a missing config is the engine's 404 (the spawner explains it)
        client.inspect_config(f"{CA_CONFIG}-missing")
    with pytest.raises(docker.errors.NotFound):  # the engine's answer for a service that is gone, passed on
        client.tasks(filters={"service": f"{PREFIX}-nobody", "desired-state": "running"})
    node = docker_cli("info", "--format", "{{.Swarm.NodeID}}")
    assert client.inspect_node(node)["ID"] == node
    assert node in [n["ID"] for n in client.nodes()]  # (where the GPUs are: deployer_hub.gpus)


# --- HTTP as it comes -----------------------------------------------------------------------


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=30)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(self.path)


def raw(proxy: Proxy, data: bytes) -> tuple[int, bytes]:
    """Send bytes as they are; the status and everything the proxy answered before closing."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(proxy.socket)
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)  # a request cut short ends here, not at the proxy's timeout
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before all of it was read
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1]), answer


def ping(proxy: Proxy) -> bool:
    with proxy.client() as c:
        return c.ping()


@pytest.mark.parametrize("request_bytes, status", [
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET /_ping\r\n\r\n", 400),
    (b"GET http://evil/_ping HTTP/1.1\r\nHost: d\r\n\r\n", 400),
    (b"GET /_ping HTTP/2.0\r\nHost: d\r\n\r\n", 400),
    (b"GET /_ping HTTP/1.1\r\nno colon here\r\n\r\n", 400),
    (b"GET /_ping HTTP/1.1\r\nHost: d\r\nX: " + b"a" * 20000 + b"\r\n\r\n", 431),
    (b"POST /v1.41/services/create HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"POST /v1.41/services/create HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
    (b"POST /v1.41/services/create HTTP/1.1\r\nContent-Length: 10\r\n\r\nshort", 400),
    (b"GET /_ping HTTP/1.1\r\nUser-Agent: x\nTransfer-Encoding: chunked\r\n\r\n", 400),  # a header smuggled in with a bare LF
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),
])
def test_malformed_http_is_answered_400_and_the_proxy_keeps_serving(request_bytes: bytes, status: int, proxy: Proxy) -> None:
    assert raw(proxy, request_bytes)[0] == status
    assert ping(proxy)


def test_upgrades_are_refused_even_on_an_allowed_endpoint(proxy: Proxy) -> None:
    status, answer = raw(proxy, b"GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nConnection: close\r\n\r\n")
    assert status == 403 and b"upgrade" in answer


def test_one_connection_serves_many_requests(proxy: Proxy) -> None:
    conn = UnixHTTPConnection(proxy.socket)
    first = None
    services = quote(json.dumps({"name": [PREFIX]}))
    tasks = quote(json.dumps({"service": [f"{PREFIX}-nobody"]}))
    for path, status in (("/_ping", 200), (f"/v1.41/services?filters={services}", 200), ("/v1.41/containers/json", 403),
                         ("/version", 200), (f"/v1.41/tasks?filters={tasks}", 404), ("/v1.41/_ping", 200)):
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        assert response.status == status, (path, body)
        first = first or conn.sock
        assert conn.sock is first  # still the same connection: refusals and the engine's errors keep it open
    conn.close()


def test_many_concurrent_clients(proxy: Proxy) -> None:
    def work(_: int) -> int:
        with proxy.client() as c:
            for _ in range(10):
                c.services(filters={"name": PREFIX})
                c.inspect_config(CA_CONFIG)
        return 1

    with ThreadPoolExecutor(24) as pool:
        assert sum(pool.map(work, range(24))) == 24  # an error in any of them is raised here
    assert proxy.process.poll() is None


def test_the_proxy_costs_next_to_nothing(proxy: Proxy) -> None:
    """Median of 50 `GET /services?filters=` (what every poll does, with `GET /tasks`) direct and through the proxy."""
    def median_ms(client: docker.APIClient) -> float:
        with client:
            client.services(filters={"name": PREFIX})  # connection and version lookup out of the way
            times = []
            for _ in range(50):
                start = time.perf_counter()
                client.services(filters={"name": PREFIX})
                times.append((time.perf_counter() - start) * 1000)
        return statistics.median(times)

    direct, proxied = median_ms(docker.APIClient(version="auto")), median_ms(proxy.client())
    print(f"\nGET /services?filters= median of 50: direct {direct:.2f} ms, through the proxy {proxied:.2f} ms (+{proxied - direct:.2f} ms)")
    assert proxied - direct < 20


# --- starting it ----------------------------------------------------------------------------


def test_the_policy_comes_from_the_file_else_the_environment_and_a_stale_socket_is_replaced(tmp_path: Path) -> None:
    policy = {"service_prefix": PREFIX, "images": [IMAGE], "network": NETWORK, "constraints": [WORKER]}
    in_file, in_env = str(tmp_path / "file.sock"), str(tmp_path / "env.sock")
    (tmp_path / "policy.json").write_text(json.dumps({**policy, "listen": in_file}))
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(in_env)  # what a killed proxy leaves
    stale.close()
    log = tmp_path / "proxy.log"
    for policy_file, listen in ((None, in_env), (tmp_path / "policy.json", in_file)):
        process = start_proxy(log, listen, policy_file, env_policy={**policy, "listen": in_env})
        assert oct(os.stat(listen).st_mode & 0o777) == "0o600"
        with docker.APIClient(base_url=f"unix://{listen}", version="auto") as c:
            assert c.ping()
        stop_proxy(process, listen)
    assert not os.path.exists(in_env)  # the file won: the environment's socket was never made again


GOOD = {"service_prefix": PREFIX, "images": [IMAGE], "network": NETWORK, "constraints": [WORKER]}
RULE = {"source": "/srv/x/[a-z]+", "target": "/home/jupyter/x", "anchor": "/srv/x"}


@pytest.mark.parametrize("policy, error", [
    (None, "no policy"),
    ({**GOOD, "service_prefix": "nb"}, "service_prefix"),
    ({**GOOD, "mounts": [RULE]}, "mount_driver"),
    ({**GOOD, "deployment": "pxtest", "mount_driver": "pxtest-mounts", "mounts": [{**RULE, "anchor": "/"}]}, "anchor"),
    ({**GOOD, "deployment": "pxtest", "mount_driver": "pxtest-mounts", "mounts": [{**RULE, "anchor": "/srv/x/../.."}]}, "anchor"),
    ({**GOOD, "deployment": "pxtest", "mount_driver": "pxtest-mounts", "mounts": [{**RULE, "source": "/srv/x/("}]}, "regular expression"),
    ({**GOOD, "constraints": []}, "constraints are required"),
    ({**GOOD, "min_uid": 0}, "never root"),
    ({**GOOD, "listen_mode": "0666"}, "listen_mode"),
    ({**GOOD, "images": []}, "required"),
    ({**GOOD, "upstreams": "x"}, "unknown policy keys"),
    ({**GOOD, "bind_roots": ["/srv"]}, "unknown policy keys"),  # (bind mounts are gone: only the mount guard's volumes)
])
def test_a_policy_that_would_not_hold_is_refused_at_start(policy: dict | None, error: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "hub" / "src")}
    env.pop("DEPLOYER_DOCKER_PROXY_POLICY", None)
    if policy is not None:
        env["DEPLOYER_DOCKER_PROXY_POLICY"] = json.dumps(policy)
    result = subprocess.run([sys.executable, "-m", "deployer_hub.dockerproxy"], check=False, capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode == 2 and error in result.stderr
