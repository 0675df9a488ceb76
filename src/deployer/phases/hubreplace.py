"""Replacing a running hub (a new image, an upgraded release, a changed configuration) as one step on
the hub host, so a failure can never leave it half done: the previous service's spec and the databases
are kept first, the old hub stopped, `jupyterhub upgrade-db` run on the database when the image changed,
the new hub created and waited on (its answer to /hub/health; a hub that keeps exiting is not waited on
for long); if any of that fails, the new service goes, the databases are copied
back and the previous service is created again from its kept spec (its secrets and configs still exist:
they are removed only after the new hub answers). Kept under ``<state>/upgrades/<time>``, the last five.
"""

from __future__ import annotations

import shlex
from dataclasses import replace

from deployer.config import hubsettings
from deployer.config.hubsettings import HUB_ROOT, Layout
from deployer.hosts.commands import Command
from deployer.phases.facts import state_dir

#: Why the hub service is replaced: the report says the hub was replaced.
REPLACE = "the hub's spec changed"
#: The hub's databases (in its data directory), with SQLite's journal files (identities.sqlite is in
#: WAL mode: a hub that was killed leaves part of it in the -wal file): what a failed upgrade must get back.
DATABASES = tuple(f"{db}{suffix}" for db in hubsettings.DATABASES for suffix in ("", "-wal", "-shm"))
KEEP = 5

#: Creates a service again from a spec `docker service inspect` printed ($1), through the Engine API. A network
#: the spec names by an ID that no longer exists (the notebook network made again, with a new subnet, before the
#: new hub failed) is named by $2 instead, the network of that name now.
RECREATE = """import http.client, json, socket, sys
class Engine(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(self.timeout)
        self.sock.connect("/var/run/docker.sock")
spec = json.load(open(sys.argv[1]))
engine = Engine("localhost", timeout=60)
for network in (spec.get("TaskTemplate") or {}).get("Networks") or []:
    engine.request("GET", "/networks/" + network.get("Target", ""))
    answer = engine.getresponse()
    answer.read()
    if answer.status == 404 and len(sys.argv) > 2:
        network["Target"] = sys.argv[2]
engine.request("POST", "/services/create", json.dumps(spec), {"Content-Type": "application/json"})
answer = engine.getresponse()
text = answer.read().decode(errors="replace")
if answer.status != 201:
    sys.exit(json.loads(text).get("message", text) if text.startswith("{") else text)
"""

# $1 service, $2 data directory, $3 where to keep the previous spec and databases, $4 the new image,
# $5 the hub's HTTPS port, $6 the RECREATE program, $7 a shell command run once the old hub is gone (or
# empty: the notebook network made again), $8 the notebook network's name; then the `docker service create`
# command of the new hub.
SCRIPT = r"""set -u
svc=$1 data=$2 keep=$3 image=$4 port=$5 recreate=$6 between=$7 network=$8; shift 8
gone() { for i in $(seq 120); do [ -z "$(docker ps -q --filter "label=com.docker.swarm.service.name=$svc")" ] && return 0; sleep 0.5; done
         echo "the old $svc container did not stop within 60 s" >&2; return 1; }
healthy() { curl -ksf -o /dev/null "https://127.0.0.1:$port/hub/health" 2>/dev/null || python3 -c \
  "import ssl, sys, urllib.request as u; u.urlopen(sys.argv[1], context=ssl._create_unverified_context(), timeout=5)" \
  "https://127.0.0.1:$port/hub/health" 2>/dev/null; }
old=$(docker ps -q --filter "label=com.docker.swarm.service.name=$svc" | head -n 1)
old_image=$([ -z "$old" ] || docker container inspect --format '{{.Image}}' "$old" 2>/dev/null)
new_image=$(docker image inspect --format '{{.Id}}' "$image") || exit 1
umask 077
dir="$keep/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$dir" || exit 1
docker service inspect --format '{{json .Spec}}' "$svc" >"$dir/hub-service.json" || { echo "cannot read the running $svc service" >&2; exit 1; }
docker service rm "$svc" >/dev/null && gone || exit 1
for db in DATABASES; do [ ! -f "$data/$db" ] || cp -p "$data/$db" "$dir/$db" || exit 1; done
back() {  # $1 what failed (one line, with its last error line), $2 more of its output (shown first)
  [ -z "${2:-}" ] || printf '%s\n' "$2" >&2
  echo "$1" >&2
  docker service rm "$svc" >/dev/null 2>&1; gone
  for db in DATABASES; do if [ -f "$dir/$db" ]; then cp -p "$dir/$db" "$data/$db"; else rm -f "$data/$db"; fi; done
  # (retried: the removed service's name and ports may be held for a moment while the swarm lets it go)
  for i in $(seq 30); do
    if why=$(python3 -c "$recreate" "$dir/hub-service.json" "$network" 2>&1 >/dev/null); then
      echo "the previous hub service and its database are back (kept in $dir); the deployment is as it was before this run" >&2
      exit 1
    fi
    sleep 1
  done
  echo "the previous hub could not be started again ($why): its spec and database are kept in $dir" >&2
  exit 1
}
if [ "$old_image" != "$new_image" ] && [ -f "$data/jupyterhub.sqlite" ]; then
  docker run --rm --network none -v "$data:HUB_ROOT/data" --entrypoint jupyterhub "$image" upgrade-db \
         --JupyterHub.db_url=sqlite:///HUB_ROOT/data/jupyterhub.sqlite >"$dir/upgrade-db.log" 2>&1 \
    || back "jupyterhub upgrade-db failed on the hub's database with $image: $(tail -n 1 "$dir/upgrade-db.log")" "$(tail -n 15 "$dir/upgrade-db.log")"
fi
[ -z "$between" ] || sh -c "$between" || back "the step before the new hub failed (above)"
"$@" >/dev/null || back "the new hub service could not be created"
for i in $(seq 120); do
  if healthy; then ls -1d "$keep"/*/ | head -n -KEEP | xargs -r rm -rf; exit 0; fi
  # A hub that exits at start (bad configuration, a database it cannot read) is restarted by Swarm: twice is enough.
  [ "$(docker service ps -q --filter desired-state=shutdown "$svc" | wc -l)" -lt 2 ] || break
  sleep 1
done
logs=$(timeout 20 docker service logs --raw --tail 15 "$svc" 2>&1 | grep -v '^[[:space:]]*$')
back "the new hub did not answer https://127.0.0.1:$port/hub/health (within 120 s, or it kept exiting): $(printf '%s\n' "$logs" | tail -n 1)" "$logs"
""".replace("DATABASES", " ".join(DATABASES)).replace("HUB_ROOT", HUB_ROOT).replace("KEEP", str(KEEP))


def upgrades_dir(layout: Layout) -> str:
    return f"{state_dir(layout)}/upgrades"


def replace_command(layout: Layout, create: Command, image: str, https_port: int, between: Command | None = None) -> Command:
    """The running hub replaced by the service ``create`` makes, or put back as it was; ``between`` runs
    once the old hub is gone, before the new one is made (the notebook network made again)."""
    step = f"{between.why} (stop the relay and remove the old network first), " if between else ""
    return replace(Command(("sh", "-c", SCRIPT, "sh", layout.hub_service, layout.data_dir, upgrades_dir(layout), image, str(https_port),
                            RECREATE, shlex.join(between.argv) if between else "", layout.network, *create.argv),
                           why=REPLACE,
                           shown=f"replace {layout.hub_service}: keep its spec and databases in {upgrades_dir(layout)}/<time>, stop it, "
                                 f"jupyterhub upgrade-db (a new image), {step}{' '.join(create.argv[:3])} ... {image} ...; "
                                 "the previous hub and databases back if the new one fails"),
                   timeout=330 + (between.timeout if between and between.timeout else 0))
