"""What is running: the swarm's nodes and roles, the hub service, notebooks per node.

Everything is read on the hub (the swarm manager) through its executor, so it works
the same for a hub on this machine and a hub reached over SSH.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field

from deployer.config.hubsettings import AUDIT_LOG, Layout
from deployer.hosts.commands import cmd, sh
from deployer.hosts.executor import Executor


@dataclass
class NodeStatus:
    hostname: str
    state: str
    availability: str
    roles: list[str]
    manager: bool


@dataclass
class NetworkStatus:
    subnet: str
    addresses: int  # all Docker hands out on it
    in_use: int  # what the hub's node sees: every task's and container's address, service VIPs, a load balancer per node

    @property
    def left(self) -> int:
        return max(0, self.addresses - self.in_use)


def network_status(inspected: dict) -> NetworkStatus | None:
    """From `docker network inspect --verbose` on a node attached to the network (the hub's)."""
    configs = [c for c in (inspected.get("IPAM") or {}).get("Config") or [] if "." in c.get("Subnet", "")]
    if not configs:
        return None
    subnet = ipaddress.IPv4Network(configs[0]["Subnet"])
    used: set[str] = set()
    for service in (inspected.get("Services") or {}).values():
        if "." in str(service.get("VIP") or ""):
            used.add(str(service["VIP"]).split("/")[0])
        used.update(t["EndpointIP"] for t in service.get("Tasks") or [] if t.get("EndpointIP"))
    used.update(c["IPv4Address"].split("/")[0] for c in (inspected.get("Containers") or {}).values() if c.get("IPv4Address"))
    loadbalancers = max(0, len(inspected.get("Peers") or []) - sum(1 for c in (inspected.get("Containers") or {}).values()
                                                                      if str(c.get("Name", "")).endswith("-endpoint")))
    return NetworkStatus(str(subnet), subnet.num_addresses - 3, len(used) + loadbalancers)


@dataclass
class Status:
    swarm: bool
    nodes: list[NodeStatus] = field(default_factory=list)
    hub_state: str = "absent"  # e.g. "Running 5 minutes ago"
    notebooks: dict[str, list[str]] = field(default_factory=dict)  # node hostname -> users
    last_run: dict | None = None  # the newest audit-log entry of this deployment
    network: NetworkStatus | None = None  # the notebook network (None when it does not exist)


def last_run(ex, name: str, path: str = AUDIT_LOG) -> dict | None:
    """The newest line of the hub's audit log for this deployment (None when there is none)."""
    pattern = json.dumps({"deployment": name})[1:-1]  # '"deployment": "<name>"', as the log writes it
    found = ex.run(cmd("sh", "-c", 'grep -F -e "$1" "$2" 2>/dev/null | tail -n 1', "sh", pattern, path), check=False)
    try:
        return json.loads(found.stdout) if found.stdout.strip() else None
    except json.JSONDecodeError:
        return None


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def read(ex: Executor, layout: Layout) -> Status:
    state = ex.run(cmd("docker", "info", "--format", "{{.Swarm.LocalNodeState}}")).stdout.strip()
    if state != "active":
        return Status(swarm=False)
    status = Status(swarm=True)
    for node in _json_lines(ex.run(cmd("docker", "node", "ls", "--format", "{{json .}}")).stdout):
        labels = json.loads(ex.run(cmd("docker", "node", "inspect", node["ID"], "--format", "{{json .Spec.Labels}}")).stdout or "{}") or {}
        roles = [role for role in ("hub", "worker") if labels.get(f"deployer.{role}") == "true"]
        status.nodes.append(NodeStatus(node["Hostname"], node["Status"], node["Availability"], roles, bool(node.get("ManagerStatus"))))
    hub = ex.run(cmd("docker", "service", "ps", layout.hub_service, "--filter", "desired-state=running", "--format", "{{.CurrentState}}"), check=False)
    if hub.code == 0 and hub.stdout.strip():
        status.hub_state = hub.stdout.strip().splitlines()[0]
    network = ex.run(cmd("docker", "network", "inspect", "--verbose", layout.network, "--format", "{{json .}}"), check=False)
    if network.code == 0 and network.stdout.strip():
        status.network = network_status(json.loads(network.stdout))
    # Running tasks, also those Swarm marked for shutdown when their node went down (they run nowhere, but their
    # users should be named). The names stay on the hub (xargs): thousands would not fit one ssh command line.
    tasks = ex.run(sh('docker service ls -q --filter "name=$1" | xargs -r docker service ps --format "{{json .}}"',
                      f"{layout.notebook_prefix}-")).stdout
    if tasks.strip():
        for task in _json_lines(tasks):
            if not task.get("CurrentState", "").startswith("Running"):
                continue
            user = task["Name"].split(".", 1)[0].removeprefix(f"{layout.notebook_prefix}-")
            status.notebooks.setdefault(task["Node"], []).append(user)
    return status


def certificate(ex: Executor, layout: Layout) -> str:
    """The hub's ACME certificate, as its ACME service last wrote it (deployer_hub.acmecert), in one line."""
    found = ex.run(cmd("cat", f"{layout.data_dir}/acme/status.json"), check=False)
    try:
        status = json.loads(found.stdout) if found.code == 0 else {}
    except json.JSONDecodeError:
        status = {}
    if not status:
        return "certificate: not requested yet (the hub's ACME service asks for it once the hub runs)"
    issued = (f"from {status.get('issued_by')} for {status.get('host')}, valid until {status.get('not_after')}, due for renewal at {status.get('renew_at')}"
              if status.get("not_after") else "")
    if status.get("state") == "failed":
        before = f"{issued}; renewing it failed" if issued else "self-signed until the ACME CA issues one; the last order failed"
        return f"certificate: {before}: {status.get('error')} (next try at {status.get('next_attempt')})"
    return f"certificate: {issued}"
