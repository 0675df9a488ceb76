"""The notebook network: an attachable overlay with a subnet sized for thousands of servers.

Without a subnet, Docker gives an overlay a /24 from the swarm's pool: 256 addresses for the hub, the
relay, one load-balancer address per node and every notebook, and the 250th server or so fails with
"no available IPv4 addresses" (moby #31019). Deployer gives the network ``notebook_network_subnet``,
or when that is not set, the first /19 (8,189 addresses) of 10.128.0.0/9 that nothing on the hosts uses.

A Docker network's subnet cannot change, so a new one means a new network: deploy removes the old one
only when no notebook service holds it (the hub and its relay are re-created on the new one). While
servers run, a changed ``notebook_network_subnet`` is refused with the reason; an unset one keeps the
network as it is and says how it would grow.

The kernel's neighbour table (ARP) is one table for every network namespace of a host, and its limits
(``net.ipv4.neigh.default.gc_thresh1..3``) are not visible inside a container on current kernels (a
service's ``--sysctl`` for them fails the container: "open /proc/sys/net/ipv4/neigh/default/gc_thresh1:
no such file or directory"). The hub and its relay each hold a neighbour entry per notebook they talk to,
so deploy raises these limits on the hub and the workers to fit the network (never lowers them).
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass

from deployer.config.loader import Deployment
from deployer.errors import Problem
from deployer.hosts.commands import Command, cmd, sh
from deployer.phases.base import Context, Facts, Phase, Planned

KEY = "notebook_network_subnet"
#: Where Deployer looks for a free network when notebook_network_subnet is not set, and its size.
AUTO_RANGE = ipaddress.IPv4Network("10.128.0.0/9")
AUTO_PREFIX = 19
#: A network smaller than this many servers is grown (when none runs) if the operator did not choose it.
ENOUGH = 4000
#: Docker's local address pools when daemon.json sets none (new bridge networks take /16s and /20s from them).
DOCKER_LOCAL_POOLS = tuple(ipaddress.IPv4Network(n) for n in [f"172.{i}.0.0/16" for i in range(17, 32)] + ["192.168.0.0/16"])


def addresses(subnet: str | ipaddress.IPv4Network) -> int:
    """Addresses Docker hands out on an overlay: all but the network's, the broadcast and the gateway."""
    return ipaddress.IPv4Network(subnet).num_addresses - 3


def capacity(subnet: str | ipaddress.IPv4Network, nodes: int) -> int:
    """Notebook servers the network holds: its addresses less one load-balancer address per node, the hub and the relay."""
    return max(0, addresses(subnet) - nodes - 2)


def neighbour_limits(subnet: str | ipaddress.IPv4Network) -> tuple[int, int, int]:
    """gc_thresh1..3 for a host that talks to every address of the network twice (the hub and its relay on one
    host): below thresh1 nothing is collected; thresh3 is the hard limit, with room for the host's own."""
    size = max(1024, ipaddress.IPv4Network(subnet).num_addresses)
    return 2 * size, 4 * size, 8 * size


@dataclass(frozen=True)
class Decision:
    subnet: str
    action: str  # "keep", "create" or "recreate"
    note: str = ""


def local_pools(daemon_json: str | None) -> list[ipaddress.IPv4Network]:
    """The pools a host's engine gives new local networks from: daemon.json's default-address-pools, else Docker's."""
    try:
        pools = (json.loads(daemon_json) if daemon_json else {}).get("default-address-pools") or []
        found = [ipaddress.IPv4Network(p["base"]) for p in pools if isinstance(p, dict) and "." in str(p.get("base", ""))]
    except (ValueError, AttributeError, TypeError, KeyError):
        found = []
    return found or list(DOCKER_LOCAL_POOLS)


def taken(deployment: Deployment, facts: dict, network: str) -> list[tuple[ipaddress.IPv4Network, str]]:
    """Every range a notebook network may not overlap, with what it is: the hosts' routes, their Docker
    networks (but this deployment's notebook network), and the pools their engines give new networks from."""
    found: list[tuple[ipaddress.IPv4Network, str]] = []
    for host in deployment.hosts:
        f = facts[host.host_id]
        for route in sorted(f.routes):
            found.append((ipaddress.IPv4Network(route, strict=False), f"a route of {host.host_id} ({route})"))
        for name, subnet in sorted(f.docker_subnets.items()):
            if name != network:
                found.append((ipaddress.IPv4Network(subnet, strict=False), f"the Docker network {name} on {host.host_id} ({subnet})"))
        for pool in local_pools(f.daemon_json):
            found.append((pool, f"the address pool {pool} {host.host_id}'s Docker engine gives new bridge networks from"))
    return found


def free_subnet(occupied: list[tuple[ipaddress.IPv4Network, str]]) -> ipaddress.IPv4Network | None:
    for candidate in AUTO_RANGE.subnets(new_prefix=AUTO_PREFIX):
        if not any(candidate.overlaps(net) for net, _ in occupied):
            return candidate
    return None


def decide(deployment: Deployment, facts: dict, network: str) -> tuple[Decision | None, list[Problem]]:
    """What becomes of the notebook network, or the problems that stop the deploy (each naming the key)."""
    config = deployment.config
    hub = facts[deployment.hub.host_id]
    objects = hub.objects
    current = objects.network_subnet if objects else None
    holders = objects.notebook_services if objects else 0
    explicit = config.notebook_network_subnet
    origin = deployment.origins.get(KEY)
    if origin:
        source, path = origin.source, origin.path(KEY)
    else:  # not set: named where it would go, the most specific scope of the configs file
        files = deployment.files
        source, path = files.name(files.configs) if files.configs else "configs", f"{deployment.target.scopes()[-1]}/{KEY}"
    occupied = taken(deployment, facts, network)

    def problem(text: str) -> tuple[None, list[Problem]]:
        return None, [Problem(source, path, text)]

    def checked(subnet: ipaddress.IPv4Network, action: str) -> tuple[Decision | None, list[Problem]]:
        clashes = [what for net, what in occupied if subnet.overlaps(net)]
        if clashes:
            return problem(f"{subnet} overlaps {clashes[0]}{f' (and {len(clashes) - 1} more)' if len(clashes) > 1 else ''}: notebooks "
                           f"could not reach it, or Docker would give its addresses twice; choose a range nothing on the hosts uses")
        return Decision(str(subnet), action), []

    if current is not None and explicit is None:
        if capacity(current, len(deployment.hosts)) >= ENOUGH:
            return Decision(current, "keep"), []
        if holders:
            return Decision(current, "keep", f"the notebook network {network} ({current}) holds {capacity(current, len(deployment.hosts))} "
                                             f"servers; it grows at a deploy while no notebook service exists ({holders} now), or set {KEY}"), []
    if current is not None and explicit is not None and ipaddress.IPv4Network(current) == ipaddress.IPv4Network(explicit):
        return Decision(current, "keep"), []
    if current is not None and holders:
        return problem(f"the notebook network {network} is {current} and {holders} notebook service(s) are on it; a Docker network's "
                       f"subnet cannot change under them: stop every server (the hub's admin page) and deploy again, or set {KEY} "
                       f"back to {current}")
    action = "create" if current is None else "recreate"
    if explicit is not None:
        return checked(ipaddress.IPv4Network(explicit), action)
    found = free_subnet(occupied)
    if found is None:
        return problem(f"no /{AUTO_PREFIX} of {AUTO_RANGE} is free of the hosts' routes and Docker networks; set {KEY} to a free private range")
    return Decision(str(found), action), []


def create_command(network: str, subnet: str, name: str) -> Command:
    return cmd("docker", "network", "create", "--driver", "overlay", "--attachable", "--subnet", subnet, "--label", f"deployer={name}", network,
               why=f"overlay network {network} ({subnet}, {capacity(subnet, 0)} addresses) for the hub and notebooks")


def recreate_step(network: str, subnet: str, name: str, relay: str) -> Command:
    """Once the hub is stopped: the relay removed, the old network removed (when its last endpoint is gone), the
    new one made by create_command."""
    return sh('net=$1 relay=$2; shift 2\n'
              'docker rm --force "$relay" >/dev/null 2>&1\n'
              'gone=""; for i in $(seq 120); do why=$(docker network rm "$net" 2>&1 >/dev/null) && { gone=1; break; }; sleep 0.5; done\n'
              '[ -n "$gone" ] || { echo "the network $net could not be removed within 60 s: $why" >&2; exit 1; }\n'
              '# (the swarm lets a removed network go on every node a moment later: its name may be taken again only then)\n'
              'for i in $(seq 60); do why=$("$@" 2>&1 >/dev/null) && exit 0; sleep 0.5; done\n'
              'echo "the network $net could not be made: $why" >&2; exit 1',
              network, relay, *create_command(network, subnet, name).argv,
              why=f"the overlay network {network} made again with {subnet} ({capacity(subnet, 0)} addresses)")


def neighbour_command(limits: tuple[int, int, int]) -> Command:
    """Raise the kernel's neighbour table limits (never lower one) now and at every boot."""
    script = ('set -e\nf=/etc/sysctl.d/60-deployer-neighbours.conf\n: >"$f.new"\ni=1\nfor want; do\n'
              '  key=net.ipv4.neigh.default.gc_thresh$i; have=$(cat /proc/sys/net/ipv4/neigh/default/gc_thresh$i)\n'
              '  [ "$have" -ge "$want" ] && want=$have\n  echo "$key = $want" >>"$f.new"\n'
              '  echo "$want" >/proc/sys/net/ipv4/neigh/default/gc_thresh$i\n  i=$((i + 1))\ndone\nmv "$f.new" "$f"')
    return sh(script, *(str(v) for v in limits), why=f"neighbour table limits gc_thresh1..3 at least {'/'.join(map(str, limits))} (one table for every container)")


def _wanted_limits(ctx: Context, facts: Facts) -> tuple[int, int, int]:
    decision, _ = decide(ctx.deployment, facts, ctx.layout.network)  # (its problems stop the deploy at preflight)
    return neighbour_limits(decision.subnet if decision else next(AUTO_RANGE.subnets(new_prefix=AUTO_PREFIX)))


def plan_neighbours(ctx: Context, facts: Facts) -> Planned:
    """On the hub and every worker: the neighbour table limits the network needs, where they are lower."""
    planned, want = Planned(), _wanted_limits(ctx, facts)
    for host in ctx.deployment.hosts:
        have = facts[host.host_id].neighbour_limits
        if len(have) != 3:  # a host that is itself a container (a lab host) sees no table of its own
            planned.ok(host.host_id, "neighbour table limits not visible here (the kernel's host sets them)")
        elif all(h >= w for h, w in zip(have, want)):
            planned.ok(host.host_id, f"neighbour table limits {'/'.join(map(str, have))}")
        else:
            planned.add(host.host_id, neighbour_command(want))
    return planned


def expect_neighbours(ctx: Context, facts: Facts, planned: Planned) -> None:
    want = _wanted_limits(ctx, facts)
    for host_id in planned.commands:
        facts[host_id].neighbour_limits = tuple(max(h, w) for h, w in zip(facts[host_id].neighbour_limits, want))


NEIGHBOURS = Phase("neighbour table limits for the notebook network", plan_neighbours, expect_neighbours)
