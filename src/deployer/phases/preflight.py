"""Before anything changes: what on the hosts would make the deploy fail, each problem naming the
host and how to fix it (a static mount path missing on a worker, a port taken, another swarm)."""

from __future__ import annotations

from deployer.config.hubsettings import Layout
from deployer.config.loader import Deployment
from deployer.errors import Problem
from deployer.phases import notebooknet
from deployer.phases.facts import HostFacts

SWARM_PORTS = (2377, 7946)  # TCP; 7946 and 4789 (overlay) are UDP too


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
    found += notebooknet.decide(deployment, facts, Layout.of(deployment).network)[1]  # its subnet clear of the hosts' networks
    return found
