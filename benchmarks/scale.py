"""8. Scale (issue 22): a thousand users' servers on one deployment.

Ours is a deployment of its own here, jupyterhub.bench.sim-scale (rig.SCALED, on 18445): the same deployment
files, hub image and Rollout as ours, with the stand-in notebook image (benchmarks/standin: the notebook image
with a ~10 MB standard-library HTTP server as `jupyterhub-singleuser`), so that hundreds of servers fit in memory.

1. Bursts: N new users' servers requested at once through ours, the stock SwarmSpawner (which spawns the
   stand-in too while this runs) and the floor (`docker service create` of the stand-in with ours' spec); and
   one burst through the rig's ours with the real notebook image, for calibration.
2. Running servers: grown in waves to each size N (and to the largest that leaves ``free_gib`` of memory,
   from the memory each server took at the first size), and at each: an idle window (CPU of the hub, its
   proxy, the Docker proxy and dockerd; the hub's calls to the Docker proxy, counted by benchmarks/callcount.py
   in front of its socket), the hub's pages (sequential requests), a no-op `deployer deploy`, and a hub
   replacement (`deployer update` with a changed setting) timed until every running server answers through
   the new hub's proxy.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from deployer.phases import dockerproxy as dockerproxy_phase

from . import rig
from .measures import (
    LABELS,
    Context,
    _cpu_seconds,
    _hub_spawns,
    failures_text,
    measurement,
    rotated,
)
from .report import Section, Target, median, quantile, ratio, secs, times
from .rig import SCALED, STANDIN_IMAGE, Hub, Spawned, User, docker, log

GIB = 2**30
#: Idle culling after a day (ours' files say an hour: a long run's first servers would be culled); the replacement
#: switches to the other value, which changes the hub's configuration and nothing else.
CULL = (86400, 86460)
#: Memory per running server assumed until it is measured (and if the measurement says less than an eighth of it).
FALLBACK_PER_SERVER = 32 * 2**20


@dataclass
class ScaleOptions:
    bursts: tuple[int, ...] = (50, 100)  # burst sizes
    sizes: tuple[int, ...] = (0, 100, 300)  # running servers measured at (then the largest, computed)
    largest: int = 1000  # --scale-max: the computed largest N is capped here
    window: float = 60.0  # seconds of each idle window
    requests: int = 200  # sequential requests per page and size
    free_gib: float = 4.0  # the largest N leaves this much memory available
    wave: int = 50  # servers requested at once while growing


QUICK = ScaleOptions(bursts=(10,), sizes=(0, 50), largest=100, window=20.0, requests=50)


def options(ctx: Context) -> ScaleOptions:
    return ctx.scale or (QUICK if ctx.quick else ScaleOptions())


def users_needed(ctx: Context) -> int:
    o = options(ctx)
    return (sum(o.bursts) + o.bursts[0]) * ctx.reps(1) + max(o.largest, *o.sizes) + 1


# --- memory and processes ------------------------------------------------------------------------------------------


def mem_available() -> int:
    """Bytes the kernel could give without swapping (MemAvailable)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def rss(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


PROCESSES = {
    "hub": "the hub (jupyterhub)",
    "chp": "its proxy (configurable-http-proxy)",
    "culler": "the idle culler (a hub service)",
    "dockerproxy": "the Docker proxy (deployer_hub.dockerproxy)",
    "dockerd": "dockerd",
}


def running_container(service: str) -> str:
    return docker("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={service}", check=False).split("\n")[0]


def processes(hub: Hub) -> dict[str, list[int]]:
    """Host pids of PROCESSES for the scale deployment (the hub's running container, the Docker proxy's)."""
    found: dict[str, list[int]] = {}
    for container, kinds in ((running_container(hub.service), ("hub", "chp", "culler")),
                             (dockerproxy_phase.container_name(SCALED), ("dockerproxy",))):
        for line in (docker("top", container, "-eo", "pid,args", check=False) if container else "").splitlines()[1:]:
            pid, _, args = line.strip().partition(" ")
            if "configurable-http-proxy" in args:
                kind = "chp"
            elif "jupyterhub_idle_culler" in args:
                kind = "culler"
            elif "deployer_hub.dockerproxy" in args:
                kind = "dockerproxy"
            elif "bin/jupyterhub " in args or args.endswith("bin/jupyterhub"):
                kind = "hub"
            else:
                continue
            if kind in kinds:
                found.setdefault(kind, []).append(int(pid))
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "dockerd":
                    found.setdefault("dockerd", []).append(int(entry.name))
            except OSError:
                pass
    return found


def cpu(pids: dict[str, list[int]]) -> dict[str, float]:
    return {kind: sum(_cpu_seconds(p) or 0.0 for p in ps) for kind, ps in pids.items()}


# --- counting the hub's calls to its Docker proxy ---------------------------------------------------------------------


class CallCounter:
    """benchmarks/callcount.py in front of the scale deployment's Docker proxy socket (see there). Only
    connections opened after it started pass it: restart the hub (``restart_hub``) or replace it after."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cpu_used = 0.0  # its own CPU seconds, once stopped
        self._start()

    def _start(self) -> None:
        socket_path = f"{SCALED.docker_proxy_dir}/docker.sock"
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("callcount.py")), socket_path],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        if not self.proc.stdout.readline():
            raise RuntimeError(f"the call counter did not start in front of {socket_path}")

    def relaying(self) -> bool:
        return bool(self.counts()["relaying"])

    def reinstall(self) -> None:
        """Again in front of the proxy's socket: the proxy's container was made again (by a deploy that found its
        image or policy changed), with a socket of its own that the hub's new connections reach directly."""
        self.stop()
        self._start()

    def counts(self) -> dict:
        with self.lock:
            assert self.proc.stdin is not None and self.proc.stdout is not None
            self.proc.stdin.write("count\n")
            self.proc.stdin.flush()
            return json.loads(self.proc.stdout.readline())

    def cpu_seconds(self) -> float:
        return _cpu_seconds(self.proc.pid) or 0.0

    def stop(self) -> None:
        self.cpu_used += self.cpu_seconds()
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()  # it puts the proxy's socket back and ends
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                self.proc.wait(15)


def diff_calls(before: dict, after: dict) -> dict[str, int]:
    return {k: v - before["calls"].get(k, 0) for k, v in after["calls"].items() if v - before["calls"].get(k, 0)}


# --- spawning -------------------------------------------------------------------------------------------------------------


def spawn(kind: str, hub: Hub | None, floor: rig.Floor | None, people: list[User], image: str = STANDIN_IMAGE) -> tuple[list[Spawned], float]:
    """Every user's server requested at once (a hub's REST API, or the floor's docker service create); (results, wall)."""
    started = time.monotonic()
    if kind == "floor":
        assert floor is not None
        results, _ = asyncio.run(floor.spawn(people, image=image))
    else:
        assert hub is not None
        results, _ = asyncio.run(_hub_spawns(hub, people))
    return results, time.monotonic() - started


def stop(kind: str, hub: Hub | None, floor: rig.Floor | None, people: list[User]) -> None:
    if kind == "floor":
        assert floor is not None
        asyncio.run(floor.stop())
    else:
        assert hub is not None
        asyncio.run(rig.stop_all(hub, [u.name for u in people]))
    time.sleep(0.5)  # as measures.remove


@dataclass
class Burst:
    walls: list[float] = field(default_factory=list)  # of the repetitions where every server came up
    each: list[float] = field(default_factory=list)
    failed: list[Spawned] = field(default_factory=list)
    count: int = 0


def burst_row(label: str, n: int, b: Burst, floor: float | None, stock: float | None) -> list[str]:
    wall = median(b.walls)
    return [label, secs(wall, 1), f"{n / wall * 60:.0f}" if wall else "—",
            secs(quantile(b.each, 0.5), 1) if b.each else "—", secs(quantile(b.each, 0.95), 1) if b.each else "—",
            times(ratio(wall, floor)) if floor is not None else "", times(ratio(wall, stock)) if stock is not None else "",
            f"{len(b.failed)}/{b.count}"]


# --- at each size: the idle window, the pages, deploy, replacement -----------------------------------------------------------


@dataclass
class AtSize:
    n: int  # servers running when measured
    available: int  # bytes of MemAvailable
    cpu_per_min: dict[str, float] = field(default_factory=dict)
    rss: dict[str, int] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)  # in the idle window
    counting: bool = True  # the counter still sat in front of the Docker proxy
    api: list[float] = field(default_factory=list)
    home: list[float] = field(default_factory=list)
    page_errors: int = 0
    deploy_noop: float | None = None
    deploy_note: str = ""
    old_gone: float | None = None  # seconds after the update started
    healthy: float | None = None
    update_returned: float | None = None
    all_answering: float | None = None
    answered: list[float] = field(default_factory=list)
    not_answering: int = 0
    replace_calls: int | None = None
    replace_error: str = ""
    round_seconds: float | None = None
    notes: list[str] = field(default_factory=list)


def sequential(url: str, count: int, **client: object) -> tuple[list[float], int]:
    """``count`` GETs one after the other on one keep-alive connection (3 more first, untimed); seconds each, errors."""
    times_: list[float] = []
    errors = 0
    with httpx.Client(verify=False, timeout=60, follow_redirects=False, **client) as browser:  # type: ignore[arg-type]
        for i in range(count + 3):
            began = time.monotonic()
            try:
                ok = browser.get(url).status_code == 200
            except httpx.HTTPError:
                ok = False
            if i < 3:
                continue
            if ok:
                times_.append(time.monotonic() - began)
            else:
                errors += 1
    return times_, errors


async def back_to_serving(hub: Hub, running: list[str], old: str, started: float, at: AtSize, update_done: Callable[[], bool],
                          timeout: float = 600) -> None:
    """From the old hub container gone: until the new hub answers /hub/health and every running server
    answers GET /user/<name>/api itself (its X-Bench-Standin header: not the hub answering for it) through
    the new hub's proxy; every pending server asked once per round, 16 at a time, 0.5 s between rounds."""
    deadline = started + timeout
    while old and await asyncio.to_thread(running_container, hub.service) == old:
        if time.monotonic() > deadline or update_done():  # (an update that failed before it stopped the old hub)
            return
        await asyncio.sleep(0.2)
    at.old_gone = time.monotonic() - started
    pending = set(running)
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
    rounds: list[float] = []
    async with httpx.AsyncClient(verify=False, limits=limits, follow_redirects=False, timeout=10) as client:
        gate = asyncio.Semaphore(16)

        async def answers(user: str) -> None:
            async with gate:
                try:
                    response = await client.get(f"{hub.url}/user/{user}/api", headers={"Authorization": f"token {hub.tokens[user]}"})
                except httpx.HTTPError:
                    return
            if response.status_code == 200 and response.headers.get("x-bench-standin") == user:
                at.answered.append(time.monotonic() - started)
                pending.discard(user)

        done_at: float | None = None
        while time.monotonic() < deadline:
            if done_at is None and update_done():
                done_at = time.monotonic()
            if done_at is not None and time.monotonic() - done_at > 120:  # the update ended (healthy, or put back) 2 minutes ago
                break
            if at.healthy is None:
                try:
                    if (await client.get(f"{hub.url}/hub/health")).status_code == 200:
                        at.healthy = time.monotonic() - started
                except httpx.HTTPError:
                    pass
            if at.healthy is not None:
                began = time.monotonic()
                if pending:
                    await asyncio.gather(*(answers(u) for u in list(pending)))
                    rounds.append(time.monotonic() - began)
                if not pending:
                    at.all_answering = time.monotonic() - started
                    break
            await asyncio.sleep(0.5 if at.healthy is not None else 0.2)
    at.not_answering = len(pending)
    at.round_seconds = median(rounds) if rounds else None


def restart_hub(hub: Hub) -> None:
    """A new container of the hub's service (as tests/swarm does it), answering."""
    old = running_container(hub.service)
    docker("service", "update", "--force", "--detach", hub.service)
    deadline = time.monotonic() + 120
    while running_container(hub.service) in ("", old):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{hub.service}'s container was not replaced after docker service update --force")
        time.sleep(0.5)
    rig.wait_healthy(hub)


def measure(hub: Hub, running: list[str], observer: tuple[str, httpx.Cookies], o: ScaleOptions, counter: CallCounter,
            sites: dict[int, object], current: list[int]) -> AtSize:
    at = AtSize(len(running), mem_available())
    pids = processes(hub)
    log(f"N={at.n}: processes " + ", ".join(f"{k} {' '.join(map(str, v))}" for k, v in pids.items()))
    before_calls, before_cpu = counter.counts(), cpu(pids)
    began = time.monotonic()
    time.sleep(o.window)
    after_cpu, after_calls = cpu(pids), counter.counts()
    minutes = (time.monotonic() - began) / 60
    at.cpu_per_min = {k: (after_cpu[k] - before_cpu.get(k, 0.0)) / minutes for k in after_cpu}
    at.rss = {k: sum(rss(p) or 0 for p in ps) for k, ps in pids.items() if k in ("hub", "chp", "dockerproxy")}
    at.calls = {k: round(v / minutes, 1) for k, v in diff_calls(before_calls, after_calls).items()}  # type: ignore[misc]
    at.counting = after_calls["relaying"]
    log(f"N={at.n}: idle {o.window:.0f} s: hub {at.cpu_per_min.get('hub', 0):.2f} CPU s/min, "
        f"{sum(at.calls.values()):.0f} Docker-proxy calls/min, {at.available / GIB:.1f} GiB available")
    user, cookies = observer
    at.api, errors_api = sequential(f"{hub.url}/hub/api/user", o.requests, headers={"Authorization": f"token {hub.tokens[user]}"})
    at.home, errors_home = sequential(f"{hub.url}/hub/home", o.requests, cookies=cookies)
    at.page_errors = errors_api + errors_home
    log(f"N={at.n}: /hub/api/user p95 {quantile(at.api, 0.95) * 1000:.0f} ms, /hub/home p95 {quantile(at.home, 0.95) * 1000:.0f} ms"
        if at.api and at.home else f"N={at.n}: pages failed")
    # a no-op deploy: the same deployment files again
    began = time.monotonic()
    report = rig.rollout(sites[current[0]], rig.SCALED_PORTS, "deploy")  # type: ignore[arg-type]
    at.deploy_noop = time.monotonic() - began
    if report.hub_replaced or report.changed:
        at.deploy_note = f"N={at.n}: the no-op deploy changed something: " + "; ".join(c.shown or " ".join(c.argv[:4]) for _, c in report.executed)[:300]
    log(f"N={at.n}: no-op deploy {at.deploy_noop:.1f} s")
    if not counter.relaying():  # (the replacement next makes the hub connect anew, through it)
        counter.reinstall()
        at.notes.append(f"N={at.n}: the Docker proxy's container was made again by the no-op deploy; the counter was put back in front of it before the replacement.")
    # a hub replacement: `deployer update` with the other culling timeout
    other = CULL[1] if current[0] == CULL[0] else CULL[0]
    old = running_container(hub.service)
    calls_before = counter.counts()
    started = time.monotonic()
    with ThreadPoolExecutor(1) as pool:
        update = pool.submit(rig.rollout, sites[other], rig.SCALED_PORTS, "update")  # type: ignore[arg-type]
        asyncio.run(back_to_serving(hub, running, old, started, at, update.done))
        at.replace_calls = counter.counts()["total"] - calls_before["total"]
        try:
            replaced = update.result()
            at.update_returned = time.monotonic() - started
            current[0] = other
            if not replaced.hub_replaced:
                at.replace_error = "the update did not replace the hub"
        except Exception as exc:  # noqa: BLE001 (shown in the table, and the measurement goes on)
            at.replace_error = f"{type(exc).__name__}: {str(exc)[:300]}"
    if not counter.relaying():
        counter.reinstall()
        restart_hub(hub)
        at.notes.append(f"N={at.n}: the Docker proxy's container was made again during the replacement; the counter was put back in front "
                        "of it and the hub restarted (docker service update --force) after the replacement was timed.")
    log(f"N={at.n}: hub replaced, every server answering {secs(at.all_answering, 1)} after the update began"
        + (f" ({at.not_answering} not answering)" if at.not_answering else "") + (f"; {at.replace_error}" if at.replace_error else ""))
    return at


# --- the measurement ---------------------------------------------------------------------------------------------------------------


@measurement("scale", fresh_users=users_needed, opt_in=True)
def scale(ctx: Context) -> Section:
    r = ctx.rig
    o = options(ctx)
    reps = ctx.reps(1)
    assert r.ours and r.stock and r.floor
    log(f"building the stand-in notebook image {STANDIN_IMAGE}")
    rig.build_standin()
    sites = {cull: r.scaled_site(f"site-scale-{cull}", {"jupyter_user_image": STANDIN_IMAGE, "cull_idle_notebook_timeout": cull}) for cull in CULL}
    current = [CULL[0]]
    counter: CallCounter | None = None
    section = Section(
        "8. Scale (issue 22): bursts of new users' servers, on the stand-in notebook",
        ["", "wall", "servers/min", "per-user p50", "per-user p95", "wall vs floor", "wall vs stock", "failed"],
        how=(f"{reps} repetition(s) per size, variants interleaved, each repetition for new users (the same ones for the three). "
             f"The notebook is the stand-in `{STANDIN_IMAGE}` (benchmarks/standin: Deployer's notebook image, entrypoint and "
             "user included, with `jupyterhub-singleuser` replaced by a standard-library HTTP server of some 10 MB that answers "
             "200 to every request where JupyterHub tells it to listen), so that hundreds of servers fit in memory; what is "
             "measured is the spawners, the swarm and the hub, not JupyterLab's start. **Ours**: a deployment of its own "
             f"(jupyterhub.bench.sim-scale on {rig.SCALED_PORTS[0]}: ours' deployment files, hub image and Rollout, with the stand-in as "
             "`jupyter_user_image`). **Stock**: the stock hub, spawning the stand-in while this runs. **Floor**: `docker service "
             "create` of the stand-in with ours' container spec. Timed as in 2: from the N requests sent at once to each server "
             "answering `/user/<name>/api` through the proxy (floor: on the overlay network). Servers/min: N ÷ wall. The last "
             "row is ours' own deployment (jupyterhub.bench.sim) with the real notebook image (JupyterLab), for calibration."),
    )
    burst_results: dict[int, dict[str, Burst]] = {}
    sized: list[AtSize] = []
    growth: list[list[str]] = []
    grow_failed: list[Spawned] = []
    problems: list[str] = []
    largest_note = ""
    real = Burst()
    subnet = ""
    try:
        rig.stock_standin(STANDIN_IMAGE)
        hub = r.deploy_scaled(sites[current[0]])
        subnet = docker("network", "inspect", SCALED.network, "--format", "{{range .IPAM.Config}}{{.Subnet}}{{end}}", check=False)
        # --- 1. bursts
        for n in o.bursts:
            results = burst_results[n] = {k: Burst() for k in ("ours", "stock", "floor")}
            for rep in range(reps):
                people = r.fresh(n)
                for h in (hub, r.stock):
                    r.login(h, people)
                for kind in rotated(rep):
                    target = {"ours": hub, "stock": r.stock, "floor": None}[kind]
                    spawned, _ = spawn(kind, target, r.floor, people)
                    stop(kind, target, r.floor, people)
                    ok = [x.seconds for x in spawned if x.seconds is not None]
                    results[kind].each += ok
                    results[kind].failed += [x for x in spawned if x.error]
                    results[kind].count += n
                    if len(ok) == n:
                        results[kind].walls.append(max(ok))
                log(f"scale: burst of {n} {rep + 1}/{reps}: "
                    + ", ".join(f"{k} {results[k].walls[-1]:.1f} s" if results[k].walls else f"{k} -" for k in results))
        n0 = o.bursts[0]
        for rep in range(reps):
            people = r.fresh(n0)
            r.login(r.ours, people)
            spawned, _ = spawn("ours", r.ours, None, people, rig.USER_IMAGE)
            stop("ours", r.ours, None, people)
            ok = [x.seconds for x in spawned if x.seconds is not None]
            real.each += ok
            real.failed += [x for x in spawned if x.error]
            real.count += n0
            if len(ok) == n0:
                real.walls.append(max(ok))
            log(f"scale: burst of {n0}, ours with the real notebook image {rep + 1}/{reps}: {secs(real.walls[-1] if real.walls else None, 1)}")
        # --- 2. running servers
        counter = CallCounter()
        restart_hub(hub)  # its connections to the Docker proxy now pass the counter
        observer = r.fresh(1)[0]
        cookies = rig.login_browser(hub, observer)
        running: list[str] = []
        sizes = sorted(n for n in set(o.sizes) if n <= o.largest)
        per_server: float | None = None
        baseline = mem_available()
        todo = list(sizes)
        while todo:
            target_n = todo.pop(0)
            began, failed_before, before, wave_walls = time.monotonic(), len(grow_failed), len(running), []
            login_took = 0.0
            stopped = ""
            while len(running) < target_n:
                count = min(o.wave, target_n - len(running))
                need = count * (per_server or 2 * FALLBACK_PER_SERVER)
                if mem_available() - need < o.free_gib * GIB:
                    stopped = (f"stopped growing at {len(running)} of {target_n}: {mem_available() / GIB:.1f} GiB available, "
                               f"{o.free_gib:g} GiB to be left free")
                    break
                people = r.fresh(count)
                t = time.monotonic()
                r.login(hub, people)
                login_took += time.monotonic() - t
                spawned, wall = spawn("ours", hub, None, people)
                wave_walls.append(wall)
                running += [x.user for x in spawned if x.seconds is not None]
                grow_failed += [x for x in spawned if x.error]
                log(f"scale: {len(running)} running ({count} requested at once in {wall:.1f} s"
                    + (f", {sum(1 for x in spawned if x.error)} failed" if any(x.error for x in spawned) else "") + ")")
                if sum(1 for x in spawned if x.error) == count:
                    stopped = f"stopped growing at {len(running)} of {target_n}: a whole wave failed"
                    break
            spawns = time.monotonic() - began - login_took
            new = len(grow_failed) - failed_before
            if target_n:
                growth.append([f"→ {target_n}", str(len(running)), f"{login_took:.0f} s", f"{len(wave_walls)}",
                               secs(median(wave_walls), 1) if wave_walls else "—",
                               f"{(len(running) - before) / spawns * 60:.0f}" if spawns > 0 and wave_walls else "—",
                               str(new)])
            if stopped:
                problems.append(stopped)
            try:
                at = measure(hub, running, (observer.name, cookies), o, counter, sites, current)
            except Exception as exc:  # noqa: BLE001 (what was measured so far is still shown)
                problems.append(f"the measurement with {len(running)} running failed: {type(exc).__name__}: {str(exc)[:300]}")
                break
            sized.append(at)
            if per_server is None and at.n > 0:
                measured = (baseline - at.available) / at.n
                per_server = measured if measured >= FALLBACK_PER_SERVER / 8 else FALLBACK_PER_SERVER
                room = int((at.available - o.free_gib * GIB) / per_server) + at.n
                largest = min(o.largest, room // o.wave * o.wave)
                largest_note = (f"Memory per running server at N={at.n}: {measured / 2**20:.1f} MiB (MemAvailable {baseline / GIB:.2f} GiB "
                                f"with none, {at.available / GIB:.2f} GiB with {at.n})"
                                + ("" if per_server == measured else f", too little to go by (something else freed memory meanwhile?): "
                                   f"{FALLBACK_PER_SERVER / 2**20:.0f} MiB assumed")
                                + f"; leaving {o.free_gib:g} GiB free allows about {room}; largest N measured: {largest} (--scale-max {o.largest}).")
                log(f"scale: {per_server / 2**20:.1f} MiB per server: room for about {room}; largest N {largest}")
                if largest > max(sizes):
                    todo.append(largest)
            if stopped:
                break
    finally:
        if counter:
            counter.stop()
        log(f"scale: removing {SCALED.name} and its servers")
        try:
            r.remove_scaled()
        finally:
            rig.stock_standin(None)
    # --- the tables
    for n, results in burst_results.items():
        floor_wall, stock_wall = median(results["floor"].walls), median(results["stock"].walls)
        for kind in ("ours", "stock", "floor"):
            section.rows.append(burst_row(f"N={n} {LABELS[kind]}, stand-in", n, results[kind], floor_wall, stock_wall if kind == "ours" else None))
            section.notes += [f"N={n} {kind}: {text}" for text in failures_text(results[kind].failed)]
        if n == o.bursts[0]:
            section.targets.append(Target(f"burst of {n} (stand-in): ours ÷ floor (wall)", ratio(median(results["ours"].walls), floor_wall), 1.1))
    if burst_results:
        n0 = o.bursts[0]
        section.rows.append(burst_row(f"N={n0} ours, real notebook image (JupyterLab; calibration)", n0, real, None, None))
        section.notes.append(f"Calibration: a burst of {n0} through ours takes {times(ratio(median(real.walls), median(burst_results[n0]['ours'].walls)))} "
                             "as long with the real notebook image (JupyterLab's start, some 1 s of CPU each) as with the stand-in.")
        section.notes += [f"N={n0} ours, real image: {text}" for text in failures_text(real.failed)]
    section.notes.append(f"The scale deployment's notebook network ({SCALED.network}) is as deploy made it: {subnet or 'not made'} "
                         "(notebook_network_subnet unset: the first free /19 of 10.128.0.0/9; Docker's default /24 held some 250 servers).")
    section.notes += problems
    if sized:
        section.extra += tables(sized, o, largest_note, counter)
    if growth:
        section.extra.append(Section(
            "Growing to N running servers (ours, stand-in)", ["", "running", "users logged in", "waves", "wave wall (median)", "servers/min", "failed"],
            growth, notes=[f"Waves of {o.wave} servers requested at once, each until every one answers through the proxy; the users "
                           "(new ones) logged in through the tenant simulator before their wave (that time is not in servers/min)."]
            + [f"failed while growing: {text}" for text in failures_text(grow_failed)]))
    add_targets(section, sized, o, grow_failed, [*(b.failed for rs in burst_results.values() for b in rs.values()), real.failed])
    return section


def tables(sized: list[AtSize], o: ScaleOptions, largest_note: str, counter: CallCounter | None) -> list[Section]:
    zero = next((a for a in sized if a.n == 0), None)

    def ms(values: list[float], q: float) -> str:
        return f"{quantile(values, q) * 1000:.0f} ms" if values else "—"

    def p95_vs_none(values: list[float], base: list[float]) -> str:
        return times(ratio(quantile(values, 0.95), quantile(base, 0.95))) if values and base else ""

    pages = Section(
        "With N servers running: the hub's pages", ["running", "/hub/api/user p50", "p95", "p95 vs none", "/hub/home p50", "p95", "p95 vs none", "errors"],
        [[str(a.n), ms(a.api, 0.5), ms(a.api, 0.95), p95_vs_none(a.api, zero.api if zero else []),
          ms(a.home, 0.5), ms(a.home, 0.95), p95_vs_none(a.home, zero.home if zero else []), str(a.page_errors)] for a in sized],
        notes=[f"{o.requests} requests one after the other per page and size (3 more before, untimed), one keep-alive HTTPS connection, "
               "through the hub's proxy: `GET /hub/api/user` with an API token, `GET /hub/home` with the session cookies of a user "
               "logged in through the tenant simulator (a user without a server). Measured after the idle window."])
    idle = Section(
        f"With N servers running: idle cost ({o.window:.0f} s without requests)",
        ["running", *(f"{k} CPU s/min" for k in ("hub", "CHP", "culler", "Docker proxy", "dockerd")), "Docker-proxy calls/min", "per server per min"],
        [[str(a.n), *(f"{a.cpu_per_min[k]:.2f}" if k in a.cpu_per_min else "—" for k in ("hub", "chp", "culler", "dockerproxy", "dockerd")),
          f"{sum(a.calls.values()):.0f}" + ("" if a.counting else " (not counted: see notes)"),
          f"{sum(a.calls.values()) / a.n:.2f}" if a.n else ""] for a in sized],
        notes=["CPU: user + system time from /proc/<pid>/stat over the window, in CPU seconds per minute (2 cores: 120 at most). "
               "The hub polls every server every 10 s (its spawner's poll_interval).",
               "Docker-proxy calls: every HTTP request the hub sent to its Docker proxy, counted by benchmarks/callcount.py, which "
               "relays the proxy's socket (the proxy logs refusals only); the hub was restarted once it was in place (docker service "
               "update --force), so all its connections pass it."
               + (f" The relay itself used {counter.cpu_used:.1f} CPU s over the whole measurement." if counter else "")
               + " A process not found shows '—'."])
    if any(not a.counting for a in sized):
        idle.notes.append("At some sizes the counter no longer sat in front of the Docker proxy (the proxy's container was made "
                          "again, with a socket of its own): those counts are of the calls on connections opened before, at most.")

    def mib(value: int | None) -> str:
        return f"{value / 2**20:.0f} MiB" if value else "—"

    def per_100(a: AtSize, kind: str) -> str:
        if not zero or not a.n or kind not in a.rss or kind not in zero.rss:
            return ""
        return f"{(a.rss[kind] - zero.rss[kind]) / a.n * 100 / 2**20:+.1f} MiB"

    memory = Section(
        "With N servers running: memory", ["running", "MemAvailable", "per server (vs none)", "hub RSS", "per 100 servers", "CHP RSS", "per 100 servers",
                                           "Docker proxy RSS"],
        [[str(a.n), f"{a.available / GIB:.2f} GiB", f"{(zero.available - a.available) / a.n / 2**20:.1f} MiB" if zero and a.n else "",
          mib(a.rss.get("hub")), per_100(a, "hub"), mib(a.rss.get("chp")), per_100(a, "chp"), mib(a.rss.get("dockerproxy"))] for a in sized],
        notes=[n for n in [largest_note, "RSS from /proc/<pid>/status at the end of the idle window; 'per 100 servers' is the growth "
                           "since none ran, per 100 running servers. Note that the hub restarted (replaced) after every size."] if n])
    calls_by_kind = sorted({k for a in sized for k in a.calls})
    by_call = Section(
        "The hub's Docker-proxy calls per minute while idle, by call", ["call", *(f"N={a.n}" for a in sized)],
        [[k, *(f"{a.calls.get(k, 0):.1f}" for a in sized)] for k in calls_by_kind],
        notes=["Paths without their /v1.NN prefix and query string; names and IDs shown as {id}."] if calls_by_kind else [])

    def after(value: float | None) -> str:
        return secs(value, 1)

    operations = Section(
        "With N servers running: deploy and hub replacement",
        ["running", "deploy (no-op)", "update: old hub gone", "new hub healthy", "every server answering", "outage", "servers answering p50",
         "not answering", "Docker-proxy calls"],
        [[str(a.n), after(a.deploy_noop), after(a.old_gone), after(a.healthy), after(a.all_answering),
          after(a.all_answering - a.old_gone) if a.all_answering is not None and a.old_gone is not None else "—",
          after(quantile(a.answered, 0.5)) if a.answered else "—", str(a.not_answering), "" if a.replace_calls is None else str(a.replace_calls)]
         for a in sized],
        notes=[("Deploy (no-op): `deployer deploy` of the same deployment files (the Rollout, as deploy_ours), timed whole. Replacement: "
                f"`deployer update` with `cull_idle_notebook_timeout` switched between {CULL[0]} and {CULL[1]} (the hub's configuration "
                "changes, so deploy replaces the hub: src/deployer/phases/hubreplace.py), times after the update began: the old hub "
                "container gone, the new hub answering /hub/health, and every running server answering `GET /user/<name>/api` itself "
                "through the new hub's proxy (the stand-in's own header; the hub answering for a server without a route does not count). "
                "Each pending server is asked once per round, 16 requests at a time, rounds 0.5 s apart"
                + (f" (a round took {median([a.round_seconds for a in sized if a.round_seconds is not None]):.1f} s at the median)"
                   if any(a.round_seconds is not None for a in sized) else "")
                + ". Outage: from the old hub gone to every server answering. Docker-proxy calls: the hub's, from the update's start "
                  "to every server answering (the new hub's start).")]
        + [a.deploy_note for a in sized if a.deploy_note] + [f"N={a.n}: {a.replace_error}" for a in sized if a.replace_error]
        + [note for a in sized for note in a.notes])
    return [pages, idle, memory, *([by_call] if calls_by_kind else []), operations]


def add_targets(section: Section, sized: list[AtSize], o: ScaleOptions, grow_failed: list[Spawned], burst_failed: list[list[Spawned]]) -> None:
    zero = next((a for a in sized if a.n == 0), None)
    fixed = [a for a in sized if a.n in o.sizes and a.n > 0]
    ref = next((a for a in fixed if a.n == 300), fixed[-1] if fixed else None)
    if ref and zero:
        for name, values, base in (("/hub/api/user", ref.api, zero.api), ("/hub/home", ref.home, zero.home)):
            section.targets.append(Target(f"{name} p95 with {ref.n} running ÷ with none", ratio(quantile(values, 0.95), quantile(base, 0.95))
                                          if values and base else None, 1.25))
    if ref:
        section.targets.append(Target(f"hub replacement with {ref.n} running → every server answering (from `deployer update`)",
                                      ref.all_answering, 30, unit="s"))
    top = max((a for a in sized if a.n), key=lambda a: a.n, default=None)
    if top:
        section.targets.append(Target(f"Docker-proxy calls per running server per minute (N={top.n}, idle)", sum(top.calls.values()) / top.n, 1, unit=""))
    failed = len(grow_failed) + sum(len(f) for f in burst_failed)
    section.targets.append(Target(f"failed spawns (bursts, and growing to N={top.n if top else 0})", float(failed), 0, unit=""))
