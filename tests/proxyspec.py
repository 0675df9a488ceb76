"""A notebook service as TenantSwarmSpawner.create_object asks for it (docker-py's types, so the JSON is the
one the hub sends), and a Docker proxy policy that allows exactly it: shared by the pure policy tests (unit)
and the proxy's tests against the real engine (swarm)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from deployer_hub import mountguard
from deployer_hub.mounts import pattern
from docker.types import ContainerSpec, DriverConfig, EndpointSpec, Mount, Placement, Resources, RestartPolicy, TaskTemplate

IMAGE = "deployer/jupyteruser:0.2.0"
UID, GID = 5001, 6001


def policy(deployment: str, share: str, *, network: str, constraint: str, **changes: Any) -> dict:
    """The proxy's policy JSON for a deployment whose users' directories are ``share``/data/sim/{username}."""
    rules = [mountguard.Rule(pattern(f"{share}/data/{{tenant_id}}/{{username}}/{{servername}}", {"tenant_id": "sim"}),
                             pattern("/home/jupyter/permanent"), share),
             mountguard.Rule(pattern(f"{share}/shared"), pattern("/home/jupyter/shared"), share, read_only=True)]
    return {"service_prefix": f"{deployment}-nb-", "deployment": deployment, "images": [IMAGE], "network": network,
            "mount_driver": mountguard.driver_name(deployment), "mounts": [r.to_dict() for r in rules],
            "constraints": [constraint], "guard_label": deployment, "min_uid": 1000, "min_gid": 100,
            "memory_limit": 1024**3, "pids_limit": 4096, **changes}


def volume(deployment: str, source: str, target: str, read_only: bool = False) -> Mount:
    """A mount as the spawner makes it: a volume of the deployment's mount guard, named for its source."""
    return Mount(target=target, source=mountguard.volume_name(deployment, source), type="volume", read_only=read_only, no_copy=True,
                 driver_config=DriverConfig(mountguard.driver_name(deployment), {mountguard.SOURCE_OPTION: source}))


def notebook_service(deployment: str, share: str, *, network: str, constraint: str, name: str = "", user: str = "jdoe",
                     mounts: list[Mount] | None = None, args: list[str] | None = None) -> dict[str, Any]:
    """create_service's keyword arguments, as TenantSwarmSpawner.create_object builds them."""
    if mounts is None:
        mounts = [volume(deployment, f"{share}/data/sim/{user}", "/home/jupyter/permanent")]
    container = ContainerSpec(image=IMAGE, env={"HOME": "/home/jupyter", "JUPYTERHUB_API_TOKEN": "s3cr3t-in-env"}, args=args or ["sleep", "300"],
                              mounts=mounts, user=f"{UID}:{GID}", cap_drop=["ALL"], labels={"deployer.notebook": deployment})
    resources = Resources(mem_limit=256 * 1024**2)  # the spawner's mem_limit trait gives bytes
    resources.setdefault("Limits", {})["Pids"] = 4096
    task = TaskTemplate(container_spec=container, resources=resources, networks=[network], placement=Placement(constraints=[constraint]),
                        restart_policy=RestartPolicy(condition="none"))
    return {"task_template": task, "endpoint_spec": EndpointSpec(mode="dnsrr"), "name": name or f"{deployment}-nb-{user}",
            "labels": {"deployer.user": user, "deployer.tenant": "sim"}}


def body(service: dict[str, Any]) -> dict:
    """The JSON docker-py's create_service posts for these arguments (APIClient.create_service's ``data``)."""
    data = {"Name": service["name"], "Labels": service.get("labels"), "TaskTemplate": service["task_template"],
            "Mode": service.get("mode"), "Networks": None, "EndpointSpec": service["endpoint_spec"]}
    if service.get("update_config") is not None:
        data["UpdateConfig"] = service["update_config"]
    return json.loads(json.dumps(data))


def start_mount_guard(policy_json: str, log_path: str) -> subprocess.Popen:
    """The mount guard as a process on this machine (already in the engine's mount namespace), once the swarm
    lists its driver on this node: the scheduler places a task that needs it only on nodes that have it."""
    root = Path(__file__).resolve().parents[1]
    deployment = json.loads(policy_json)["deployment"]
    env = {**os.environ, mountguard.POLICY_ENV: policy_json, "DEPLOYER_MOUNTGUARD_NAMESPACE": "none"}
    with open(log_path, "ab") as log:
        process = subprocess.Popen([sys.executable, str(root / "hub" / "src" / "deployer_hub" / "mountguard.py")], stdout=log, stderr=log, env=env)
    node = subprocess.run(["docker", "info", "--format", "{{.Swarm.NodeID}}"], capture_output=True, text=True, check=True).stdout.strip()
    deadline = time.monotonic() + 60
    while f'"{mountguard.driver_name(deployment)}"' not in subprocess.run(
            ["docker", "node", "inspect", node, "--format", "{{json .Description.Engine.Plugins}}"], capture_output=True, text=True).stdout:
        assert process.poll() is None and time.monotonic() < deadline, Path(log_path).read_text()
        time.sleep(0.2)
    return process


def stop_mount_guard(process: subprocess.Popen, deployment: str) -> None:
    driver = mountguard.driver_name(deployment)
    volumes = subprocess.run(["docker", "volume", "ls", "-q", "--filter", f"driver={driver}"], capture_output=True, text=True).stdout.split()
    if volumes:
        subprocess.run(["docker", "volume", "rm", *volumes], capture_output=True)
    process.terminate()
    assert process.wait(timeout=30) == 0
