"""What the benchmarks run against, set up and torn down: the tenant simulator, our hub, the stock
hub, and the floor's network and prober. Every Docker object and directory is named ``bench-*`` or ``jupyterhub-bench-sim*`` (ours: the deployment jupyterhub.bench.sim).

* ours:  Deployer's hub (TenantSwarmSpawner, Agave login through the tenant simulator over HTTPS,
         TAS uid/gid, the swarm tier's settings), deployed from a deployment directory with
         deployer.hubphase's own steps, published on 18443/18080.
* stock: the same hub image running dockerspawner's SwarmSpawner with a shared-password login
         (benchmarks/stock_jupyterhub_config.py), published on 19443/19080.
* floor: ``docker service create`` of the notebook image with ours' container spec, probed over an
         attachable overlay network by a container on it (benchmarks/probe.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import html
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin

import docker as dockersdk
import httpx
import yaml

from deployer.config.discovery import discover
from deployer.config.hubsettings import Layout
from deployer.config.loader import Deployment, load
from deployer.hosts.executor import LocalExecutor
from deployer.hosts.ssh import executor_for
from deployer.phases import teardown, tls
from deployer.rollout import Report, Rollout

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from sim.tenant import complete_login
from sim.tls import server_tls

HUB_IMAGE = "deployer/jupyterhub:0.2.0"
USER_IMAGE = "deployer/jupyteruser:0.2.0"
NOTEBOOK_PORT = 8888
MEMORY_LIMIT = "1G"
WORKER_CONSTRAINT = "node.labels.deployer.worker==true"

OURS = Layout("jupyterhub-bench-sim")  # of jupyterhub.bench.sim: ...-hub, ...-net, ...-nb-<user>, /srv/deployer/jupyterhub-bench-sim
OURS_PORTS = (18443, 18080)
#: The profiles measurement's second deployment of ours (jupyterhub.bench.sim-profiles: the same files plus
#: notebook_profiles), deployed only for it; its names start with OURS.name too.
PROFILED = Layout("jupyterhub-bench-sim-profiles")
PROFILED_PORTS = (18444, 18081)
#: The scale measurement's deployment of ours (jupyterhub.bench.sim-scale: the same files, the stand-in
#: notebook image), deployed only for it; its names start with OURS.name too.
SCALED = Layout("jupyterhub-bench-sim-scale")
SCALED_PORTS = (18445, 18082)
#: The scale measurement's stand-in for the notebook (benchmarks/standin), built from USER_IMAGE by the benchmark.
STANDIN_IMAGE = "bench-standin:0.2.0"
STOCK_HUB, STOCK_NET, STOCK_NB, STOCK_ROOT = "bench-stock-hub", "bench-stock-net", "bench-stock-nb", "/srv/deployer/bench-stock"
STOCK_PORTS = (19443, 19080)
FLOOR_NET, FLOOR_PROBE, FLOOR_NB, FLOOR_ROOT = "bench-floor-net", "bench-floor-probe", "bench-floor-nb", "/srv/deployer/bench-floor"
#: Prefixes of everything the benchmarks make (and remove): nothing else is touched.
MINE = (OURS.name, "bench-stock", "bench-floor")
DIRS = (f"/srv/deployer/{OURS.name}", f"/srv/deployer/{PROFILED.name}", f"/srv/deployer/{SCALED.name}", STOCK_ROOT, FLOOR_ROOT)

TENANT = "sim"
CLIENT = ("bench-hub", "bench-client-secret-xyzzy")
PROFILED_CLIENT = ("bench-hub-profiles", "bench-client-secret-profiles-xyzzy")  # the second deployment's OAuth client
SCALED_CLIENT = ("bench-hub-scale", "bench-client-secret-scale-xyzzy")  # the scale deployment's
TAS_ROLE = ("bench-tas-role", "bench-tas-secret-plugh")
STOCK_PASSWORD = "bench-shared-password"


@dataclass(frozen=True)
class User:
    name: str
    password: str
    uid: int
    gid: int


def users(count: int) -> list[User]:
    return [User(f"bench{i:03d}", f"pw-bench{i:03d}", 5000 + i, 6000 + i) for i in range(1, count + 1)]


def log(message: str) -> None:
    print(f"  {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


# --- docker ------------------------------------------------------------------------------------


def docker(*args: str, check: bool = True, timeout: float = 300, input: bytes | None = None) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, timeout=timeout, input=input, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:4])} ... failed: {result.stderr.decode(errors='replace').strip()[-500:]}")
    return result.stdout.decode(errors="replace").strip()


def names(kind: str, prefix: str | tuple[str, ...] = MINE) -> list[str]:
    listing = docker(kind, "ls", *(["-a"] if kind == "container" else []), "--format", "{{.Names}}" if kind == "container" else "{{.Name}}", check=False)
    return sorted(n for n in listing.splitlines() if n.startswith(prefix))


def task_containers(prefix: str | tuple[str, ...], running_only: bool = False) -> list[str]:
    """Containers of services whose name starts with ``prefix`` (running ones, or all)."""
    listing = docker("ps", *([] if running_only else ["-a"]), "--format", '{{.Label "com.docker.swarm.service.name"}}', check=False)
    return [n for n in listing.splitlines() if n.startswith(prefix)]


def wait_gone(prefix: str | tuple[str, ...], timeout: float = 120, running_only: bool = False) -> None:
    """Until no service named ``prefix``* is left, and no container of one (none running, with
    ``running_only``: the swarm deletes exited task containers some seconds later, cheaply)."""
    deadline = time.monotonic() + timeout
    while (left := len(names("service", prefix)) + len(task_containers(prefix, running_only))):
        if time.monotonic() > deadline:
            raise RuntimeError(f"services or containers {prefix}* still there after {timeout:.0f} s")
        time.sleep(0.2 if left < 50 else 1)  # (listing hundreds is not free)


def remove_services(prefix: str | tuple[str, ...], running_only: bool = False) -> None:
    services = names("service", prefix)
    for i in range(0, len(services), 200):
        docker("service", "rm", *services[i:i + 200], check=False)
    wait_gone(prefix, 120 + 0.5 * len(services), running_only=running_only)  # (the scale measurement leaves hundreds)


def remove_everything() -> None:
    """Every service, container, secret, config and network the benchmarks make (bench-ours*,
    bench-stock*, bench-floor*), and their directories. Also run first, for a killed run's leftovers."""
    for container in names("container", FLOOR_PROBE):
        docker("rm", "-f", container, check=False)
    remove_services(MINE)
    for layout in (OURS, PROFILED, SCALED):
        teardown.remove(layout, LocalExecutor())  # its sidecars, secrets, configs and network
    deadline = time.monotonic() + 60
    while True:
        left = []
        for kind in ("secret", "config", "network"):
            found = names(kind)
            if found:
                docker(kind, "rm", *found, check=False)
            left += names(kind)
        if not left:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"could not remove {', '.join(left)}")
        time.sleep(1)
    for directory in DIRS:
        shutil.rmtree(directory, ignore_errors=True)
    docker("image", "rm", STANDIN_IMAGE, check=False)  # (built by the scale measurement; no container uses it any more)


def gateway_ip() -> str:
    """This machine's address on the swarm's gateway bridge: reachable from here and from containers."""
    return docker("network", "inspect", "docker_gwbridge", "--format", "{{(index .IPAM.Config 0).Gateway}}")


def parse_time(stamp: str) -> float:
    """Docker's RFC 3339 timestamps (nanoseconds, Z or offset) as epoch seconds."""
    stamp = stamp.strip().replace("Z", "+00:00")
    if "." in stamp:
        head, rest = stamp.split(".", 1)
        digits = "".join(ch for ch in rest if ch.isdigit())
        zone = rest[len(digits):]
        stamp = f"{head}.{digits[:6].ljust(6, '0')}{zone}"
    return dt.datetime.fromisoformat(stamp).timestamp()


# --- the hubs ----------------------------------------------------------------------------------


@dataclass
class Hub:
    kind: str  # "ours" or "stock"
    url: str
    service: str
    notebook_prefix: str
    tokens: dict[str, str] = field(default_factory=dict)  # user name -> API token of that user

    def notebook(self, user: str) -> str:
        return f"{self.notebook_prefix}-{user}"


def ours_site(directory: Path, ca_pem: str, agave_url: str, tas_url: str, *, scope_tenant: str = TENANT, port: int = OURS_PORTS[0],
              client: tuple[str, str] = CLIENT, extra: dict | None = None) -> Deployment:
    """A deployment directory like the swarm tier's (tests/swarm/conftest.py), for ours (Layout OURS).

    With ``scope_tenant`` (the deployment jupyterhub.bench.<scope_tenant>, still of the tenant sim),
    ``port``, ``client`` and ``extra`` settings: a second deployment of the same, side by side (PROFILED)."""
    share = Layout(f"jupyterhub-bench-{scope_tenant}").share_dir
    (directory / "extras").mkdir(parents=True)
    (directory / "extras" / "tenant-ca.pem").write_text(ca_pem)
    scope = f"jupyterhub.bench.{scope_tenant}"
    (directory / "site.hosts").write_text(yaml.safe_dump({scope: {"hosts": [{"host_id": "local", "ssh_host": "127.0.0.1", "roles": ["hub", "worker"]}]}}))
    (directory / "site.configs").write_text(yaml.safe_dump({scope: {
        "tenant": TENANT, "tenant_type": "agave",
        "jupyterhub_tenant_base_url": agave_url,
        "tenant_ca_bundle": "tenant-ca.pem",
        "tas_base_url": tas_url,
        "jupyterhub_host": f"127.0.0.1:{port}",
        "jupyterhub_oauth_client_id": client[0],
        "jupyterhub_image": HUB_IMAGE,
        "jupyter_user_image": USER_IMAGE,
        "use_tas_uid": True, "use_tas_gid": True, "tas_role_account": TAS_ROLE[0],
        "volume_mounts": [f"{share}/data/{{tenant_id}}/{{username}}:/home/jupyter/permanent:rw", f"{share}/shared:/home/jupyter/shared:ro"],
        "notebook_memory_limit": MEMORY_LIMIT, "notebook_offer_lab": True, "cull_idle_notebook_timeout": 3600,
        **(extra or {}),
    }}))
    passwords = directory / "site.passwords"
    passwords.write_text(yaml.safe_dump({scope: {"jupyterhub_oauth_client_secret": client[1], "tas_role_pass": TAS_ROLE[1]}}))
    os.chmod(passwords, 0o600)
    return load(discover(directory), "jupyterhub", "bench", scope_tenant).deployments[0]


def deploy_ours(deployment: Deployment, layout: Layout = OURS, ports: tuple[int, int] = OURS_PORTS, kind: str = "ours") -> Hub:
    """`deployer deploy` itself (the one Rollout, this machine's local executor), with one difference:
    the hub is published on 18443/18080 (PROFILED: 18444/18081, SCALED: 18445/18082) instead of 443/80
    (inside its container it is on 443 and 80)."""
    rollout(deployment, ports, "deploy")
    return Hub(kind, f"https://127.0.0.1:{ports[0]}", layout.hub_service, layout.notebook_prefix)


def rollout(deployment: Deployment, ports: tuple[int, int], action: str) -> Report:
    """`deployer deploy` (action "deploy") or `deployer update` ("update") of ``deployment``, as deploy_ours."""
    executors = {h.host_id: executor_for(h, deployment) for h in deployment.hosts}
    run = Rollout(deployment, executors, action, https_port=ports[0], http_port=ports[1])
    return run.deploy() if action == "deploy" else run.update()


def build_standin() -> str:
    """The scale measurement's stand-in notebook image (benchmarks/standin), FROM USER_IMAGE; its ID."""
    context = Path(__file__).with_name("standin")
    result = subprocess.run(["docker", "build", "--quiet", "--force-rm", "--build-arg", f"USER_IMAGE={USER_IMAGE}", "-t", STANDIN_IMAGE, str(context)],
                            capture_output=True, text=True, timeout=600, check=False, env={**os.environ, "DOCKER_BUILDKIT": "0"})  # as scripts/build-images
    if result.returncode != 0:
        raise RuntimeError(f"building {STANDIN_IMAGE} failed: {result.stderr.strip()[-1000:]}")
    return docker("image", "inspect", "--format", "{{.Id}}", STANDIN_IMAGE)


def stock_standin(image: str | None) -> None:
    """The stock hub spawns ``image`` instead of USER_IMAGE from now on (None: USER_IMAGE again); its
    configuration reads the file at every spawn (benchmarks/stock_jupyterhub_config.py)."""
    path = Path(STOCK_ROOT) / "etc" / "standin-image"
    if image is None:
        path.unlink(missing_ok=True)
    else:
        path.write_text(image + "\n")
        os.chmod(path, 0o600)


def start_stock(workdir: Path, user_names: list[str]) -> Hub:
    """The stock hub's service (not yet waited for)."""
    etc = Path(STOCK_ROOT) / "etc"
    share = f"{STOCK_ROOT}/share"
    for directory in (etc, Path(STOCK_ROOT) / "hub-data", Path(share) / "shared"):
        directory.mkdir(parents=True, exist_ok=True)
    os.chmod(etc, 0o700)
    for name in user_names:  # the stock spawner needs every bind source to exist
        path = Path(share) / "data" / name
        path.mkdir(parents=True, exist_ok=True)
        os.chown(path, 1000, 100)
    cert, key = tls.self_signed("127.0.0.1")
    (etc / "cert.pem").write_text(cert)
    (etc / "key.pem").write_text(key)
    (etc / "password").write_text(STOCK_PASSWORD)
    shutil.copy(Path(__file__).with_name("stock_jupyterhub_config.py"), etc / "jupyterhub_config.py")
    for path in etc.iterdir():
        os.chmod(path, 0o600)
    docker("network", "create", "--driver", "overlay", "--attachable", STOCK_NET)
    docker(
        "service", "create", "--detach", "--name", STOCK_HUB,
        "--constraint", "node.labels.deployer.hub==true", "--network", STOCK_NET, "--endpoint-mode", "dnsrr",
        "--publish", f"published={STOCK_PORTS[0]},target=443,mode=host",
        "--publish", f"published={STOCK_PORTS[1]},target=80,mode=host",
        "--mount", "type=bind,src=/var/run/docker.sock,dst=/var/run/docker.sock",
        "--mount", f"type=bind,src={STOCK_ROOT}/hub-data,dst=/srv/jupyterhub/data",
        "--mount", f"type=bind,src={etc},dst=/srv/jupyterhub/etc,readonly",
        "--env", f"BENCH_PUBLIC_HTTPS_PORT={STOCK_PORTS[0]}", "--env", f"BENCH_HUB_SERVICE={STOCK_HUB}",
        "--env", f"BENCH_USER_IMAGE={USER_IMAGE}", "--env", f"BENCH_NOTEBOOK_PREFIX={STOCK_NB}",
        "--env", f"BENCH_NETWORK={STOCK_NET}", "--env", f"BENCH_SHARE={share}",
        "--restart-condition", "any", "--restart-delay", "3s",
        HUB_IMAGE, "jupyterhub", "-f", "/srv/jupyterhub/etc/jupyterhub_config.py",
    )
    return Hub("stock", f"https://127.0.0.1:{STOCK_PORTS[0]}", STOCK_HUB, STOCK_NB)


def wait_healthy(hub: Hub, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{hub.url}/hub/health", verify=False, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    tail = docker("service", "logs", "--tail", "30", hub.service, check=False)
    raise RuntimeError(f"the {hub.kind} hub did not answer at {hub.url} within {timeout:.0f} s:\n{tail}")


# --- logins and API tokens ---------------------------------------------------------------------


def _xsrf(browser: httpx.Client) -> str:
    browser.get("/hub/home")  # sets the _xsrf cookie
    return next((c.value for c in browser.cookies.jar if c.name == "_xsrf"), "")


def _new_token(browser: httpx.Client, user: str) -> str:
    """An API token of the logged-in user, made as the hub's token page makes it (session + XSRF)."""
    response = browser.post(f"/hub/api/users/{user}/tokens", json={"note": "benchmark", "expires_in": 6 * 3600},
                            headers={"X-XSRFToken": _xsrf(browser)})
    response.raise_for_status()
    return response.json()["token"]


def _tenant_login(browser: httpx.Client, hub: Hub, user: User) -> None:
    authorize = browser.get("/hub/oauth_login").headers["location"]
    with httpx.Client(verify=False, timeout=60) as idp:
        callback = complete_login(idp, authorize, user.name, user.password)
    answer = browser.get(callback)
    if answer.status_code >= 400:
        raise RuntimeError(f"login of {user.name} at the {hub.kind} hub failed: HTTP {answer.status_code}")


def login_ours(hub: Hub, user: User) -> str:
    """The tenant login of the swarm tier (tests/swarm/test_notebooks.py: http_login), then a token."""
    with httpx.Client(base_url=hub.url, verify=False, follow_redirects=False, timeout=60) as browser:
        _tenant_login(browser, hub, user)
        return _new_token(browser, user.name)


def login_browser(hub: Hub, user: User) -> httpx.Cookies:
    """The same login, keeping the browser's cookies (the hub's session, its _xsrf cookie) for the
    hub's pages; the user's API token goes to ``hub.tokens`` (to stop the server afterwards)."""
    with httpx.Client(base_url=hub.url, verify=False, follow_redirects=False, timeout=60) as browser:
        _tenant_login(browser, hub, user)
        hub.tokens[user.name] = _new_token(browser, user.name)
        return httpx.Cookies(browser.cookies)


def login_stock(hub: Hub, user: User) -> str:
    with httpx.Client(base_url=hub.url, verify=False, follow_redirects=False, timeout=60) as browser:
        page = browser.get("/hub/login")
        xsrf = next((c.value for c in browser.cookies.jar if c.name == "_xsrf"), "")
        answer = browser.post("/hub/login", data={"username": user.name, "password": STOCK_PASSWORD, "_xsrf": xsrf})
        if answer.status_code != 302:
            raise RuntimeError(f"stock login of {user.name} failed: HTTP {answer.status_code} {page.status_code}")
        return _new_token(browser, user.name)


def login_all(hub: Hub, people: list[User]) -> None:
    login = login_ours if hub.kind == "ours" else login_stock
    todo = [u for u in people if u.name not in hub.tokens]
    with ThreadPoolExecutor(6) as pool:
        for user, token in zip(todo, pool.map(lambda u: login(hub, u), todo)):
            hub.tokens[user.name] = token


# --- spawning through a hub's REST API ------------------------------------------------------------


@dataclass
class Spawned:
    user: str
    seconds: float | None  # from the burst's start to the notebook answering through the proxy
    error: str = ""
    end: float = 0.0  # epoch seconds when it answered


async def spawn_via_api(client: httpx.AsyncClient, hub: Hub, user: str, start: float, timeout: float = 300) -> Spawned:
    """POST /hub/api/users/<user>/server with the user's token, follow the progress events the spawn
    page shows, then GET /user/<user>/api through the proxy until it answers 200."""
    headers = {"Authorization": f"token {hub.tokens[user]}"}
    deadline = time.monotonic() + timeout
    try:
        response = await client.post(f"{hub.url}/hub/api/users/{user}/server", headers=headers, timeout=timeout)
        if response.status_code not in (201, 202):
            return Spawned(user, None, f"POST server: HTTP {response.status_code} {response.text[:200]}")
        if response.status_code == 202:
            failure = await _follow_progress(client, hub, user, headers, deadline)
            if failure:
                return Spawned(user, None, failure)
        while time.monotonic() < deadline:
            answer = await client.get(f"{hub.url}/user/{user}/api", headers=headers, timeout=30)
            if answer.status_code == 200:
                end = time.time()
                return Spawned(user, time.monotonic() - start, end=end)
            await asyncio.sleep(0.05)
        return Spawned(user, None, f"no answer through the proxy within {timeout:.0f} s")
    except httpx.HTTPError as exc:
        return Spawned(user, None, f"{type(exc).__name__}: {exc}")


async def spawn_via_form(client: httpx.AsyncClient, hub: Hub, user: str, profile: str, start: float, offered: list[str],
                         timeout: float = 300) -> tuple[Spawned, dict[str, float]]:
    """As a browser does it, with ``client`` carrying the user's session cookies: GET /hub/spawn/<user>
    (the form, with the profiles this user may use), POST the form to its action (multipart, as the
    page's form is; the action carries JupyterHub's _xsrf, the _xsrf cookie goes with it) choosing
    ``profile``, GET the spawn-pending page it redirects to; then as ``spawn_via_api``: the progress
    events until ready, GET /user/<user>/api with the user's token until it answers 200 through the
    proxy. The form must offer exactly the profiles ``offered``. Also returns when each step was
    done (seconds after ``start``)."""
    headers = {"Authorization": f"token {hub.tokens[user]}"}
    deadline = time.monotonic() + timeout
    marks: dict[str, float] = {}
    try:
        page = await client.get(f"{hub.url}/hub/spawn/{user}", timeout=timeout)
        marks["form page loaded (GET /hub/spawn/<user>)"] = time.monotonic() - start
        action = re.search(r'<form[^>]*\saction="([^"]*)"', page.text)
        shown = [html.unescape(v) for v in re.findall(r'<input[^>]*type="radio" name="profile"[^>]*value="([^"]*)"', page.text)]
        if page.status_code != 200 or action is None or shown != offered or profile not in shown:
            return Spawned(user, None, f"GET /hub/spawn/{user}: HTTP {page.status_code}, profiles offered: {shown}, expected {offered}"), marks
        posted = await client.post(urljoin(hub.url + "/", html.unescape(action.group(1))), files={"profile": (None, profile)}, timeout=timeout)
        marks["form posted (its redirect)"] = time.monotonic() - start
        if posted.status_code != 302:
            return Spawned(user, None, f"POST /hub/spawn/{user}: HTTP {posted.status_code} {_page_error(posted.text)}"), marks
        pending = await client.get(urljoin(hub.url + "/", posted.headers["location"]), timeout=timeout)
        marks["spawn-pending page loaded"] = time.monotonic() - start
        if pending.status_code == 200:  # the page that shows the progress: follow it as its script does
            failure = await _follow_progress(client, hub, user, headers, deadline)
            if failure:
                return Spawned(user, None, failure), marks
        elif pending.status_code != 302:  # (302: ready already, on to /user/<user>/)
            return Spawned(user, None, f"GET {posted.headers['location']}: HTTP {pending.status_code}"), marks
        marks["hub: ready (progress event)"] = time.monotonic() - start
        while time.monotonic() < deadline:
            answer = await client.get(f"{hub.url}/user/{user}/api", headers=headers, timeout=30)
            if answer.status_code == 200:
                end = time.time()
                marks["answers through the proxy"] = time.monotonic() - start
                return Spawned(user, time.monotonic() - start, end=end), marks
            await asyncio.sleep(0.05)
        return Spawned(user, None, f"no answer through the proxy within {timeout:.0f} s"), marks
    except httpx.HTTPError as exc:
        return Spawned(user, None, f"{type(exc).__name__}: {exc}"), marks


def _page_error(text: str) -> str:
    """The message of a hub error page (or the spawn form's error line), shortened."""
    found = re.search(r'class="[^"]*(?:spawn-error-msg|error)[^"]*"[^>]*>(.*?)</', text, re.DOTALL)
    return re.sub(r"\s+", " ", html.unescape(found.group(1))).strip()[:300] if found else text[:200]


async def _follow_progress(client: httpx.AsyncClient, hub: Hub, user: str, headers: dict, deadline: float) -> str:
    """'' once the hub says ready, else the failure message."""
    url = f"{hub.url}/hub/api/users/{user}/server/progress"
    while time.monotonic() < deadline:
        async with client.stream("GET", url, headers=headers, timeout=httpx.Timeout(30, read=None)) as stream:
            if stream.status_code == 400:  # not pending (any more): ready, or gone after a failure
                model = (await client.get(f"{hub.url}/hub/api/users/{user}", headers=headers, timeout=30)).json()
                server = (model.get("servers") or {}).get("")
                if server and server.get("ready"):
                    return ""
                if not server:
                    return "spawn failed: the server is gone (see the hub's log)"
                await asyncio.sleep(0.2)  # still pending without progress yet
                continue
            if stream.status_code != 200:
                return f"progress: HTTP {stream.status_code}"
            async for line in stream.aiter_lines():
                if not line.startswith("data:"):
                    continue
                event = json.loads(line[5:])
                if event.get("ready"):
                    return ""
                if event.get("failed"):
                    return f"spawn failed: {event.get('message', '')[:300]}"
    return "no ready event before the deadline"


async def stop_via_api(client: httpx.AsyncClient, hub: Hub, user: str) -> None:
    headers = {"Authorization": f"token {hub.tokens[user]}"}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        response = await client.delete(f"{hub.url}/hub/api/users/{user}/server", headers=headers, timeout=120)
        if response.status_code in (202, 204):
            break
        if response.status_code == 400 and "not running" in response.text:
            break
        await asyncio.sleep(0.5)  # e.g. still pending: try again
    while time.monotonic() < deadline:  # until the hub has let go of it
        model = (await client.get(f"{hub.url}/hub/api/users/{user}", headers=headers, timeout=30)).json()
        if not model.get("servers"):
            return
        await asyncio.sleep(0.3)
    raise RuntimeError(f"the {hub.kind} hub did not stop {user}'s server within 120 s")


async def stop_all(hub: Hub, user_names: list[str]) -> None:
    async with httpx.AsyncClient(verify=False) as client:
        await asyncio.gather(*(stop_via_api(client, hub, u) for u in user_names))
    await asyncio.to_thread(wait_gone, hub.notebook_prefix + "-", 120, True)


# --- the floor -----------------------------------------------------------------------------------


class Floor:
    """``docker service create`` of the notebook image with ours' container spec, no hub."""

    def __init__(self) -> None:
        docker("network", "create", "--driver", "overlay", "--attachable", FLOOR_NET)
        docker("run", "-d", "--name", FLOOR_PROBE, "--network", FLOOR_NET,
               "--mount", f"type=bind,src={Path(__file__).with_name('probe.py')},dst=/probe.py,readonly",
               "--entrypoint", "python3", HUB_IMAGE, "/probe.py", "serve")
        self.api_url = f"http://{FLOOR_PROBE}:8081/hub/api"
        self.api = dockersdk.APIClient()  # as the spawners talk to the engine

    def argv(self, user: User, image: str = USER_IMAGE) -> list[str]:
        """The service as ours creates it (TenantSwarmSpawner.create_object): same image, command,
        user, mounts, memory limit, placement, network, endpoint mode and restart policy, and
        jupyterhub-singleuser's environment pointing at the stand-in hub API."""
        share = f"{FLOOR_ROOT}/share"
        prefix = f"/user/{user.name}/"
        token = secrets.token_hex(16)
        scopes = json.dumps([f"access:servers!server={user.name}/", f"access:servers!user={user.name}"])
        env = {  # what ours sets (docker service inspect of one of its notebooks), hub URLs -> the stand-in
            "JUPYTERHUB_API_TOKEN": token, "JPY_API_TOKEN": token, "JUPYTERHUB_CLIENT_ID": f"jupyterhub-user-{user.name}",
            "JUPYTERHUB_COOKIE_HOST_PREFIX_ENABLED": "0", "JUPYTERHUB_HOST": "", "JUPYTERHUB_OAUTH_CALLBACK_URL": f"{prefix}oauth_callback",
            "JUPYTERHUB_OAUTH_SCOPES": scopes, "JUPYTERHUB_OAUTH_ACCESS_SCOPES": scopes, "JUPYTERHUB_OAUTH_CLIENT_ALLOWED_SCOPES": "[]",
            "JUPYTERHUB_USER": user.name, "JUPYTERHUB_SERVER_NAME": "", "JUPYTERHUB_API_URL": self.api_url,
            "JUPYTERHUB_ACTIVITY_URL": f"{self.api_url}/users/{user.name}/activity", "JUPYTERHUB_BASE_URL": "/",
            "JUPYTERHUB_SERVICE_PREFIX": prefix, "JUPYTERHUB_SERVICE_URL": f"http://0.0.0.0:{NOTEBOOK_PORT}{prefix}",
            "JUPYTERHUB_PUBLIC_URL": "", "JUPYTERHUB_PUBLIC_HUB_URL": "", "MEM_LIMIT": str(1024**3), "JUPYTERHUB_DEFAULT_URL": "/lab",
            "NB_UID": str(user.uid), "NB_GID": str(user.gid), "TAS_HOMEDIRECTORY": f"05/{user.uid}/{user.name}",
            "JUPYTER_IMAGE_SPEC": image, "HOME": "/home/jupyter", "AGAVE_CACHE_DIR": "/home/jupyter/.agave",
            "TAPIS_TOKEN_FILE": "/home/jupyter/.agave/tapis.json",
        }
        # --no-resolve-image: like the spawners' API calls, no registry lookup of the image's digest
        # (without it, 20 concurrent creates take 5 s here, failing to reach a registry)
        argv = ["service", "create", "--detach", "--quiet", "--no-resolve-image", "--name", f"{FLOOR_NB}-{user.name}", "--network", FLOOR_NET,
                "--endpoint-mode", "dnsrr", "--constraint", WORKER_CONSTRAINT, "--limit-memory", MEMORY_LIMIT,
                "--restart-condition", "none", "--user", f"{user.uid}:{user.gid}",
                "--mount", f"type=bind,src={share}/data/{user.name},dst=/home/jupyter/permanent",
                "--mount", f"type=bind,src={share}/shared,dst=/home/jupyter/shared,readonly",
                "--mount", f"type=bind,src={share}/tokens/{user.name},dst=/home/jupyter/.agave"]
        for key, value in env.items():
            argv += ["--env", f"{key}={value}"]
        return argv + [image, "jupyterhub-singleuser"]

    def prepare(self, people: list[User]) -> None:
        """The per-user directories ours' spawner makes (owned by the user), made beforehand."""
        share = Path(FLOOR_ROOT) / "share"
        (share / "shared").mkdir(parents=True, exist_ok=True)
        for user in people:
            for path in (share / "data" / user.name, share / "tokens" / user.name):
                path.mkdir(parents=True, exist_ok=True)
                os.chown(path, user.uid, user.gid)

    def _addresses(self, service_ids: dict[str, str]) -> dict[str, str]:
        """Service id -> its task's address on the floor network, for the tasks that have one."""
        found = {}
        for task in self.api.tasks(filters={"service": list(service_ids)}):
            for attachment in task.get("NetworksAttachments") or []:
                if attachment["Network"]["Spec"]["Name"] == FLOOR_NET and attachment.get("Addresses"):
                    found[task["ServiceID"]] = attachment["Addresses"][0].split("/")[0]
        return found

    async def spawn(self, people: list[User], timeout: float = 300, image: str = USER_IMAGE) -> tuple[list[Spawned], float]:
        """All services created at once; (results, start in epoch seconds).

        The prober polls each task's address (the swarm assigns it when it creates the task) rather
        than the service name: a name that does not exist yet sends every lookup through Docker's
        embedded DNS to the outside resolver, and 20 names polled every 50 ms slowed the engine
        itself (containers started 10 s later than the hubs' did)."""
        self.prepare(people)
        probe = await asyncio.create_subprocess_exec(
            "docker", "exec", "-i", FLOOR_PROBE, "python3", "/probe.py", "wait", str(timeout),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        assert probe.stdin is not None and probe.stdout is not None and probe.stderr is not None
        start_wall = time.time()
        creates = [await asyncio.create_subprocess_exec("docker", *self.argv(u, image), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
                   for u in people]
        outcomes = await asyncio.gather(*(c.communicate() for c in creates))
        errors = {u.name: "docker service create: " + err.decode()[-300:] for u, c, (_, err) in zip(people, creates, outcomes) if c.returncode != 0}
        service_ids = {out.decode().strip(): u for u, c, (out, _) in zip(people, creates, outcomes) if c.returncode == 0}
        urls: dict[str, str] = {}  # user -> url
        deadline = time.monotonic() + 60
        while len(urls) < len(service_ids) and time.monotonic() < deadline:
            for service_id, address in (await asyncio.to_thread(self._addresses, service_ids)).items():
                user = service_ids[service_id]
                if user.name not in urls:
                    urls[user.name] = f"http://{address}:{NOTEBOOK_PORT}/user/{user.name}/api"
                    probe.stdin.write(urls[user.name].encode() + b"\n")
                    await probe.stdin.drain()
            await asyncio.sleep(0.1)
        probe.stdin.close()
        output, problems = await probe.communicate()
        if probe.returncode != 0:
            raise RuntimeError("the floor's prober failed: " + problems.decode()[-500:])
        found = json.loads(output or b"{}")
        results = []
        for user in people:
            when = found.get(urls.get(user.name, ""))
            if user.name in errors:
                results.append(Spawned(user.name, None, errors[user.name]))
            elif user.name not in urls:
                results.append(Spawned(user.name, None, "the swarm gave its task no address within 60 s"))
            elif when is None:
                results.append(Spawned(user.name, None, f"no answer within {timeout:.0f} s"))
            else:
                results.append(Spawned(user.name, when - start_wall, end=when))
        return results, start_wall

    async def stop(self) -> None:
        await asyncio.to_thread(remove_services, FLOOR_NB + "-", True)


# --- the tenant simulator process ------------------------------------------------------------------


class Simulator:
    def __init__(self, workdir: Path, host: str, people: list[User]):
        ca, _, directory = server_tls(host, workdir / "tenant-tls")  # a private CA the hub trusts (tenant_ca_bundle)
        self.ca_pem = ca
        spec = {"host": host, "cert": str(directory / "cert.pem"), "key": str(directory / "key.pem"), "tenant_id": TENANT,
                "clients": [[CLIENT[0], CLIENT[1], f"https://127.0.0.1:{OURS_PORTS[0]}/hub/oauth_callback"],
                            [PROFILED_CLIENT[0], PROFILED_CLIENT[1], f"https://127.0.0.1:{PROFILED_PORTS[0]}/hub/oauth_callback"],
                            [SCALED_CLIENT[0], SCALED_CLIENT[1], f"https://127.0.0.1:{SCALED_PORTS[0]}/hub/oauth_callback"]],
                "tas_role": list(TAS_ROLE), "users": [[u.name, u.password, u.uid, u.gid] for u in people]}
        spec_path = workdir / "sim.json"
        spec_path.write_text(json.dumps(spec))
        self.log = open(workdir / "sim.log", "wb")  # noqa: SIM115 (open as long as the process runs)
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("simserver.py")), str(spec_path)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the tenant simulator did not start: " + (workdir / "sim.log").read_text()[-2000:])
        urls = json.loads(line)
        self.agave_url, self.tas_url = urls["agave"], urls["tas"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


# --- everything together -----------------------------------------------------------------------------


class Rig:
    """Sets everything up on entry, removes all of it on exit (also after a failure or Ctrl-C).

    Every spawn gets a user whose server has never existed (``take``): re-creating a notebook
    service under the name of one removed less than 10 minutes earlier fails in both hubs (see
    docs/benchmarks.md), and the benchmarks measure spawning, not that."""

    def __init__(self, pool: int):
        self.people = users(pool)
        self._next = 0
        self.workdir = Path(tempfile.mkdtemp(prefix="bench-"))
        self.sim: Simulator | None = None
        self.ours: Hub | None = None
        self.stock: Hub | None = None
        self.floor: Floor | None = None

    def __enter__(self) -> Rig:
        try:
            self._setup()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _setup(self) -> None:
        log(f"removing leftovers of earlier runs ({', '.join(p + '*' for p in MINE)})")
        remove_everything()
        ip = gateway_ip()
        log(f"tenant simulator on https://{ip} ({len(self.people)} users)")
        self.sim = Simulator(self.workdir, ip, self.people)
        started = time.monotonic()
        self.stock = start_stock(self.workdir, [u.name for u in self.people])
        deployment = ours_site(self.workdir / "site", self.sim.ca_pem, self.sim.agave_url, self.sim.tas_url)
        self.ours = deploy_ours(deployment)
        self.floor = Floor()
        for hub in (self.ours, self.stock):
            wait_healthy(hub)
        log(f"both hubs answer ({time.monotonic() - started:.0f} s)")

    def deploy_profiled(self, extra: dict) -> Hub:
        """The second deployment of ours (PROFILED): the same deployment files as ours with ``extra``
        settings, its own OAuth client and ports; removed by ``remove_profiled`` (and at the end)."""
        assert self.sim is not None
        started = time.monotonic()
        deployment = ours_site(self.workdir / "site-profiles", self.sim.ca_pem, self.sim.agave_url, self.sim.tas_url,
                               scope_tenant=PROFILED.name.removeprefix("jupyterhub-bench-"), port=PROFILED_PORTS[0],
                               client=PROFILED_CLIENT, extra=extra)
        hub = deploy_ours(deployment, PROFILED, PROFILED_PORTS, "ours with profiles")
        wait_healthy(hub)
        log(f"{PROFILED.name} deployed and answering ({time.monotonic() - started:.0f} s)")
        return hub

    def remove_profiled(self) -> None:
        remove_services(PROFILED.name + "-")
        teardown.remove(PROFILED, LocalExecutor())
        shutil.rmtree(f"/srv/deployer/{PROFILED.name}", ignore_errors=True)

    def scaled_site(self, name: str, extra: dict) -> Deployment:
        """A deployment directory (workdir/<name>) of the scale measurement's deployment (SCALED): the same
        deployment files as ours with ``extra`` settings, its own OAuth client and ports."""
        assert self.sim is not None
        return ours_site(self.workdir / name, self.sim.ca_pem, self.sim.agave_url, self.sim.tas_url,
                         scope_tenant=SCALED.name.removeprefix("jupyterhub-bench-"), port=SCALED_PORTS[0], client=SCALED_CLIENT, extra=extra)

    def deploy_scaled(self, deployment: Deployment) -> Hub:
        """``deployment`` (of ``scaled_site``) deployed (its notebook network as deploy makes it: a /19 unless
        the site sets notebook_network_subnet). Removed by ``remove_scaled`` (and at the end)."""
        started = time.monotonic()
        hub = deploy_ours(deployment, SCALED, SCALED_PORTS, "ours")
        wait_healthy(hub)
        log(f"{SCALED.name} deployed and answering ({time.monotonic() - started:.0f} s)")
        return hub

    def remove_scaled(self) -> None:
        remove_services(SCALED.notebook_prefix + "-")  # (hundreds: before teardown, which waits 60 s at most)
        remove_services(SCALED.name + "-")
        teardown.remove(SCALED, LocalExecutor())
        shutil.rmtree(f"/srv/deployer/{SCALED.name}", ignore_errors=True)

    def fresh(self, count: int) -> list[User]:
        """``count`` users who have not had a server yet, not logged in anywhere (see ``take``)."""
        if self._next + count > len(self.people):
            raise RuntimeError(f"the pool of {len(self.people)} users is used up")
        people = self.people[self._next:self._next + count]
        self._next += count
        return people

    def take(self, count: int) -> list[User]:
        """``count`` users who have not had a server yet, logged in to both hubs with API tokens."""
        people = self.fresh(count)
        for hub in (self.ours, self.stock):
            assert hub is not None
            self.login(hub, people)
        return people

    def login(self, hub: Hub, people: list[User]) -> None:
        missing = [u for u in people if u.name not in hub.tokens]
        if missing:
            started = time.monotonic()
            login_all(hub, missing)
            log(f"{len(missing)} users logged in to the {hub.kind} hub, each with an API token ({time.monotonic() - started:.0f} s)")

    def __exit__(self, *exc: object) -> None:
        log("removing everything the benchmarks made")
        try:
            remove_everything()
        finally:
            if self.sim:
                self.sim.stop()
            shutil.rmtree(self.workdir, ignore_errors=True)
