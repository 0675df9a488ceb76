"""Phase: each worker's GPUs (``gpus:`` in the servers file) as Swarm node generic resources.

Docker declares them per engine, in ``/etc/docker/daemon.json`` under ``node-generic-resources``
(``NVIDIA-GPU=<device id>`` each, or ``NVIDIA-GPU=<count>``), and reads that key only when dockerd starts
(the swarm's node descriptions are then the GPU inventory the hub chooses from: deployer_hub.gpus): a change is written
into the file (its other keys kept) and the engine restarted, which stops the notebooks on that
worker. Nothing is written or restarted when the file and the running engine already match. The hub
then waits until the node is Ready with the new resources, so the run goes on with a whole swarm.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Any

from deployer.config.model import GPU_KIND, Host
from deployer.errors import DeployerError
from deployer.hosts.commands import Command, cmd, sh
from deployer.hosts.executor import Executor
from deployer.phases import netguard
from deployer.phases.base import Context, Facts, Phase, Planned, placeholder

DAEMON_JSON = "/etc/docker/daemon.json"
KEY = "node-generic-resources"
ABSENT = "absent"  # the digest of a daemon.json that does not exist

#: Prints the file, or exits 3 when there is none (a file that cannot be read fails the read).
READ = '[ -e "$1" ] || exit 3; cat "$1"'

#: The engine's process in this PID namespace (other dockerds on the host belong to containers).
FIND_DOCKERD = """ns=$(readlink /proc/self/ns/pid); pids=()
for p in /proc/[0-9]*; do
  [ "$(cat "$p/comm" 2>/dev/null)" = dockerd ] && [ "$(readlink "$p/ns/pid" 2>/dev/null)" = "$ns" ] && pids+=("${p#/proc/}")
done
"""

#: $1 the file, $2 the digest of the content planned against; the new content on standard input.
#: Refuses when the file changed since it was read, and when dockerd has the resources as flags too
#: (dockerd would then refuse to start: a directive may not be both a flag and in the file).
WRITE = FIND_DOCKERD + """for pid in "${pids[@]}"; do
  if tr '\\0' '\\n' <"/proc/$pid/cmdline" | grep -q '^--node-generic-resource'; then
    echo "dockerd runs with --node-generic-resource flags, which cannot be combined with node-generic-resources in $1: remove the flags from its command line (its unit or init script)" >&2; exit 1
  fi
done
have=absent; [ ! -e "$1" ] || have=$(sha256sum <"$1" | cut -d' ' -f1)
[ "$have" = "$2" ] || { echo "$1 changed since deploy read it: run deploy again" >&2; exit 1; }
mkdir -p "$(dirname "$1")"; cat >"$1.deployer-new"
[ ! -e "$1" ] || chmod --reference="$1" "$1.deployer-new"
mv -f "$1.deployer-new" "$1"
"""

#: Restarts the engine the way it was started, then waits until it answers and, when $1 names a
#: container (the network guard, --restart always), until that runs again.
RESTART = FIND_DOCKERD + """guard=$1
if [ -d /run/systemd/system ]; then
  systemctl restart docker
elif [ -x /etc/init.d/docker ] && service docker status >/dev/null 2>&1; then
  service docker restart
elif [ "${#pids[@]}" -ne 1 ]; then
  echo "no service manager runs the Docker engine and ${#pids[@]} dockerd processes were found: restart it by hand" >&2; exit 1
elif [ "${pids[0]}" = 1 ]; then
  # dockerd is this system's first process (a container's main process): only its supervisor (the
  # container's restart policy) can start it again. Stopped once this command has returned; the hub
  # waits for the node.
  setsid bash -c 'sleep 2; kill -TERM 1' </dev/null >/dev/null 2>&1 &
  echo "dockerd is PID 1 here: stopped for its supervisor to start again"; exit 0
else
  # Started by hand: started again with the same arguments, directory and log once it has stopped.
  pid=${pids[0]}; mapfile -d '' argv <"/proc/$pid/cmdline"
  dir=$(readlink "/proc/$pid/cwd" || echo /); log=$(readlink "/proc/$pid/fd/2" || true)
  [ -f "$log" ] || log=/var/log/dockerd.log
  kill -TERM "$pid"
  for i in $(seq 60); do [ -e "/proc/$pid" ] || break; sleep 1; done
  [ ! -e "/proc/$pid" ] || { echo "dockerd (pid $pid) did not stop within 60 s" >&2; exit 1; }
  cd "$dir"; setsid "${argv[@]}" </dev/null >>"$log" 2>&1 &
fi
for i in $(seq 90); do docker info >/dev/null 2>&1 && break; sleep 1; done
docker info >/dev/null 2>&1 || { echo "the Docker engine did not answer within 90 s of its restart" >&2; exit 1; }
[ -n "$guard" ] && docker container inspect "$guard" >/dev/null 2>&1 || exit 0
for i in $(seq 60); do [ "$(docker container inspect -f '{{.State.Running}}' "$guard")" = true ] && exit 0; sleep 1; done
echo "$guard did not run again after the engine's restart" >&2; exit 1
"""

#: On a manager: $1 the node, $2 its host, $3 the GPUs it must show (sorted, each followed by a space).
NODE_READY = """for i in $(seq 90); do
  out=$(docker node inspect "$1" --format '{{.Status.State}}{{range .Description.Resources.GenericResources}}{{with .NamedResourceSpec}} {{.Kind}}={{.Value}}{{end}}{{with .DiscreteResourceSpec}} {{.Kind}}={{.Value}}{{end}}{{end}}' 2>/dev/null) || out=""
  have=$(printf '%s\\n' $out | sed 1d | grep "^$4=" | LC_ALL=C sort | tr '\\n' ' ')
  [ "${out%% *}" = ready ] && [ "$have" = "$3" ] && exit 0
  sleep 2
done
echo "the node of $2 is not Ready with its GPUs ($3) 180 s after its engine's restart: $out" >&2; exit 1
"""


class DaemonJsonError(DeployerError):
    """A host's daemon.json that deploy cannot merge into."""


def engine_resources(info: dict[str, Any]) -> tuple[str, ...]:
    """The GPUs the running engine declares (``docker info``'s GenericResources), sorted."""
    found = []
    for resource in info.get("GenericResources") or []:
        for spec in (resource.get("NamedResourceSpec"), resource.get("DiscreteResourceSpec")):  # (ids, or a count)
            if isinstance(spec, dict) and spec.get("Kind") == GPU_KIND:
                found.append(f"{GPU_KIND}={spec.get('Value', '')}")
    return tuple(sorted(found))


def read_daemon_json(ex: Executor) -> str | None:
    """The file's text, None when there is none."""
    result = ex.run(Command(("sh", "-c", READ, "sh", DAEMON_JSON)), check=False)
    if result.code == 3:
        return None
    if result.code != 0:
        raise DaemonJsonError(f"{ex.host}: cannot read {DAEMON_JSON}: {result.stderr.strip()[-300:]}")
    return result.stdout


def parsed(host_id: str, text: str | None) -> dict[str, Any]:
    if text is None or not text.strip():
        return {}
    try:
        data = json.loads(text)
    except ValueError as error:
        raise DaemonJsonError(f"{host_id}: {DAEMON_JSON} is not valid JSON ({error}); fix it (dockerd will not start with it)") from None
    if not isinstance(data, dict) or not isinstance(data.get(KEY, []), list):
        raise DaemonJsonError(f"{host_id}: {DAEMON_JSON} must be a JSON object with {KEY} a list of strings; fix it first")
    return data


def file_resources(host_id: str, text: str | None) -> tuple[str, ...]:
    """The GPUs the file declares, sorted."""
    return tuple(sorted(str(r) for r in parsed(host_id, text).get(KEY, []) if str(r).startswith(f"{GPU_KIND}=")))


def merged(host_id: str, text: str | None, wanted: tuple[str, ...]) -> str:
    """The file with its GPUs replaced by ``wanted``: its other keys and other kinds of resources kept,
    the key removed when nothing is left in it."""
    data = parsed(host_id, text)
    value = [r for r in data.get(KEY, []) if not str(r).startswith(f"{GPU_KIND}=")] + list(wanted)
    if value:
        data[KEY] = value
    else:
        data.pop(KEY, None)
    return json.dumps(data, indent=2) + "\n"


def digest(text: str | None) -> str:
    return ABSENT if text is None else hashlib.sha256(text.encode()).hexdigest()


def wanted(host: Host) -> tuple[str, ...]:
    return tuple(sorted(host.gpu_resources))


def write_command(host: Host, text: str | None) -> Command:
    gpus = host.gpu_resources
    what = f"{KEY} {json.dumps(list(gpus))}" if gpus else f"no {GPU_KIND} in {KEY}"
    why = f"declare the {host.gpu_count} GPU(s) of {host.host_id} to Swarm" if gpus else f"{host.host_id} has no gpus any more"
    return Command(("bash", "-c", WRITE, "bash", DAEMON_JSON, digest(text)), input=merged(host.host_id, text, gpus).encode(),
                   why=why, shown=f"write {DAEMON_JSON} with {what}, its other keys kept")


def restart_command(ctx: Context, host: Host) -> Command:
    stops = "the hub and the notebooks running on it stop" if host.has("hub") else f"the notebooks running on {host.host_id} stop"
    return replace(cmd("bash", "-c", RESTART, "bash", netguard.container_name(ctx.layout),
                       why=f"restart the Docker engine of {host.host_id} (dockerd reads {KEY} only at start): {stops}"), timeout=300)


def ready_command(host: Host, node_id: str) -> Command:
    expected = "".join(f"{r} " for r in wanted(host))
    return replace(sh(NODE_READY, node_id, host.host_id, expected, GPU_KIND,
                      why=f"wait until the node of {host.host_id} is Ready again with its GPUs"), timeout=240)


def plan(ctx: Context, facts: Facts) -> Planned:
    planned, hub = Planned(), ctx.deployment.hub
    for host in ctx.deployment.hosts:
        f = facts[host.host_id]
        want = wanted(host)
        try:
            declared = file_resources(host.host_id, f.daemon_json)
        except DaemonJsonError:
            if not want and not f.engine_gpus:
                continue  # not ours to fix: nothing to declare on this host
            raise
        if declared != want:
            planned.add(host.host_id, write_command(host, f.daemon_json))
        elif f.engine_gpus == want:
            if want:
                planned.ok(host.host_id, f"{host.gpu_count} GPU(s) declared to Swarm")
            continue
        planned.add(host.host_id, restart_command(ctx, host))
        node = f.node_id or placeholder(f"node ID of {host.host_id}")
        # On the hub, in parallel with the restart: it waits for the new resources, so it cannot miss them.
        planned.add(hub.host_id, ready_command(host, node))
    return planned


def expect(ctx: Context, facts: Facts, planned: Planned) -> None:
    for host in ctx.deployment.hosts:
        if any(c.why.startswith("restart the Docker engine") for c in planned.commands.get(host.host_id, [])):
            f = facts[host.host_id]
            f.daemon_json, f.engine_gpus = merged(host.host_id, f.daemon_json, host.gpu_resources), wanted(host)


def check(ctx: Context, facts: Facts) -> list[str]:
    return [f"{h.host_id}: its engine declares {list(facts[h.host_id].engine_gpus) or 'no GPUs'} after the restart, "
            f"not {list(wanted(h))}" for h in ctx.deployment.hosts if facts[h.host_id].engine_gpus != wanted(h)]


PHASE = Phase("GPUs as Swarm generic resources (a change restarts that engine)", plan, expect, check)
