"""Phases: the swarm. The hub initialises it (the only manager), the workers join it with the
hub's token, then every node gets its role labels (which the hub and notebook services are
constrained to)."""

from __future__ import annotations

from dataclasses import replace

from deployer.hosts.commands import Command, cmd
from deployer.phases.base import Context, Facts, Phase, Planned, placeholder

JOIN = ('timeout 5 bash -c "exec 3<>/dev/tcp/$1/2377" 2>/dev/null || { echo "cannot reach the hub'"'"'s swarm port $1:2377 (TCP); '
        'open 2377/tcp, 7946/tcp+udp and 4789/udp between the hosts (firewall, security group) and check the hub'"'"'s private_ip" >&2; exit 3; }\n'
        'exec docker swarm join --advertise-addr "$2" --token "$3" "$1:2377"')


def plan_init(ctx: Context, facts: Facts) -> Planned:
    planned, hub = Planned(), ctx.deployment.hub
    f = facts[hub.host_id]
    if f.leads_swarm:
        planned.ok(hub.host_id, f"swarm manager already ({f.node_id[:12]})")
    else:
        planned.add(hub.host_id, cmd("docker", "swarm", "init", "--advertise-addr", hub.address, why="initialise the swarm on the hub"))
    return planned


def expect_init(ctx: Context, facts: Facts, planned: Planned) -> None:
    hub = ctx.deployment.hub
    if planned.commands:
        f = facts[hub.host_id]
        f.swarm_state, f.manager, f.managers = "active", True, {hub.address}
        f.node_id, f.join_token, f.node_labels = placeholder(f"node ID of {hub.host_id}"), placeholder("worker token"), {}


def join_command(worker_address: str, hub_address: str, token: str) -> Command:
    # The token is only on the worker's command line (docker has no other way to take it), never in our output.
    return replace(Command(("sh", "-c", JOIN, "sh", hub_address, worker_address, token), why="join the swarm as a worker",
                           shown=f"docker swarm join --advertise-addr {worker_address} --token <worker token> {hub_address}:2377"),
                   timeout=120)


def plan_join(ctx: Context, facts: Facts) -> Planned:
    planned, hub = Planned(), ctx.deployment.hub
    for host in ctx.deployment.workers:
        if host.host_id == hub.host_id:
            continue
        if facts[host.host_id].in_swarm:
            planned.ok(host.host_id, "in the swarm already")
        else:
            planned.add(host.host_id, join_command(host.address, hub.address, facts[hub.host_id].join_token or placeholder("worker token")))
    return planned


def expect_join(ctx: Context, facts: Facts, planned: Planned) -> None:
    for host_id in planned.commands:
        f = facts[host_id]
        f.swarm_state, f.managers, f.node_id = "active", {ctx.deployment.hub.address}, placeholder(f"node ID of {host_id}")


def wanted_labels(ctx: Context, facts: Facts) -> dict[str, list[str]]:
    """host -> the role labels its node lacks."""
    labels = facts[ctx.deployment.hub.host_id].node_labels
    missing = {}
    for host in ctx.deployment.hosts:
        have = labels.get(facts[host.host_id].node_id, {})
        lacking = [f"deployer.{role}=true" for role in host.roles if have.get(f"deployer.{role}") != "true"]
        if lacking:
            missing[host.host_id] = lacking
    return missing


def plan_labels(ctx: Context, facts: Facts) -> Planned:
    """Run on the hub (labels are set on a manager), one command per node that lacks one."""
    planned, hub = Planned(), ctx.deployment.hub
    missing = wanted_labels(ctx, facts)
    for host in ctx.deployment.hosts:
        lacking = missing.get(host.host_id)
        if not lacking:
            planned.ok(host.host_id, "node labelled " + ", ".join(f"deployer.{r}" for r in host.roles))
            continue
        argv = ["docker", "node", "update"] + sum((["--label-add", label] for label in lacking), []) + [facts[host.host_id].node_id]
        planned.add(hub.host_id, cmd(*argv, why=f"label the node of {host.host_id} {', '.join(lacking)}"))
    return planned


def expect_labels(ctx: Context, facts: Facts, planned: Planned) -> None:
    labels = facts[ctx.deployment.hub.host_id].node_labels
    for host in ctx.deployment.hosts:
        node = labels.setdefault(facts[host.host_id].node_id, {})
        node.update({f"deployer.{role}": "true" for role in host.roles})


INIT = Phase("swarm: initialise it on the hub", plan_init, expect_init)
JOIN_PHASE = Phase("swarm: the workers join", plan_join, expect_join)
LABELS = Phase("swarm: node labels", plan_labels, expect_labels)
