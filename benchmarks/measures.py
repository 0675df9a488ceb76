"""The measurements. Each is one function ``(ctx) -> Section`` registered with ``@measurement``;
they run in the order they are defined. To add one, write such a function (see ``lab_deploy``)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from . import rig
from .report import Section, Target, median, quantile, ratio, secs, spread, times
from .rig import Hub, Rig, Spawned, User, docker, log, parse_time

KINDS = ("ours", "stock", "floor")
LABELS = {
    "ours": "ours (TenantSwarmSpawner)",
    "stock": "stock (dockerspawner SwarmSpawner)",
    "floor": "floor (docker service create)",
}


@dataclass
class Context:
    rig: Rig  # set once the rig is up (the measurements' user counts size it first)
    reps_override: int | None
    quick: bool
    scale: Any = None  # the scale measurement's options (benchmarks/scale.py: ScaleOptions), from the command line

    def reps(self, default: int) -> int:
        if self.reps_override:
            return self.reps_override
        return 1 if self.quick else default

    @property
    def burst_sizes(self) -> tuple[int, ...]:
        return (10,) if self.quick else (10, 20)


@dataclass
class Measurement:
    key: str
    func: Callable[[Context], Section]
    fresh_users: Callable[[Context], int]  # users it spawns for (each used once: see Rig.take)
    logged_in: int  # users it needs logged in (any, e.g. for the load test)
    opt_in: bool = False  # runs only when named in --only (a long one: scale)


MEASUREMENTS: list[Measurement] = []


def measurement(key: str, fresh_users: Callable[[Context], int] = lambda ctx: 0, logged_in: int = 0, opt_in: bool = False) -> Callable:
    def register(func: Callable[[Context], Section]) -> Callable[[Context], Section]:
        MEASUREMENTS.append(Measurement(key, func, fresh_users, logged_in, opt_in))
        return func

    return register


def rotated(rep: int) -> list[str]:
    """A different order in every repetition, so no variant always runs first (or last)."""
    return list(KINDS[rep % 3:] + KINDS[: rep % 3])


# --- running N spawns at once, for any of the three ----------------------------------------------------


def hub_of(ctx: Context, kind: str) -> Hub:
    hub = ctx.rig.ours if kind == "ours" else ctx.rig.stock
    assert hub is not None
    return hub


async def _hub_spawns(hub: Hub, people: list[User]) -> tuple[list[Spawned], float]:
    async with httpx.AsyncClient(verify=False, limits=httpx.Limits(max_connections=500, max_keepalive_connections=500)) as client:
        start_wall, start = time.time(), time.monotonic()
        results = await asyncio.gather(*(rig.spawn_via_api(client, hub, u.name, start) for u in people))
    return list(results), start_wall


def spawn_at_once(ctx: Context, kind: str, people: list[User]) -> tuple[list[Spawned], float]:
    """Every user's server requested at the same moment; (results, start in epoch seconds).
    The servers are left running (see ``remove``)."""
    if kind == "floor":
        assert ctx.rig.floor is not None
        return asyncio.run(ctx.rig.floor.spawn(people))
    return asyncio.run(_hub_spawns(hub_of(ctx, kind), people))


def remove(ctx: Context, kind: str, people: list[User]) -> None:
    """Stop the servers the way each side does it (the hub's API; docker service rm for the floor)
    and wait until their services are gone and no container of theirs runs, so that every run
    starts from the same state."""
    if kind == "floor":
        assert ctx.rig.floor is not None
        asyncio.run(ctx.rig.floor.stop())
    else:
        asyncio.run(rig.stop_all(hub_of(ctx, kind), [u.name for u in people]))
    time.sleep(0.5)  # let the engine finish tearing down network endpoints before the next run


def failures_text(results: list[Spawned]) -> list[str]:
    seen: dict[str, int] = {}
    for r in results:
        if r.error:
            seen[r.error[:160]] = seen.get(r.error[:160], 0) + 1
    return [f"{count}× {error}" for error, count in seen.items()]


# --- 1. one spawn ---------------------------------------------------------------------------------------


@measurement("single", fresh_users=lambda ctx: ctx.reps(5) + 1)
def single_spawn(ctx: Context) -> Section:
    r = ctx.rig
    reps = ctx.reps(5)
    samples: dict[str, list[float]] = {k: [] for k in KINDS}
    errors: dict[str, list[str]] = {k: [] for k in KINDS}
    for rep in range(reps):
        person = r.take(1)  # one new user per repetition, the same one for the three variants
        for kind in rotated(rep):
            results, _ = spawn_at_once(ctx, kind, person)
            remove(ctx, kind, person)
            for result in results:
                (samples[kind].append(result.seconds) if result.seconds is not None else errors[kind].append(result.error))
        log(f"single spawn {rep + 1}/{reps}: " + ", ".join(f"{k} {samples[k][-1]:.2f} s" if samples[k] else f"{k} failed" for k in KINDS))
    med = {k: median(samples[k]) for k in KINDS}
    section = Section(
        "1. One user's spawn: request → the notebook answering",
        ["", "median", "min–max", "vs floor", "vs stock", "failed"],
        how=(f"{reps} repetitions, the three variants interleaved (a different one first each time). Ours and stock: "
             "`POST /hub/api/users/<name>/server` with the user's API token, the spawn's progress events followed as the "
             "spawn page does, then `GET https://127.0.0.1:<port>/user/<name>/api` with the token until it answers 200 "
             "through the hub's proxy. Floor: `docker service create` of the same image with ours' container spec, "
             "probed over the same kind of overlay network (attachable, DNS round robin) from a container on it "
             "every 50 ms until `/user/<name>/api` answers below 500 (JupyterHub's own readiness rule). Between "
             "runs every server is stopped and its container gone; every repetition spawns for a user "
             "who has not had a server before (see *Reading the numbers*)."),
    )
    for kind in KINDS:
        section.rows.append([LABELS[kind], secs(med[kind]), spread(samples[kind]),
                             times(ratio(med[kind], med["floor"])), "" if kind != "ours" else times(ratio(med["ours"], med["stock"])),
                             f"{len(errors[kind])}/{reps}"])
        section.notes += [f"{kind} failed: {e}" for e in dict.fromkeys(errors[kind])]
    section.targets.append(Target("one spawn: ours ÷ floor", ratio(med["ours"], med["floor"]), 1.3))
    section.extra.append(spawn_profile(ctx))
    return section


# --- where a spawn's time goes -------------------------------------------------------------------------------


def _container_of(service: str) -> str | None:
    ids = docker("ps", "-aq", "--filter", f"label=com.docker.swarm.service.name={service}").split()
    return ids[0] if ids else None


def _logs(container: str | None, since: float) -> list[tuple[float, str]]:
    """The container's log lines with Docker's timestamps (when each line was written)."""
    if not container:
        return []
    result = subprocess.run(["docker", "logs", "--timestamps", "--since", f"{since - 1:.3f}", container],
                            capture_output=True, text=True, timeout=60, check=False)
    lines = []
    for line in (result.stdout + result.stderr).splitlines():
        stamp, _, text = line.partition(" ")
        try:
            lines.append((parse_time(stamp), text))
        except ValueError:
            continue
    return lines


def _first(lines: list[tuple[float, str]], pattern: str) -> float | None:
    found = [t for t, text in lines if re.search(pattern, text)]
    return min(found) if found else None


def timelines(ctx: Context, kind: str, results: list[Spawned], start: float) -> dict[str, list[float]]:
    """For every user who got a server: seconds from the request to each milestone, from Docker's
    records and the logs. Call before the servers are removed."""
    hub = None if kind == "floor" else hub_of(ctx, kind)
    hub_log = _logs(_container_of(hub.service), start) if hub else []
    found: dict[str, list[float]] = {}
    for result in results:
        if result.seconds is None:
            continue
        user = result.user
        service = hub.notebook(user) if hub else f"{rig.FLOOR_NB}-{user}"
        spec = json.loads(docker("service", "inspect", service))[0]
        task_ids = docker("service", "ps", "-q", "--no-trunc", service).split()
        task = json.loads(docker("inspect", task_ids[0]))[0] if task_ids else {}
        container_id = task.get("Status", {}).get("ContainerStatus", {}).get("ContainerID")
        container = json.loads(docker("inspect", container_id))[0] if container_id else {}
        marks: dict[str, float | None] = {
            "service created": parse_time(spec["CreatedAt"]),
            "container started": parse_time(container["State"]["StartedAt"]) if container else None,
            "notebook server listening": _first(_logs(container_id, start), r"Jupyter Server .* is running at"),
        }
        if hub:
            marks["hub: spawn finished (its http check passed)"] = _first(hub_log, rf"User {user} took [0-9.]+ seconds to start")
            marks["hub: route added to the proxy"] = _first(hub_log, rf"Adding user {user} to proxy")
            marks["answers through the proxy (client)"] = result.end
        else:
            marks["answers on the overlay network (probe)"] = result.end
        for name, value in marks.items():
            if value is not None:
                found.setdefault(name, []).append(value - start)
    return found


PROFILE_NOTE = ("Milestones from `docker service inspect` (created), `docker inspect` of the task's container (started), "
                "the notebook's log (`Jupyter Server … is running at`, Docker's timestamp) and the hub's log (`User … took … "
                "seconds to start`, `Adding user … to proxy`). From 'listening' to 'spawn finished' the hub is polling: its "
                "spawner until the swarm task runs, then JupyterHub's http check, which retries after a random wait of up "
                "to 0.2, 0.4, 0.8, 1.6, 3.2, then 5 s.")


def profile_section(title: str, per_kind: dict[str, dict[str, list[float]]], percentiles: bool) -> Section:
    milestones = list(dict.fromkeys(m for kind in KINDS for m in per_kind.get(kind, {})))
    columns = ["milestone"]
    for kind in KINDS:
        columns += [f"{kind} p50", f"{kind} p95"] if percentiles else [kind]
    rows = []
    for m in milestones:
        row = [m]
        for kind in KINDS:
            values = per_kind.get(kind, {}).get(m)
            if percentiles:
                row += [secs(quantile(values, 0.5)) if values else "", secs(quantile(values, 0.95)) if values else ""]
            else:
                row.append(secs(median(values)) if values else "")
        rows.append(row)
    return Section(title, columns, rows, notes=[PROFILE_NOTE])


def spawn_profile(ctx: Context) -> Section:
    """One more spawn of each variant, with the time of every milestone."""
    person = ctx.rig.take(1)
    per_kind = {}
    for kind in KINDS:
        results, start = spawn_at_once(ctx, kind, person)
        try:
            per_kind[kind] = timelines(ctx, kind, results, start)
        finally:
            remove(ctx, kind, person)
    return profile_section("Where one spawn's time goes (seconds after the request; one more spawn of each)", per_kind, False)


# --- 2. bursts -----------------------------------------------------------------------------------------------


@measurement("bursts", fresh_users=lambda ctx: sum(ctx.burst_sizes) * ctx.reps(3))
def bursts(ctx: Context) -> Section:
    r = ctx.rig
    sizes = ctx.burst_sizes
    reps = ctx.reps(3)
    section = Section(
        "2. Bursts: N users' servers requested at once",
        ["", "wall median", "wall min–max", "per-user p50", "per-user p95", "wall vs floor", "wall vs stock", "failed"],
        how=(f"{reps} repetitions per size, variants interleaved. Ours and stock: N `POST /hub/api/users/<name>/server` "
             "sent at the same moment, each with its own user's API token (ours' users logged in through the tenant "
             "simulator first), each followed until `/user/<name>/api` answers 200 through the proxy. Floor: N `docker "
             "service create` started at the same moment, probed as above. Wall: from the first request to the last "
             "server answering. p50/p95: every user's own time over all repetitions."),
    )
    for n in sizes:
        walls: dict[str, list[float]] = {k: [] for k in KINDS}
        each: dict[str, list[float]] = {k: [] for k in KINDS}
        failed: dict[str, list[Spawned]] = {k: [] for k in KINDS}
        profiled: dict[str, dict[str, list[float]]] = {}
        for rep in range(reps):
            people = r.take(n)  # new users each repetition, the same ones for the three variants
            for kind in rotated(rep):
                results, start = spawn_at_once(ctx, kind, people)
                if n == max(sizes) and rep == reps - 1:
                    profiled[kind] = timelines(ctx, kind, results, start)
                remove(ctx, kind, people)
                ok = [x.seconds for x in results if x.seconds is not None]
                each[kind] += ok
                failed[kind] += [x for x in results if x.error]
                if len(ok) == n:
                    walls[kind].append(max(ok))
            log(f"burst of {n} {rep + 1}/{reps}: " + ", ".join(f"{k} {walls[k][-1]:.1f} s" if walls[k] else f"{k} -" for k in KINDS))
        med = {k: median(walls[k]) for k in KINDS}
        for kind in KINDS:
            section.rows.append([
                f"N={n} {LABELS[kind]}", secs(med[kind], 1), spread(walls[kind], 1),
                secs(quantile(each[kind], 0.5) if each[kind] else None, 1), secs(quantile(each[kind], 0.95) if each[kind] else None, 1),
                times(ratio(med[kind], med["floor"])), "" if kind != "ours" else times(ratio(med["ours"], med["stock"])),
                f"{len(failed[kind])}/{n * reps}",
            ])
            section.notes += [f"N={n} {kind}: {text}" for text in failures_text(failed[kind])]
        if profiled:
            section.extra.append(profile_section(f"Where a burst of {n}'s time goes (seconds after the requests, over the users of the last repetition)",
                                                 profiled, True))
        if n == 20:
            section.targets.append(Target("burst of 20: ours ÷ floor (wall)", ratio(med["ours"], med["floor"]), 1.2))
            section.targets.append(Target("burst of 20: ours ÷ stock (wall)", ratio(med["ours"], med["stock"]), 1.0, strict=True))
    return section


# --- 3. a browser: login page to JupyterLab ------------------------------------------------------------------

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic"]


@measurement("browser", fresh_users=lambda ctx: ctx.reps(3))
def browser_login(ctx: Context) -> Section:
    from playwright.sync_api import sync_playwright

    r = ctx.rig
    assert r.ours
    reps = ctx.reps(3)
    phases = ["login page loaded", "signed in (back at the hub)", "JupyterLab's URL loaded", "JupyterLab UI ready"]
    samples: dict[str, list[float]] = {p: [] for p in phases}
    hub = r.ours
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            for rep in range(reps):
                person = r.take(1)[0]  # a new user each time (its API token stops the server afterwards)
                context = chromium.new_context(ignore_https_errors=True)
                page = context.new_page()
                page.set_default_timeout(240_000)
                seen: list[tuple[float, str]] = []

                def navigated(frame, page=page, seen=seen) -> None:
                    if frame == page.main_frame:
                        seen.append((time.monotonic(), frame.url))

                page.on("framenavigated", navigated)
                start = time.monotonic()
                page.goto(f"{hub.url}/hub/login")
                loaded = time.monotonic()
                page.get_by_role("button", name="Sign in with sim").click()
                page.fill("input[name=username]", person.name)
                page.fill("input[name=password]", person.password)
                page.locator("form [type=submit]").first.click()
                page.wait_for_url(re.compile(rf"/user/{person.name}/lab"))
                page.locator(".jp-LauncherCard").first.wait_for()  # the launcher: JupyterLab has loaded and rendered
                ready = time.monotonic()
                back = [t for t, url in seen if url.startswith(hub.url) and t > loaded and "/oauth_callback" not in url]
                lab = [t for t, url in seen if re.search(rf"/user/{person.name}/lab", url)]
                for phase, value in zip(phases, [loaded, back[0] if back else None, lab[-1] if lab else None, ready]):
                    if value is not None:
                        samples[phase].append(value - start)
                context.close()
                log(f"browser login to JupyterLab {rep + 1}/{reps}: {ready - start:.2f} s")
                with ThreadPoolExecutor(1) as thread:  # Playwright's sync API keeps an event loop in this thread
                    thread.submit(asyncio.run, rig.stop_all(hub, [person.name])).result()
        finally:
            chromium.close()
    rows = [[f"→ {p}", secs(median(samples[p])), spread(samples[p])] for p in phases]
    return Section(
        "3. Login to JupyterLab in a real browser (ours)",
        ["seconds after opening the login page", "median", "min–max"], rows,
        how=(f"{reps} repetitions, a fresh browser context (no cookies) each time, the user's server stopped in between. "
             "Playwright drives Debian's Chromium: open `/hub/login`, *Sign in with sim*, the tenant's login form, then "
             "the hub spawns the server and the browser lands on `/user/<name>/lab`; ready when JupyterLab shows its "
             "launcher (`.jp-LauncherCard`)."),
    )


# --- 4. the hub under load --------------------------------------------------------------------------------------


@dataclass
class LoadRun:
    latencies: list[float]  # seconds, of the answered requests of the measured window
    errors: int  # failed requests of the measured window
    answered: int  # answered requests of the whole run, warm-up included (for the CPU per request)


async def _load(hub: Hub, tokens: list[str], seconds: float) -> LoadRun:
    """One client per user, each sending GET /hub/api/user back to back for ``seconds``."""
    run = LoadRun([], 0, 0)
    connector = aiohttp.TCPConnector(limit=len(tokens), ssl=False)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        async def one_user(token: str, until: float, record: bool) -> None:
            headers = {"Authorization": f"token {token}"}
            while time.monotonic() < until:
                began = time.monotonic()
                try:
                    async with session.get(f"{hub.url}/hub/api/user", headers=headers) as response:
                        await response.read()
                        ok = response.status == 200
                except (aiohttp.ClientError, TimeoutError):
                    ok = False
                run.answered += ok
                if record:
                    if ok:
                        run.latencies.append(time.monotonic() - began)
                    else:
                        run.errors += 1

        warm = time.monotonic() + 2  # connections and TLS sessions up, the hub's caches warm
        await asyncio.gather(*(one_user(t, warm, False) for t in tokens))
        until = time.monotonic() + seconds
        await asyncio.gather(*(one_user(t, until, True) for t in tokens))
    return run


# What serves a request under load, each a process on this machine whose CPU time is read from
# /proc/<pid>/stat before and after each run (the hubs' containers share the host's process table).
SERVING = {
    "hub": "the hub (jupyterhub)",
    "proxy": "its proxy (configurable-http-proxy)",
    "dockerd": "dockerd (the containers' logs, Docker's DNS)",
    "docker-proxy": "docker-proxy (the published port)",
    "client": "the client (this benchmark's process)",
}


def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _serving_pids(hub: Hub) -> dict[str, list[int]]:
    """Host pids of the processes in SERVING for this hub (a kind without a process is left out)."""
    found: dict[str, list[int]] = {"client": [os.getpid()]}
    container = _container_of(hub.service)
    for line in (docker("top", container, "-eo", "pid,args", check=False) if container else "").splitlines()[1:]:
        pid, _, args = line.strip().partition(" ")
        if "configurable-http-proxy" in args:
            found.setdefault("proxy", []).append(int(pid))
        elif "bin/jupyterhub " in args or args.endswith("bin/jupyterhub"):
            found.setdefault("hub", []).append(int(pid))
    port = hub.url.rsplit(":", 1)[1]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        name = Path(argv[0].decode(errors="replace")).name
        if name == "dockerd":
            found.setdefault("dockerd", []).append(int(entry.name))
        elif name == "docker-proxy" and f"-host-port {port} ".encode() in b" ".join(argv) + b" ":
            found.setdefault("docker-proxy", []).append(int(entry.name))
    return found


def _cpu_of(pids: dict[str, list[int]]) -> dict[str, float]:
    return {kind: sum(_cpu_seconds(p) or 0.0 for p in ps) for kind, ps in pids.items()}


LOAD_USERS = 100


@measurement("load", logged_in=LOAD_USERS)
def hub_load(ctx: Context) -> Section:
    r = ctx.rig
    assert r.ours and r.stock
    hubs = {"ours": r.ours, "stock": r.stock}
    concurrency = LOAD_USERS
    people = r.people[:concurrency]
    seconds = 5.0 if ctx.quick else 10.0
    reps = ctx.reps(3)
    for hub in hubs.values():
        r.login(hub, people)
    pids = {kind: _serving_pids(hub) for kind, hub in hubs.items()}
    rps: dict[str, list[float]] = {k: [] for k in hubs}
    p50: dict[str, list[float]] = {k: [] for k in hubs}
    p95: dict[str, list[float]] = {k: [] for k in hubs}
    p99: dict[str, list[float]] = {k: [] for k in hubs}
    errors = dict.fromkeys(hubs, 0)
    cpu: dict[str, dict[str, list[float]]] = {k: {} for k in hubs}  # ms of CPU per answered request, per run
    pairs: list[tuple[str, float | None]] = []  # (which ran first, ours ÷ stock)
    for rep in range(reps):
        # Pairs, ours and stock back to back, alternating which goes first: drift in the machine's
        # load (other work, heat, the page cache) hits both alike.
        order = ["ours", "stock"] if rep % 2 == 0 else ["stock", "ours"]
        for kind in order:
            hub = hubs[kind]
            before = _cpu_of(pids[kind])
            run = asyncio.run(_load(hub, [hub.tokens[u.name] for u in people], seconds))
            after = _cpu_of(pids[kind])
            errors[kind] += run.errors
            rps[kind].append(len(run.latencies) / seconds)
            if run.latencies:
                p50[kind].append(quantile(run.latencies, 0.5) * 1000)
                p95[kind].append(quantile(run.latencies, 0.95) * 1000)
                p99[kind].append(quantile(run.latencies, 0.99) * 1000)
            if run.answered:
                for process in pids[kind]:
                    cpu[kind].setdefault(process, []).append((after[process] - before[process]) * 1000 / run.answered)
        pairs.append((order[0], ratio(rps["ours"][-1], rps["stock"][-1])))
        log(f"hub under load {rep + 1}/{reps} ({order[0]} first): ours {rps['ours'][-1]:.0f}, stock {rps['stock'][-1]:.0f} requests/s, "
            f"ours ÷ stock {times(pairs[-1][1])}")
    rows = []
    for kind in hubs:
        label = LABELS[kind] + ("" if kind == "ours" else " — reference")
        rows.append([label, f"{median(rps[kind]):.0f}", spread(rps[kind], 0), f"{median(p50[kind]):.0f} ms" if p50[kind] else "—",
                     f"{median(p95[kind]):.0f} ms" if p95[kind] else "—", spread(p95[kind], 0), f"{median(p99[kind]):.0f} ms" if p99[kind] else "—",
                     str(errors[kind])])
    ratios = [value for _, value in pairs if value is not None]
    section = Section(
        f"4. The hub under load: GET /hub/api/user, {concurrency} users at once",
        ["", "requests/s median", "requests/s min–max", "p50", "p95 median", "p95 min–max", "p99", "errors"], rows,
        how=(f"{concurrency} users, each with its own API token, each sending `GET /hub/api/user` back to back over one "
             f"keep-alive HTTPS connection for {seconds:.0f} s after a 2 s warm-up (aiohttp, one process). {reps} pairs of runs: "
             "ours and stock back to back, alternating which goes first, so that drift in the machine's load hits both alike; "
             "ours ÷ stock (requests/s) is given for every pair and as the median over the pairs. "
             "Requests go through the hub's proxy (TLS) to the hub, as a browser's do. The client runs on the same two "
             "cores as the hub, so these are lower bounds for the hub. The stock hub (shared-password login, no auth state) is shown for reference."),
        notes=[(f"ours ÷ stock, requests/s, per pair: {', '.join(f'{times(v)} ({first} first)' for first, v in pairs)}; "
                f"median {times(median(ratios))}.")],
    )
    processes = [p for p in SERVING if any(cpu[k].get(p) for k in hubs)]
    if processes:
        section.extra.append(Section(
            "Where a request's CPU time goes (ms of CPU per answered request, median over the runs)",
            ["process", *hubs], [[SERVING[p], *(f"{median(cpu[k][p]):.2f}" if cpu[k].get(p) else "" for k in hubs)] for p in processes],
            notes=[("User and system CPU time of each process from /proc/<pid>/stat over each whole run (warm-up included), divided "
                    "by the requests answered in it. The hub and its proxy run in the hub's container; dockerd writes the containers' "
                    "logs and answers Docker's embedded DNS; docker-proxy carries the published port from 127.0.0.1 into the container. "
                    "Two cores are 2 000 ms of CPU per second, shared by all of these.")],
        ))
    return section


# --- 5. deploy on the lab (placeholder) ------------------------------------------------------------------------------


@measurement("lab")
def lab_deploy(ctx: Context) -> Section:
    """Fresh deploy to three new lab hosts over SSH, then no-op redeploys (see benchmarks/lab.py)."""
    from . import lab

    runs = lab.measure(ctx.reps(3), ctx.rig.workdir)
    section = Section(
        "5. Deploy on the lab: fresh deploy and no-op redeploy, remote commands per host",
        ["", "median", "min–max", "remote commands per host (hub, worker1, worker2)"],
        how=(f"{ctx.reps(3)} repetitions, each on three new Docker-in-Docker hosts (tests/lab/harness.py: own engine, sshd, "
             "nfs-ganesha; prefix bench-lab, 10.98.0.0/24) reached over real SSH. Fresh: no swarm, no images (both images "
             "are sent from this machine with `docker save | ssh docker load`, about 1.5 GB in all). Then the same deploy "
             "again, first with the SSH connections of the last run still open (ControlPersist), then with new ones. "
             "Counted: every command each host's executor ran (reads included). A no-op run that changed anything or "
             "replaced the hub container would stop the benchmark."),
    )
    for case, results in runs.items():
        seconds = [r.seconds for r in results]
        counts = results[-1].commands
        section.rows.append([case, secs(median(seconds)), spread(seconds), ", ".join(str(counts.get(h, 0)) for h in ("hub", "worker1", "worker2"))])
    noop = median([r.seconds for r in runs["no-op redeploy, new SSH connections"]])
    section.targets.append(Target("no-op redeploy on the lab (new SSH connections): median ÷ 15 s", noop / 15 if noop is not None else None, 1.0))
    section.notes.append("No-op redeploys changed nothing and restarted nothing (same hub container; checked on every repetition).")
    return section


# --- 6. image transfer on the lab -------------------------------------------------------------------------------------


@measurement("images")
def image_transfer(ctx: Context) -> Section:
    """Whole images vs only the layers a host lacks: a fresh deploy, and a one-layer change (see benchmarks/lab.py)."""
    from . import lab

    runs = lab.measure_images(ctx.reps(1), ctx.rig.workdir)
    section = Section(
        "6. Image transfer on the lab: whole images vs only the layers a host lacks",
        ["", "deploy time (median)", "min–max", "user image sent per worker (MB, median)"],
        how=(f"{ctx.reps(1)} repetition(s), each way on three new lab hosts: a fresh deploy, then a deploy after the user image "
             f"was rebuilt with one new {lab.CHANGE // 2**20} MiB layer (random bytes). 'Whole images' is the same stream with "
             "nothing skipped (what deploy sent before); the raw floor is `docker save | ssh docker load` of the rebuilt image "
             "onto a worker, with no Deployer in between. MB are what went over SSH, as deploy reports each send."),
    )
    for case, results in runs.items():
        seconds = [r.seconds for r in results]
        sent = [mb for r in results for mb in r.user_image_mb.values()]
        section.rows.append([case, secs(median(seconds)), spread(seconds), f"{median(sent):.1f}" if sent else "—"])
    ours = [mb for r in runs.get("one-layer change, only the layers a host lacks (ours)", []) for mb in r.user_image_mb.values()]
    layer_mb = lab.CHANGE / 1e6
    section.targets.append(Target("one-layer change: MB sent per worker ÷ (1.2 × the layer)", median(ours) / (1.2 * layer_mb) if ours else None, 1.0))
    return section


# --- 7. a spawn through the profile form (issue 15) ----------------------------------------------------------------

FORM_KINDS = ("plain", "form", "floor")
FORM_LABELS = {
    "plain": "ours, plain (API request; no profiles)",
    "form": "ours, profile form (Large)",
    "floor": "floor (docker service create)",
}
FORM_PROFILE = "Large"
NOBODY_GROUP = "bench-nobody"  # no benchmark user is in it


def bench_profiles(user_names: list[str]) -> list[dict]:
    """Three profiles: one for everyone (the default), one for the benchmark's users, one for a group nobody has."""
    return [
        {"name": "Standard", "description": "The usual server"},
        # (more memory only: a CPU limit would slow the server's own start and measure that instead of the form)
        {"name": FORM_PROFILE, "description": "More memory", "memory_limit": "1536M", "users": user_names},
        {"name": "Group only", "description": "For a group nobody is in", "memory_limit": "2G", "groups": [NOBODY_GROUP]},
    ]


def _service_check(service: str, profile: str, memory: int, nano_cpus: int | None) -> str:
    """'' if the notebook's service is what the profile (or none) makes, else what differs."""
    spec = json.loads(docker("service", "inspect", service, "--format", "{{json .Spec}}"))
    label = spec.get("Labels", {}).get("deployer.profile")
    limits = spec["TaskTemplate"].get("Resources", {}).get("Limits", {})
    found = (label, limits.get("MemoryBytes"), limits.get("NanoCPUs"))
    wanted = (profile, memory, nano_cpus)
    return "" if found == wanted else f"{service}: (profile label, memory limit, NanoCPUs) {found}, expected {wanted}"


async def _form_spawn(hub: Hub, cookies: httpx.Cookies, user: str) -> tuple[Spawned, dict[str, float]]:
    async with httpx.AsyncClient(verify=False, cookies=cookies, follow_redirects=False) as client:
        start = time.monotonic()
        return await rig.spawn_via_form(client, hub, user, FORM_PROFILE, start, ["Standard", FORM_PROFILE])


@measurement("profiles", fresh_users=lambda ctx: ctx.reps(5))
def profile_form(ctx: Context) -> Section:
    r = ctx.rig
    reps = ctx.reps(5)
    names = [u.name for u in r.people]
    profiled = r.deploy_profiled({"notebook_profiles": bench_profiles(names), "tenant_groups_claim": "groups"})
    try:
        samples: dict[str, list[float]] = {k: [] for k in FORM_KINDS}
        errors: dict[str, list[str]] = {k: [] for k in FORM_KINDS}
        pairs: list[tuple[str, float | None]] = []  # (which of the two hubs went first, form ÷ plain)
        steps: dict[str, list[float]] = {}
        wrong: list[str] = []
        for rep in range(reps):
            person = r.take(1)  # a new user each repetition, the same one for the three variants
            user = person[0].name
            cookies = rig.login_browser(profiled, person[0])
            if rep == 0:  # the hub renders its spawn page once before the clock runs (its template compiled, as in a hub in use)
                with httpx.Client(verify=False, cookies=cookies, timeout=60) as browser:
                    browser.get(f"{profiled.url}/hub/spawn/{user}").raise_for_status()
            order = FORM_KINDS[rep % 3:] + FORM_KINDS[: rep % 3]
            this: dict[str, float | None] = {}
            for kind in order:
                if kind == "form":
                    result, marks = asyncio.run(_form_spawn(profiled, cookies, user))
                    if result.seconds is not None:
                        for step, value in marks.items():
                            steps.setdefault(step, []).append(value)
                        wrong.append(_service_check(profiled.notebook(user), FORM_PROFILE, 1536 * 2**20, None))
                    asyncio.run(rig.stop_all(profiled, [user]))
                    time.sleep(0.5)  # as ``remove``
                else:
                    results, _ = spawn_at_once(ctx, "ours" if kind == "plain" else "floor", person)
                    result = results[0]
                    if kind == "plain" and result.seconds is not None:
                        wrong.append(_service_check(hub_of(ctx, "ours").notebook(user), "", 2**30, None))
                    remove(ctx, "ours" if kind == "plain" else "floor", person)
                this[kind] = result.seconds
                (samples[kind].append(result.seconds) if result.seconds is not None else errors[kind].append(result.error))
            first = next(k for k in order if k != "floor")
            pairs.append((first, ratio(this["form"], this["plain"])))
            log(f"profile form {rep + 1}/{reps} ({', '.join(order)}): "
                + ", ".join(f"{k} {this[k]:.2f} s" if this[k] is not None else f"{k} failed" for k in FORM_KINDS))
    finally:
        r.remove_profiled()
    med = {k: median(samples[k]) for k in FORM_KINDS}
    section = Section(
        "7. A spawn through the profile form (issue 15) vs the plain spawn",
        ["", "median", "min–max", "vs plain", "vs floor", "failed"],
        how=(f"{reps} repetitions, the three variants interleaved (a different one first each time), each repetition for a new "
             "user (the same one in the three variants; see *Reading the numbers*). **Plain**: ours as in 1 (deployment "
             "jupyterhub.bench.sim, no `notebook_profiles`), timed from sending `POST /hub/api/users/<name>/server` with the "
             "user's API token, through the progress events, to `GET /user/<name>/api` answering 200 through the hub's "
             "proxy. **Profile form**: a second deployment of ours, jupyterhub.bench.sim-profiles on 18444, running beside "
             "the first: the same deployment files, hub image and Rollout, plus `notebook_profiles` (Standard for everyone, "
             f"the default; {FORM_PROFILE}, memory_limit 1536M and no CPU limit like plain's, for the benchmark's users; one more for a group "
             "nobody is in) and `tenant_groups_claim: groups` (which a group-limited profile needs), with its own OAuth "
             "client and ports. The user logged in through the tenant simulator beforehand (untimed) and the client keeps "
             "the session's cookies, as a browser does. Timed from sending `GET /hub/spawn/<name>` (the form page, which "
             "must offer Standard and Large and not the group's profile) through `POST` of the form to its action "
             f"(multipart, `profile={FORM_PROFILE}`, with `_xsrf` in the action's query and the `_xsrf` cookie, as JupyterHub's "
             "page sends it), `GET` of the spawn-pending page it redirects to and the progress events, to the same "
             "`GET /user/<name>/api` answering 200. So the form's clock covers two page loads more than plain's, as a "
             "browser's start does; both end alike. **Floor**: as in 1. Two deployments side by side rather than one "
             "redeployed between the variants: both hubs stay warm and idle while the other spawns (a redeploy would "
             "replace the hub container before every variant); they run the same image on the same engine, and each "
             "has its own notebook names, so neither meets the other's old service names."),
    )
    for kind in FORM_KINDS:
        section.rows.append([FORM_LABELS[kind], secs(med[kind]), spread(samples[kind]),
                             times(ratio(med[kind], med["plain"])) if kind != "floor" else "",
                             times(ratio(med[kind], med["floor"])), f"{len(errors[kind])}/{reps}"])
        section.notes += [f"{kind} failed: {e}" for e in dict.fromkeys(errors[kind])]
    ratios = [v for _, v in pairs if v is not None]
    section.notes.append(f"profile form ÷ plain per repetition: {', '.join(f'{times(v)} ({first} first)' for first, v in pairs)}; "
                         f"median {times(median(ratios))}.")
    problems = [w for w in wrong if w]
    section.notes.append("; ".join(problems) if problems else
                         f"Every form spawn's service was labelled deployer.profile={FORM_PROFILE} with a 1536 MiB memory limit, "
                         "every plain one had no profile and 1 GiB; neither had a CPU limit (checked with `docker service inspect`).")
    section.targets.append(Target("spawn through the profile form ÷ plain spawn (medians)", ratio(med["form"], med["plain"]), 1.05))
    if steps:
        section.extra.append(Section(
            "Where the profile form's time goes (client side, seconds after the GET of the form page)",
            ["step", "median", "min–max"], [[step, secs(median(v)), spread(v)] for step, v in steps.items()],
            notes=[("JupyterHub answers the form's POST after the spawn has run for up to 1 s (then redirects to the "
                    "spawn-pending page); the API's POST waits up to `slow_spawn_timeout` (10 s) and answers 201 once the "
                    "server is ready.")],
        ))
    return section


# --- 8. scale (issue 22): benchmarks/scale.py ------------------------------------------------------------------------

from . import scale  # noqa: E402,F401  (registers "scale", which uses the helpers above)
