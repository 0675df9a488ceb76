"""The hosts of a deployment: facts read from each, then only the commands that change something.

``gather`` reads facts over each host's executor (in parallel); ``plan`` is pure: facts in,
per-host commands out, each with the reason it is needed, and the problems that must be
fixed before anything changes (a static mount path missing on a worker, a port taken).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from .commands import Command, cmd
from .errors import Problem
from .executor import Result
from .hubsettings import Layout
from .loader import Deployment
from .model import Host

SWARM_PORTS = (2377, 7946)  # TCP; 7946 and 4789 (overlay) are UDP too


class Executor(Protocol):
    host: str

    def run(self, command: Command, *, check: bool = True, timeout: float = 600) -> Result: ...


@dataclass
class HostFacts:
    docker: str | None = None  # server version, None when no engine answers
    swarm_state: str = "inactive"  # LocalNodeState
    node_id: str = ""
    manager: bool = False
    hostname: str = ""
    images: dict[str, bool] = field(default_factory=dict)
    paths: dict[str, bool] = field(default_factory=dict)
    listening: set[int] = field(default_factory=set)


def static_paths(deployment: Deployment) -> list[str]:
    """Host paths of volume_mounts without template variables: they must exist on every worker."""
    return sorted({m.host_path for m in deployment.config.volume_mounts if "{" not in m.host_path})


def gather_one(host: Host, ex: Executor, deployment: Deployment) -> HostFacts:
    facts = HostFacts()
    info = ex.run(cmd("docker", "info", "--format", "{{json .}}"), check=False)
    if info.code == 0:
        data = json.loads(info.stdout)
        facts.docker = data.get("ServerVersion")
        swarm = data.get("Swarm") or {}
        facts.swarm_state = swarm.get("LocalNodeState", "inactive")
        facts.node_id = swarm.get("NodeID", "")
        facts.manager = bool(swarm.get("ControlAvailable"))
        facts.hostname = data.get("Name", "")
        images = [deployment.config.jupyterhub_image] if host.has("hub") else []
        images += [deployment.config.jupyter_user_image] if host.has("worker") else []
        for image in images:
            facts.images[image] = ex.run(cmd("docker", "image", "inspect", "--format", "{{.Id}}", image), check=False).code == 0
    if host.has("worker"):
        for path in static_paths(deployment):
            facts.paths[path] = ex.run(cmd("test", "-d", path), check=False).code == 0
    if host.has("hub"):
        ss = ex.run(cmd("ss", "-Htln"), check=False)
        for line in ss.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 4 and parts[3].rsplit(":", 1)[-1].isdigit():
                facts.listening.add(int(parts[3].rsplit(":", 1)[-1]))
    return facts


def gather(deployment: Deployment, executors: dict[str, Executor]) -> dict[str, HostFacts]:
    """Facts of every host, read in parallel; a host that cannot be reached raises ConnectError."""
    with ThreadPoolExecutor(max(1, len(deployment.hosts))) as pool:
        futures = {h.host_id: pool.submit(gather_one, h, executors[h.host_id], deployment) for h in deployment.hosts}
        return {host_id: future.result() for host_id, future in futures.items()}


@dataclass
class Plan:
    commands: dict[str, list[Command]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    notes: dict[str, list[str]] = field(default_factory=dict)  # host -> what is already right

    def add(self, host: str, command: Command) -> None:
        self.commands.setdefault(host, []).append(command)

    def ok(self, host: str, note: str) -> None:
        self.notes.setdefault(host, []).append(note)


def plan(deployment: Deployment, facts: dict[str, HostFacts], layout: Layout) -> Plan:
    result = Plan()
    hub = deployment.hub
    hub_facts = facts[hub.host_id]
    source = deployment.files.name(deployment.files.servers) if deployment.files.servers else "servers"
    for host in deployment.hosts:
        f = facts[host.host_id]
        if f.docker is None:
            result.add(host.host_id, cmd("sh", "-c", "command -v dockerd || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y docker.io)",
                                         why="no Docker engine answers"))
        else:
            result.ok(host.host_id, f"Docker {f.docker}")
        for path, present in f.paths.items():
            if not present:
                result.problems.append(Problem(source, f"{deployment.target}/{host.host_id}",
                                               f"static mount path {path} does not exist on worker {host.host_id} ({host.ssh_host}); "
                                               "create it (or mount the file system providing it) on every worker"))
    for port in (80, 443):
        if port in hub_facts.listening and hub_facts.swarm_state != "active":
            result.problems.append(Problem(source, f"{deployment.target}/{hub.host_id}",
                                           f"port {port} on the hub {hub.host_id} is already in use by another program; the hub needs 80 and 443"))
    if hub_facts.swarm_state == "active" and hub_facts.manager:
        result.ok(hub.host_id, f"swarm manager already ({hub_facts.node_id[:12]})")
    else:
        result.add(hub.host_id, cmd("docker", "swarm", "init", "--advertise-addr", hub.address, why="initialise the swarm on the hub"))
    for host in deployment.workers:
        if host.host_id == hub.host_id:
            continue
        if facts[host.host_id].swarm_state == "active":
            result.ok(host.host_id, "in the swarm already")
        else:
            # The join token is read on the hub when the plan is carried out; it is not shown here.
            result.add(host.host_id, cmd("docker", "swarm", "join", "--advertise-addr", host.address, "--token", "<worker token>",
                                         f"{hub.address}:2377", why="join the swarm as a worker"))
    for host in deployment.hosts:
        for image, present in facts[host.host_id].images.items():
            if present:
                result.ok(host.host_id, f"image {image} present")
            else:
                result.add(host.host_id, cmd("docker", "load", why=f"send image {image} from this machine (docker save | ssh docker load)"))
    return result
