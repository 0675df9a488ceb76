"""What is on each host, read before anything is planned (and again after a phase changed it).

Reading changes nothing. Every planner decides from these facts alone, so ``plan`` and
``deploy`` decide alike. Facts that hold secrets (the hub's kept state, the swarm's join token)
are never shown: they are excluded from the dataclass's repr.
"""

from __future__ import annotations

import base64
import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from deployer.config.hubsettings import Layout
from deployer.config.loader import Deployment
from deployer.config.model import Host
from deployer.hosts import layers
from deployer.hosts.commands import cmd, sh
from deployer.hosts.executor import Executor
from deployer.hosts.ssh import ConnectError
from deployer.phases import dockerproxy, gpus, hubrelay, images, mountguard, netguard, nfs, sidecars
from deployer.phases.hubservice import SwarmFacts

#: The hub's kept state (below ``<state_root>/<name>/state`` on the hub): generated once, kept across deploys.
STATE_FILES = ("cookie_secret", "crypt_key", "name_key", "tls/cert.pem", "tls/key.pem", "workers.json")


@dataclass
class HostFacts:
    docker: str | None = None  # server version, None when no engine answers
    swarm_state: str = "inactive"  # LocalNodeState
    node_id: str = ""
    manager: bool = False
    hostname: str = ""
    managers: set[str] = field(default_factory=set)  # addresses of the swarm managers this node knows
    addresses: set[str] = field(default_factory=set)  # every IPv4 address of the host but loopback's and Docker's bridges'
    node_addresses: set[str] = field(default_factory=set)  # on a manager: every swarm node's address (other deployments' too)
    images: dict[str, str | None] = field(default_factory=dict)  # image -> its ID here, None if absent
    layers: set[str] = field(default_factory=set)  # chain IDs of every layer of every image here (what a send can skip)
    paths: dict[str, bool] = field(default_factory=dict)
    listening: set[int] = field(default_factory=set)
    holders: dict[int, set[str]] = field(default_factory=dict)  # listening port -> names of the programs holding it
    guard: tuple[str, bool] | None = None  # the network guard's (spec hash, running), None when absent
    mount_guard: tuple[str, bool] | None = None  # the mount guard's, likewise
    socket_gids: set[int] = field(default_factory=set)  # groups that own a group-writable socket here (docker's): never a notebook's
    proxy: tuple[str, bool] | None = None  # the hub's Docker proxy's, likewise
    relay: tuple[str, bool] | None = None  # the hub API's relay's, likewise
    published: dict[int, set[str]] = field(default_factory=dict)  # on a manager: port -> the swarm services publishing it
    # On the hub (a manager): every node's labels, the join token, the deployment's Docker objects.
    node_labels: dict[str, dict[str, str]] = field(default_factory=dict)
    join_token: str = field(default="", repr=False)
    objects: SwarmFacts | None = None
    # The share: on the hub, the directories deploy makes that are missing, its NFS server, the marker file;
    # on a worker, the marker it sees (equal to the hub's when it sees the share) and whether it has an NFS client.
    missing_dirs: set[str] = field(default_factory=set)
    nfs: nfs.ServerFacts | None = None
    marker: str = ""
    nfs_client: bool = False
    state: dict[str, str | None] = field(default_factory=dict, repr=False)  # the hub's kept state, by STATE_FILES name
    # GPUs: /etc/docker/daemon.json as it is (None: no file; it may hold credentials), and the NVIDIA-GPU
    # generic resources the running engine declares (sorted).
    daemon_json: str | None = field(default=None, repr=False)
    engine_gpus: tuple[str, ...] = ()
    # The notebook network's neighbours: every Docker network's subnet here (name -> subnet; a manager sees every
    # overlay), the host's own routes, the kernel's neighbour table limits (gc_thresh1..3; shared by every
    # network namespace), and on a manager the swarm's task history limit.
    docker_subnets: dict[str, str] = field(default_factory=dict)
    routes: set[str] = field(default_factory=set)
    neighbour_limits: tuple[int, ...] = ()
    task_history: int | None = None

    @property
    def in_swarm(self) -> bool:
        return self.swarm_state in ("active", "pending")

    @property
    def leads_swarm(self) -> bool:
        return self.swarm_state == "active" and self.manager


def static_paths(deployment: Deployment) -> list[str]:
    """Directories every worker must have before any notebook starts: the static part of each host path
    of volume_mounts (``/srv/data`` of ``/srv/data/{username}``; the path itself without variables),
    except below the share, which deploy makes and the workers mount."""
    share = Layout.of(deployment).share_dir
    return sorted({d for m in deployment.config.volume_mounts if not f"{(d := m.static_host_dir)}/".startswith(f"{share}/")})


def hub_directories(deployment: Deployment, layout: Layout) -> list[tuple[str, str, str]]:
    """(path, mode, why) of every directory deploy makes on the hub: its database, the Docker proxy's
    socket, the share, the token root, and the static part of each mount below the share (per-user
    directories are made by the spawner, owned by the user)."""
    static = sorted({m.static_host_dir for m in deployment.config.volume_mounts if m.static_host_dir.startswith(layout.share_dir)})
    # The share's top is readable (NFS clients list it); the token root is not.
    return ([(layout.data_dir, "0700", "the hub's database directory"),
             (layout.docker_proxy_dir, "0700", "the socket of the hub's Docker proxy"),
             (layout.share_dir, "0755", "the share"),
             (layout.token_root, "0711", "the share's token root")]
            + [(path, "0755", "the static part of the mounts below the share") for path in static])


def state_dir(layout: Layout) -> str:
    return f"{layout.state_root}/{layout.name}/state"


READ_STATE = 'cd "$1" 2>/dev/null || exit 0; shift; for f; do printf "%s " "$f"; base64 -w0 "$f" 2>/dev/null || printf -; echo; done'


def read_state(ex: Executor, layout: Layout) -> dict[str, str | None]:
    out = ex.run(sh(READ_STATE, state_dir(layout), *STATE_FILES)).stdout
    found: dict[str, str | None] = dict.fromkeys(STATE_FILES)
    for line in out.splitlines():
        name, _, value = line.partition(" ")
        if name in found and value and value != "-":
            found[name] = base64.b64decode(value).decode()
    return found


def read_objects(ex: Executor, layout: Layout, docker_subnets: dict[str, str]) -> SwarmFacts:
    label = f"label=deployer={layout.name}"

    def lines(*argv: str) -> set[str]:
        return {line.strip() for line in ex.run(cmd(*argv)).stdout.splitlines() if line.strip()}

    facts = SwarmFacts(
        networks=lines("docker", "network", "ls", "--filter", label, "--format", "{{.Name}}"),
        secrets=lines("docker", "secret", "ls", "--filter", label, "--format", "{{.Name}}"),
        configs=lines("docker", "config", "ls", "--filter", label, "--format", "{{.Name}}"),
    )
    inspect = ex.run(cmd("docker", "service", "inspect", layout.hub_service, "--format", '{{index .Spec.Labels "deployer.spec"}}'), check=False)
    if inspect.code == 0:
        facts.hub_spec_hash = inspect.stdout.strip()
    facts.network_subnet = docker_subnets.get(layout.network)
    facts.notebook_services = len(lines("docker", "service", "ls", "--filter", f"name={layout.notebook_prefix}-", "--format", "{{.Name}}"))
    return facts


#: Every Docker network here: '<name> <subnet> ...' (IPv4 and IPv6 subnets; a network without any prints its name alone).
NETWORK_SUBNETS = sh('ids=$(docker network ls -q); [ -z "$ids" ] || docker network inspect $ids '
                     '--format \'{{.Name}}{{range .IPAM.Config}} {{.Subnet}}{{end}}\'')
NEIGHBOUR_LIMITS = sh("cat /proc/sys/net/ipv4/neigh/default/gc_thresh1 /proc/sys/net/ipv4/neigh/default/gc_thresh2 "
                      "/proc/sys/net/ipv4/neigh/default/gc_thresh3 2>/dev/null")


def parse_network_subnets(output: str) -> dict[str, str]:
    """name -> its IPv4 subnet (the first; networks without one are left out)."""
    found = {}
    for line in output.splitlines():
        name, *subnets = line.split()
        v4 = [s for s in subnets if "." in s]
        if v4:
            found[name] = v4[0]
    return found


def parse_routes(output: str) -> set[str]:
    """The destinations of `ip -4 -o route show` but the default route (a bare address is a /32)."""
    found = set()
    for line in output.splitlines():
        words = line.split()
        if not words or words[0] in ("default", "unreachable", "blackhole", "prohibit", "throw"):
            continue
        found.add(words[0] if "/" in words[0] else f"{words[0]}/32")
    return found


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


#: The groups of group-writable sockets in /run (docker.sock's docker group, and the like): a notebook never runs as one.
SOCKET_GROUPS = sh("find /run /var/run -maxdepth 3 -type s -perm -020 -printf '%G\\n' 2>/dev/null | sort -u")


#: Interfaces whose addresses are not the host's own to others: loopback and Docker's bridges (made as
#: the swarm forms, private to each host: the guard refuses a host's own bridges itself).
_PRIVATE_INTERFACE = re.compile(r"^(lo|docker0|docker_gwbridge|br-[0-9a-f]{12}|veth.*)$")


def parse_addresses(output: str) -> set[str]:
    """The addresses of `ip -4 -o addr show` (one line per address: index, interface, inet, address/prefix)."""
    found = set()
    for line in output.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[2] == "inet" and not _PRIVATE_INTERFACE.match(parts[1]):
            found.add(parts[3].split("/")[0])
    return found


NODE_ADDRESSES = sh('ids=$(docker node ls -q); [ -z "$ids" ] || docker node inspect $ids --format \'{{.Status.Addr}} {{with .ManagerStatus}}{{.Addr}}{{end}}\'')


def parse_node_addresses(output: str) -> set[str]:
    """Each node's address and its manager address (without the port), as `docker node inspect` prints them."""
    found = set()
    for word in output.split():
        address = word.rsplit(":", 1)[0] if word.count(":") == 1 else word
        if re.fullmatch(r"\d{1,3}(\.\d{1,3}){3}", address) and address != "0.0.0.0" and not address.startswith("127."):
            found.add(address)
    return found


LAYERS = sh('ids=$(docker image ls -q); [ -z "$ids" ] || docker image inspect --format "{{json .RootFS.Layers}}" $ids')
NODE_LABELS = sh('ids=$(docker node ls -q); [ -z "$ids" ] || docker node inspect $ids --format \'{{.ID}} {{json .Spec.Labels}}\'')


def gather_one(host: Host, ex: Executor, deployment: Deployment) -> HostFacts:
    layout = Layout.of(deployment)
    hub = deployment.hub
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
        facts.engine_gpus = gpus.engine_resources(data)
        for image in images.wanted_images(deployment, host):
            facts.images[image] = images.image_id(ex, image)
        for line in ex.run(LAYERS, check=False).stdout.splitlines():
            facts.layers.update(layers.chain_ids(json.loads(line) or []))
    facts.addresses = parse_addresses(ex.run(cmd("ip", "-4", "-o", "addr", "show"), check=False).stdout)
    facts.routes = parse_routes(ex.run(cmd("ip", "-4", "-o", "route", "show"), check=False).stdout)
    facts.neighbour_limits = tuple(int(v) for v in ex.run(NEIGHBOUR_LIMITS, check=False).stdout.split() if v.isdigit())
    if facts.docker:
        facts.docker_subnets = parse_network_subnets(ex.run(NETWORK_SUBNETS, check=False).stdout)
    facts.daemon_json = gpus.read_daemon_json(ex)  # on every host: one that is no worker any more loses its GPUs
    if host.has("worker"):
        facts.guard = sidecars.current(ex, netguard.container_name(layout))
        facts.mount_guard = sidecars.current(ex, mountguard.container_name(layout))
        for path in static_paths(deployment):
            facts.paths[path] = ex.run(cmd("test", "-d", path), check=False).code == 0
    others = [w for w in deployment.workers if w.host_id != hub.host_id]
    if host.host_id == hub.host_id:
        facts.proxy = sidecars.current(ex, dockerproxy.container_name(layout))
        facts.relay = sidecars.current(ex, hubrelay.container_name(layout))
        if facts.leads_swarm:
            facts.published = published_ports(ex)
            for line in ex.run(NODE_LABELS, check=False).stdout.splitlines():
                node, _, labels = line.partition(" ")
                facts.node_labels[node] = json.loads(labels or "null") or {}
            facts.node_addresses = parse_node_addresses(ex.run(NODE_ADDRESSES, check=False).stdout)
            facts.join_token = ex.run(cmd("docker", "swarm", "join-token", "-q", "worker"), check=False).stdout.strip()
            facts.objects = read_objects(ex, layout, facts.docker_subnets)
            info_cluster = ((data.get("Swarm") or {}).get("Cluster") or {}) if info.code == 0 else {}
            facts.task_history = ((info_cluster.get("Spec") or {}).get("Orchestration") or {}).get("TaskHistoryRetentionLimit")
        wanted = [path for path, _, _ in hub_directories(deployment, layout)]
        facts.missing_dirs = set(ex.run(sh('for d; do [ -d "$d" ] || echo "$d"; done', *wanted)).stdout.split())
        if others:
            facts.nfs = nfs.ServerFacts.read(ex, layout, deployment.config.use_stock_nfs)
        facts.state = read_state(ex, layout)
    if host.host_id == hub.host_id or host in others:
        facts.marker = ex.run(nfs.read_marker(layout)).stdout.strip()
    if host in others:
        facts.nfs_client = ex.run(sh('command -v mount.nfs4 >/dev/null || [ -x /sbin/mount.nfs4 ]'), check=False).code == 0
    facts.socket_gids = {int(g) for g in ex.run(SOCKET_GROUPS, check=False).stdout.split() if g.isdigit() and int(g)}
    ss = ex.run(cmd("ss", "-Htlnp"), check=False)  # 80/443 on the hub, 2377/7946 on every host, with their programs
    for line in ss.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[3].rsplit(":", 1)[-1].isdigit():
            port = int(parts[3].rsplit(":", 1)[-1])
            facts.listening.add(port)
            facts.holders.setdefault(port, set()).update(re.findall(r'\(\("([^"]+)"', line))
    return facts


def gather(deployment: Deployment, executors: dict[str, Executor], only: list[str] | None = None) -> dict[str, HostFacts]:
    """Facts of every host (or of ``only`` these), read in parallel. Every host that cannot be reached
    is named (one ConnectError with a line per host), not only the first one tried."""
    hosts = [h for h in deployment.hosts if only is None or h.host_id in only]
    with ThreadPoolExecutor(max(1, len(hosts))) as pool:
        futures = {h.host_id: pool.submit(gather_one, h, executors[h.host_id], deployment) for h in hosts}
        facts, unreachable = {}, []
        for host_id, future in futures.items():
            try:
                facts[host_id] = future.result()
            except ConnectError as exc:
                unreachable.append(str(exc))
        if unreachable:
            raise ConnectError("\n".join(unreachable))
        return facts
