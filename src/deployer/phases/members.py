"""Phases: the cluster's members. Deploy records the workers it deployed (on the hub, beside the kept
state); a worker since removed from the servers file is taken out cleanly on the next deploy: drained
(Swarm stops its notebooks; their users are told their machine was taken out of service and can start
again elsewhere), its label removed, the share unmounted and its guard removed there, made to leave the
swarm, and its node removed (removing its guard removes the guard's host NFS rules too). A worker added
to the servers file simply goes through every phase: it joins, gets its label, images, guard and mount,
and nothing running elsewhere is touched."""

from __future__ import annotations

import json
from dataclasses import replace

from deployer.config.model import Host
from deployer.hosts.commands import Command, sh
from deployer.phases import mountguard, netguard, nfs
from deployer.phases.base import Context, Facts, Phase, Planned
from deployer.phases.facts import state_dir

RECORD = "workers.json"
KEYS = ("host_id", "ssh_host", "private_ip", "ssh_user", "ssh_key", "ssh_port", "ssh_known_hosts")

# The node of the worker at address $1: the deployment's notebook services running there (prefix $2) scaled
# to none (drained, Swarm would start them again elsewhere as new servers, unknown to their users) and labelled
# with the worker's name $3 (the spawner tells their users, even once the node and its tasks are gone), the node
# drained, then waited on until none of its tasks runs (60 s).
DRAIN = ('node=$(docker node ls -q | xargs -r docker node inspect --format "{{.ID}} {{.Status.Addr}}" | awk -v a="$1" \'$2 == a {print $1}\')\n'
         '[ -n "$node" ] || exit 0\n'
         'for svc in $(docker node ps "$node" --filter desired-state=running --format "{{.Name}}" | sed "s/\\.[0-9]*$//" | sort -u); do\n'
         '  case "$svc" in "$2"*) docker service update --detach --replicas 0 --label-add "deployer.taken-out=$3" "$svc" >/dev/null ;; esac\n'
         'done\n'
         'docker node update --availability drain "$node" >/dev/null\n'
         'for label in deployer.worker "$4"; do docker node update --label-rm "$label" "$node" >/dev/null 2>&1; done\n'
         'for i in $(seq 120); do [ -z "$(docker node ps -q --filter desired-state=running "$node")" ] && exit 0; sleep 0.5; done\n'
         'echo "the notebooks on $1 did not stop within 60 s" >&2; exit 1')
FORGET = ('node=$(docker node ls -q | xargs -r docker node inspect --format "{{.ID}} {{.Status.Addr}}" | awk -v a="$1" \'$2 == a {print $1}\')\n'
          '[ -z "$node" ] || docker node rm --force "$node" >/dev/null')


def record(ctx: Context) -> str:
    workers = [{k: getattr(h, k) for k in KEYS} for h in ctx.deployment.workers if h.host_id != ctx.deployment.hub.host_id]
    return json.dumps(workers, sort_keys=True)


def removed(ctx: Context, facts: Facts) -> list[Host]:
    """The workers the last deploy recorded that the servers file no longer has (by host_id or address)."""
    text = facts[ctx.deployment.hub.host_id].state.get(RECORD) or "[]"
    try:
        recorded = [Host(**{**entry, "roles": ["worker"]}) for entry in json.loads(text)]
    except (ValueError, TypeError):
        return []
    current = {h.host_id for h in ctx.deployment.hosts} | {h.address for h in ctx.deployment.hosts}
    return [h for h in recorded if h.host_id not in current and h.address not in current]


def plan_drain(ctx: Context, facts: Facts) -> Planned:
    planned, hub = Planned(), ctx.deployment.hub
    for host in removed(ctx, facts):
        planned.add(hub.host_id, replace(sh(DRAIN, host.address, f"{ctx.layout.notebook_prefix}-", host.host_id, ctx.layout.worker_label, why=f"take out {host.host_id} (removed from the servers file): drain it, "
                                             "stopping its notebooks, and remove its worker label"), timeout=90))
    return planned


def plan_leave(ctx: Context, facts: Facts) -> Planned:
    """Run on each removed worker itself (reached as the last deploy did)."""
    planned = Planned()
    for host in removed(ctx, facts):
        # The mount guard last: leaving removes the notebooks' containers, which the engine lets go of through their volumes' driver.
        planned.add(host.host_id, nfs.unmount_command(ctx.layout), netguard.remove_command(ctx.layout),
                    sh("docker swarm leave --force >/dev/null 2>&1 || true", why="leave the swarm"), mountguard.remove_command(ctx.layout))
    return planned


def plan_forget(ctx: Context, facts: Facts) -> Planned:
    planned, hub = Planned(), ctx.deployment.hub
    for host in removed(ctx, facts):
        planned.add(hub.host_id, sh(FORGET, host.address, why=f"remove the node of {host.host_id} from the swarm"))
    return planned


def expect_forget(ctx: Context, facts: Facts, planned: Planned) -> None:
    """The removed nodes are no longer among the swarm's (the guards' policy is planned from them)."""
    for host in removed(ctx, facts):
        facts[ctx.deployment.hub.host_id].node_addresses.discard(host.address)


def plan_record(ctx: Context, facts: Facts) -> Planned:
    planned, hub = Planned(), ctx.deployment.hub
    wanted = record(ctx)
    if facts[hub.host_id].state.get(RECORD) != wanted:
        planned.add(hub.host_id, write_record(ctx, wanted))
    return planned


def write_record(ctx: Context, text: str) -> Command:
    return sh('set -e; umask 077; mkdir -p "$2"; cat >"$1.new"; mv "$1.new" "$1"', f"{state_dir(ctx.layout)}/{RECORD}", state_dir(ctx.layout),
              input=text.encode(), why="record the workers deployed (so that one removed from the servers file is taken out next time)")


def expect_record(ctx: Context, facts: Facts, planned: Planned) -> None:
    facts[ctx.deployment.hub.host_id].state[RECORD] = record(ctx)


DRAIN_PHASE = Phase("workers removed from the servers file: drain them", plan_drain)
# A removed worker may be gone for good: what cannot be done there is reported, and its node removed anyway.
LEAVE_PHASE = Phase("workers removed from the servers file: unmount, remove the guards, leave the swarm", plan_leave, best_effort=True)
FORGET_PHASE = Phase("workers removed from the servers file: remove their nodes", plan_forget, expect_forget)
RECORD_PHASE = Phase("record the deployed workers", plan_record, expect_record)
