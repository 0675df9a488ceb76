"""The hosts of a deployment: facts read from each, then only the commands that change something.

``gather`` reads facts over each host's executor (in parallel); ``plan`` is pure: facts in,
per-host commands out, each with the reason it is needed, and the problems that must be
fixed before anything changes (a static mount path missing on a worker, a port taken).
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from deployer.config.hubsettings import Layout
from deployer.config.loader import Deployment
from deployer.config.model import Host
from deployer.errors import Problem
from deployer.hosts.commands import Command, cmd, sh
from deployer.hosts.executor import Executor
from deployer.hosts.ssh import ConnectError
from deployer.phases import dockerproxy, images, netguard, sidecars

SWARM_PORTS = (2377, 7946)  # TCP; 7946 and 4789 (overlay) are UDP too

INSTALL_DOCKER = sh(
    "set -e; if ! command -v dockerd >/dev/null; then export DEBIAN_FRONTEND=noninteractive; "
    "apt-get update -q; apt-get install -y -q docker.io; fi\n"
    "if [ -d /run/systemd/system ]; then systemctl enable --now docker; else service docker start; fi\n"
    "for i in $(seq 60); do docker info >/dev/null 2>&1 && exit 0; sleep 1; done; echo 'the Docker engine did not start' >&2; exit 1",
    why="no Docker engine answers: install and start Debian's docker.io")


@dataclass
class HostFacts:
    docker: str | None = None  # server version, None when no engine answers
    swarm_state: str = "inactive"  # LocalNodeState
    node_id: str = ""
    manager: bool = False
    hostname: str = ""
    managers: set[str] = field(default_factory=set)  # addresses of the swarm managers this node knows
    images: dict[str, str | None] = field(default_factory=dict)  # image -> its ID here, None if absent
    paths: dict[str, bool] = field(default_factory=dict)
    listening: set[int] = field(default_factory=set)
    holders: dict[int, set[str]] = field(default_factory=dict)  # listening port -> names of the programs holding it
    guard: tuple[str, bool] | None = None  # the network guard's (spec hash, running), None when absent
    proxy: tuple[str, bool] | None = None  # the hub's Docker proxy's, likewise
    published: dict[int, set[str]] = field(default_factory=dict)  # on a manager: port -> the swarm services publishing it


def static_paths(deployment: Deployment) -> list[str]:
    """Directories every worker must have before any notebook starts: the static part of each host path
    of volume_mounts (``/srv/data`` of ``/srv/data/{username}``; the path itself without variables),
    except below the share, which deploy makes and the workers mount."""
    share = Layout.of(deployment).share_dir
    return sorted({d for m in deployment.config.volume_mounts if not f"{(d := m.static_host_dir)}/".startswith(f"{share}/")})


def wanted_images(deployment: Deployment, host: Host) -> list[str]:
    """The hub gets the hub image, workers the notebook image and the network guard's (never inspected on the hub)."""
    wanted = [deployment.config.jupyterhub_image] if host.has("hub") else []
    return wanted + ([deployment.config.jupyter_user_image, deployment.config.network_guard_image] if host.has("worker") else [])


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
        facts.managers = {m.get("Addr", "").rsplit(":", 1)[0] for m in swarm.get("RemoteManagers") or []}
        for image in wanted_images(deployment, host):
            facts.images[image] = images.image_id(ex, image)
    if host.has("worker"):
        facts.guard = sidecars.current(ex, netguard.container_name(Layout.of(deployment)))
        for path in static_paths(deployment):
            facts.paths[path] = ex.run(cmd("test", "-d", path), check=False).code == 0
    if host.has("hub"):
        facts.proxy = sidecars.current(ex, dockerproxy.container_name(Layout.of(deployment)))
        if facts.manager:
            facts.published = published_ports(ex)
    ss = ex.run(cmd("ss", "-Htlnp"), check=False)  # 80/443 on the hub, 2377/7946 on every host, with their programs
    for line in ss.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[3].rsplit(":", 1)[-1].isdigit():
            port = int(parts[3].rsplit(":", 1)[-1])
            facts.listening.add(port)
            facts.holders.setdefault(port, set()).update(re.findall(r'\(\("([^"]+)"', line))
    return facts


PUBLISHED = sh('ids=$(docker service ls -q); [ -z "$ids" ] || docker service inspect $ids '
               '--format \'{{.Spec.Name}}{{range .Spec.EndpointSpec.Ports}} {{.PublishedPort}}{{end}}\'')


def published_ports(ex: Executor) -> dict[int, set[str]]:
    """Which swarm services publish which ports (read on a manager)."""
    ports: dict[int, set[str]] = {}
    for line in ex.run(PUBLISHED, check=False).stdout.splitlines():
        name, *numbers = line.split()
        for number in numbers:
            if number.isdigit():
                ports.setdefault(int(number), set()).add(name)
    return ports


def gather(deployment: Deployment, executors: dict[str, Executor]) -> dict[str, HostFacts]:
    """Facts of every host, read in parallel. Every host that cannot be reached is named (one ConnectError
    with a line per host), not only the first one tried."""
    with ThreadPoolExecutor(max(1, len(deployment.hosts))) as pool:
        futures = {h.host_id: pool.submit(gather_one, h, executors[h.host_id], deployment) for h in deployment.hosts}
        facts, unreachable = {}, []
        for host_id, future in futures.items():
            try:
                facts[host_id] = future.result()
            except ConnectError as exc:
                unreachable.append(str(exc))
        if unreachable:
            raise ConnectError("\n".join(unreachable))
        return facts


@dataclass
class Plan:
    commands: dict[str, list[Command]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    notes: dict[str, list[str]] = field(default_factory=dict)  # host -> what is already right

    def add(self, host: str, command: Command) -> None:
        self.commands.setdefault(host, []).append(command)

    def ok(self, host: str, note: str) -> None:
        self.notes.setdefault(host, []).append(note)


def problems(deployment: Deployment, facts: dict[str, HostFacts], ports: tuple[int, int] = (443, 80)) -> list[Problem]:
    """What must be fixed before anything changes; each names the host and how to fix it."""
    found: list[Problem] = []
    hub = deployment.hub
    hub_facts = facts[hub.host_id]

    def problem(host, text: str) -> None:
        found.append(Problem(f"preflight on {host.host_id}", "", text))

    for host in deployment.hosts:
        f = facts[host.host_id]
        for path, present in f.paths.items():
            if not present:
                problem(host, f"static mount path {path} does not exist on worker {host.host_id} ({host.ssh_host}); "
                              "create it (or mount the file system providing it) on every worker")
        if f.swarm_state != "active":
            for port in SWARM_PORTS:
                # dockerd itself may hold 7946 for a moment after leaving a swarm: not another program.
                if port in f.listening and f.holders.get(port) != {"dockerd"}:
                    problem(host, f"port {port} on {host.host_id} is in use by another program; Docker Swarm needs 2377 and 7946 (TCP and UDP) and 4789 (UDP)")
    hub_service = Layout.of(deployment).hub_service
    published = hub_facts.published if hub_facts.swarm_state == "active" else {}
    for port in ports:
        others = published.get(port, set()) - {hub_service}
        if others:
            problem(hub, f"port {port} on the hub {hub.host_id} is published by the swarm service {', '.join(sorted(others))}; "
                         f"the hub needs {ports[0]} and {ports[1]}: remove that service (or its deployment: deployer destroy)")
        elif port in hub_facts.listening and hub_service not in published.get(port, set()):
            holders = ", ".join(sorted(hub_facts.holders.get(port, set()))) or "another program"
            problem(hub, f"port {port} on the hub {hub.host_id} is already in use by {holders}; the hub needs {ports[0]} and {ports[1]}")
    if hub_facts.swarm_state == "active" and not hub_facts.manager:
        problem(hub, f"the hub {hub.host_id} is a worker of another swarm (managers: {', '.join(sorted(hub_facts.managers))}); "
                     "run `docker swarm leave` on it, or make that swarm's manager the hub")
    for host in deployment.hosts:
        f = facts[host.host_id]
        if host.host_id == hub.host_id or f.swarm_state != "active":
            continue
        if f.manager:
            problem(host, f"{host.host_id} is a manager of a swarm; only the hub may be a manager: run `docker swarm leave --force` on it")
        elif hub_facts.swarm_state == "active" and not (f.managers & hub_facts.managers):
            problem(host, f"{host.host_id} is in another swarm (managers: {', '.join(sorted(f.managers))}); run `docker swarm leave` on it")
    return found


def plan(deployment: Deployment, facts: dict[str, HostFacts], layout: Layout, local_images: dict[str, str | None] | None = None) -> Plan:
    local_images = local_images or {}
    result = Plan()
    hub = deployment.hub
    hub_facts = facts[hub.host_id]
    for host in deployment.hosts:
        f = facts[host.host_id]
        if f.docker is None:
            result.add(host.host_id, INSTALL_DOCKER)
        else:
            result.ok(host.host_id, f"Docker {f.docker}")
    result.problems = problems(deployment, facts)
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
        for image, remote in facts[host.host_id].images.items():
            local = local_images.get(image)
            if not images.needs(local, remote):
                result.ok(host.host_id, f"image {image} present")
            elif local is None:
                result.add(host.host_id, cmd("docker", "pull", image, why=f"pull image {image} (not on this machine)"))
            else:
                result.add(host.host_id, cmd("docker", "load", why=f"send image {image} from this machine (docker save | ssh docker load)"))
    def sidecar(host_id: str, image: str, build, current: tuple[str, bool] | None, running: str) -> None:
        # The image ID the host will have: ours when deploy sends it, else the host's own.
        image_id = local_images.get(image) or facts[host_id].images.get(image) or ""
        commands = sidecars.commands(build(deployment, layout, image_id), current)
        for command in commands:
            result.add(host_id, command)
        if not commands:
            result.ok(host_id, running)

    for host in deployment.workers:
        sidecar(host.host_id, deployment.config.network_guard_image, netguard.sidecar, facts[host.host_id].guard, "network guard running")
    sidecar(hub.host_id, deployment.config.jupyterhub_image, dockerproxy.sidecar, hub_facts.proxy, "Docker proxy running")
    return result
