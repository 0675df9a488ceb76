"""Phases: the swarm. The hub initialises it (the only manager), the workers join it with the
hub's token, then every node gets its role labels (which the hub and notebook services are
constrained to)."""

from __future__ import annotations

from dataclasses import replace

from deployer.hosts.commands import Command, cmd
from deployer.phases.base import Context, Facts, Phase, Planned, placeholder

#: Joins the worker's engine to the swarm with the token read from standard input: through the
#: Engine API over the Docker socket (python3), so the token is on no command line anywhere;
#: only a worker without python3 gets it on `docker swarm join`'s (Docker takes it no other way).
JOIN_API = """import http.client, json, socket, sys
hub, advertise, token = sys.argv[1], sys.argv[2], sys.stdin.readline().strip()
class Engine(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(self.timeout)
        self.sock.connect("/var/run/docker.sock")
engine = Engine("localhost", timeout=110)
remote = (f"[{hub}]" if ":" in hub else hub) + ":2377"
engine.request("POST", "/swarm/join", json.dumps({"ListenAddr": "0.0.0.0:2377", "AdvertiseAddr": advertise,
               "RemoteAddrs": [remote], "JoinToken": token}), {"Content-Type": "application/json"})
answer = engine.getresponse()
text = answer.read().decode(errors="replace")
if answer.status != 200:
    sys.exit("docker swarm join: " + (json.loads(text).get("message", text) if text.startswith("{") else text))
"""
JOIN = ('IFS= read -r token\n'
        'timeout 5 bash -c "exec 3<>/dev/tcp/$1/2377" 2>/dev/null || { echo "cannot reach the hub'"'"'s swarm port $1:2377 (TCP); '
        'open 2377/tcp, 7946/tcp+udp and 4789/udp between the hosts (firewall, security group) and check the hub'"'"'s private_ip" >&2; exit 3; }\n'
        'if command -v python3 >/dev/null; then printf "%s\\n" "$token" | python3 -c "$3" "$1" "$2"; exit $?; fi\n'
        'exec docker swarm join --advertise-addr "$2" --token "$token" "$1:2377"')


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
    """The token goes on standard input (never on the operator's ssh command line nor in our output)."""
    return replace(Command(("sh", "-c", JOIN, "sh", hub_address, worker_address, JOIN_API), input=f"{token}\n".encode(),
                           why="join the swarm as a worker",
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


def role_labels(ctx: Context, host) -> list[str]:
    """The labels (value true) of a host's node: its roles, and a worker's label unique to this deployment,
    which its notebooks' placement requires (deployer.worker is common to every deployment sharing a swarm)."""
    return [f"deployer.{role}" for role in host.roles] + ([ctx.layout.worker_label] if host.has("worker") else [])


def wanted_labels(ctx: Context, facts: Facts) -> dict[str, list[str]]:
    """host -> the role labels its node lacks."""
    labels = facts[ctx.deployment.hub.host_id].node_labels
    missing = {}
    for host in ctx.deployment.hosts:
        have = labels.get(facts[host.host_id].node_id, {})
        lacking = [f"{label}=true" for label in role_labels(ctx, host) if have.get(label) != "true"]
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
            planned.ok(host.host_id, "node labelled " + ", ".join(role_labels(ctx, host)))
            continue
        argv = ["docker", "node", "update"] + sum((["--label-add", label] for label in lacking), []) + [facts[host.host_id].node_id]
        planned.add(hub.host_id, cmd(*argv, why=f"label the node of {host.host_id} {', '.join(lacking)}"))
    return planned


def expect_labels(ctx: Context, facts: Facts, planned: Planned) -> None:
    labels = facts[ctx.deployment.hub.host_id].node_labels
    for host in ctx.deployment.hosts:
        node = labels.setdefault(facts[host.host_id].node_id, {})
        node.update(dict.fromkeys(role_labels(ctx, host), "true"))


#: Old tasks the swarm keeps per service slot (Docker's default 5): notebooks have one task each, but the hub's
#: restarts and every update add to the manager's store, which a few hundred services fill (moby #37997, #41289).
TASK_HISTORY = 2


def plan_settings(ctx: Context, facts: Facts) -> Planned:
    planned, hub = Planned(), ctx.deployment.hub
    if facts[hub.host_id].task_history == TASK_HISTORY:
        planned.ok(hub.host_id, f"swarm keeps {TASK_HISTORY} old tasks per service")
    else:
        planned.add(hub.host_id, cmd("docker", "swarm", "update", "--task-history-limit", str(TASK_HISTORY),
                                     why=f"keep {TASK_HISTORY} old tasks per service, not Docker's 5 (a small swarm store with many servers)"))
    return planned


def expect_settings(ctx: Context, facts: Facts, planned: Planned) -> None:
    facts[ctx.deployment.hub.host_id].task_history = TASK_HISTORY


INIT = Phase("swarm: initialise it on the hub", plan_init, expect_init)
SETTINGS = Phase("swarm: settings", plan_settings, expect_settings)
JOIN_PHASE = Phase("swarm: the workers join", plan_join, expect_join)
LABELS = Phase("swarm: node labels", plan_labels, expect_labels)
