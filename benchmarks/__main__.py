"""Deployer's benchmarks: ``benchmarks/run [--reps N] [--quick] [--only KEY,...] [--scale-... ]``.

Prints the tables and writes them, with the machine's details, to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

from rich.console import Console

from .measures import MEASUREMENTS, Context
from .scale import QUICK, ScaleOptions
from .report import load_average, machine, markdown, print_section, target_section
from .rig import ROOT, Rig, log

INTRO = """
# Benchmarks

`benchmarks/run` measures how fast Deployer's hub gets users to their notebooks on this machine,
side by side with dockerspawner's stock `SwarmSpawner` and with the floor, plain `docker service
create` of the same notebook image, and how long `deployer deploy` takes on three lab hosts over
SSH (fresh, then a no-op), all in one run:

```sh
benchmarks/run              # about 18 minutes on 2 cores: 5 single spawns, 3 bursts of 10 and of 20, 3 lab deploys
benchmarks/run --quick      # about 5 minutes: 1 repetition, bursts of 10 only
benchmarks/run --reps 7     # more repetitions of everything
benchmarks/run --only single,load   # a subset (single, bursts, browser, load, lab, images, profiles, scale)
benchmarks/run --only scale  # about 40 minutes (estimated): bursts of 50 and 100, then 0, 100, 300 and up to 1000 servers running
benchmarks/run --only scale --scale-max 500 --scale-sizes 0,100,300 --scale-bursts 50,100 --scale-window 60
```

`scale` (issue 22) runs only when named in `--only`: it fills this machine's memory (up to 4 GiB left
free) and takes long. Its sizes are options: `--scale-max` caps the largest number of servers
running at once (default 1000; below that, what memory allows), `--scale-sizes` the sizes measured
before it, `--scale-bursts` the burst sizes, `--scale-window` the idle window, `--scale-requests`
the requests per page (`benchmarks/run --help`).

It needs what `scripts/test` sets up (the venv, Docker in swarm mode, Chromium) and builds the
images when they changed. It uses ports 18443/18080 (ours), 18444/18081 (ours with profiles, for
`profiles`), 18445/18082 (ours with the stand-in notebook, for `scale`) and 19443/19080 (stock),
names what it makes `bench-ours*`, `bench-stock*`, `bench-floor*` and `bench-standin:0.2.0` (the
stand-in image), and removes all of it at the end, also after a failure or Ctrl-C (the lab hosts are
`bench-lab-*` containers on 10.98.0.0/24). This page is written by the last run.

What runs:

- **ours**: Deployer's hub deployed from deployment files by the Rollout (`deployer deploy`; as the
  swarm test tier does; published on 18443 instead of 443), `TenantSwarmSpawner`, Agave login
  through the tenant simulator over HTTPS, TAS uid/gid, per-user mounts below the share, 1 GiB
  memory limit, JupyterLab.
- **stock**: the same hub image with `dockerspawner.SwarmSpawner` and JupyterHub's shared-password
  login (`benchmarks/stock_jupyterhub_config.py`). What it needed beyond ours' settings:
  `network_name` (the stock default is no network), `hub_connect_url` (the notebook reaches the hub
  by its service name), `extra_endpoint_spec = {"mode": "dnsrr"}` (the stock virtual IP needs the
  kernel's IPVS, which this machine lacks, so the hub never reached the notebook), and the bind
  sources `share/data/<user>` made beforehand (the stock spawner does not create them). No `user` or
  `extra_container_spec` was needed: the image runs as its own user 1000:100 (the stock spawner
  cannot run a notebook as the user's TAS uid/gid; ours does).
- **floor**: `docker service create --no-resolve-image` with ours' container spec (image,
  `jupyterhub-singleuser`, uid:gid, the same three bind mounts, memory limit, placement, overlay
  network, DNS round robin, no restart, the same environment), probed from a container on the same
  attachable overlay network at the task's address. `jupyterhub-singleuser` asks the hub's API for
  its version before it serves, so that container also answers as a stand-in hub API
  (`benchmarks/probe.py`), in microseconds.
- **scale** (`benchmarks/scale.py`): a third deployment of ours (jupyterhub.bench.sim-scale, the
  same deployment files, hub image and Rollout) whose notebook image is a stand-in,
  `bench-standin:0.2.0`, built by the benchmark from `benchmarks/standin/Dockerfile`: Deployer's
  notebook image (so the same entrypoint, uid/gid handling, user, PATH and command) with
  `jupyterhub-singleuser` replaced by a standard-library Python HTTP server that listens where
  JupyterHub tells it (`JUPYTERHUB_SERVICE_URL`, port 8888) and answers 200 to every request. Its
  process takes about 10 MB where JupyterLab takes some 100 MB and a second of CPU to start (a
  running stand-in costs the machine some 16 MiB in all, container and network included), so
  hundreds of servers fit on this machine and what is measured is the spawners, the swarm, the hub
  and its proxies, not JupyterLab. One burst through ours with the real image calibrates it. The
  stock hub spawns the stand-in too while `scale` runs (the floor creates it with ours' spec). The
  scale deployment's notebook network is the one deploy makes (a /19: 8,189 addresses). The hub's calls to its
  Docker proxy are counted by a relay in front of the proxy's socket (`benchmarks/callcount.py`; the
  proxy logs refusals only).

Reading the numbers:

- A spawn through a hub ends when the notebook answers through the hub's proxy. After the spawner
  returns, JupyterHub checks the notebook's port itself, retrying after random waits of up to 0.2,
  0.4, 0.8, 1.6, 3.2, then 5 s; the profile tables show that as the gap between "notebook server
  listening" and "hub: spawn finished".
- Every spawn is for a user who has not had a server yet. With this hub image, re-creating a
  user's notebook service less than 10 minutes after the last one was removed fails in both hubs
  after `http_timeout`: JupyterHub's HTTP client (aiohttp with aiodns, i.e. c-ares) keeps the
  service name's address for the TTL Docker's DNS gives it (600 s) and connects to the old
  container's address.
- The machine may be shared: the table below gives the load average and the other containers
  running; a busy machine makes every variant slower and noisier, the floor included.

Adding a measurement: one function in `benchmarks/measures.py` that returns a `Section` (rows of a
table), registered with `@measurement` (`lab_deploy` delegates to `benchmarks/lab.py`; `scale` lives in
`benchmarks/scale.py`, imported at the end of `measures.py`).
"""


def parse(argv: list[str]) -> argparse.Namespace:
    keys = [m.key for m in MEASUREMENTS]
    parser = argparse.ArgumentParser(prog="benchmarks/run", description="Deployer's benchmarks (writes docs/benchmarks.md).")
    parser.add_argument("--reps", type=int, default=None, help="repetitions of every measurement (default: 5 single and profile-form spawns, 3 of the rest)")
    parser.add_argument("--quick", action="store_true", help="1 repetition, bursts of 10 only, shorter load test")
    parser.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(keys)}")
    parser.add_argument("--output", default=str(ROOT / "docs" / "benchmarks.md"), help="where to write the tables (default: docs/benchmarks.md)")
    default = ScaleOptions()
    scale = parser.add_argument_group("scale (run only when named: --only scale)")
    scale.add_argument("--scale-max", type=int, default=None, metavar="N",
                       help=f"most servers running at once; the largest N is what memory allows (leaving {default.free_gib:g} GiB free), at most this "
                            f"(default {default.largest})")
    scale.add_argument("--scale-sizes", default=None, metavar="N,N,...",
                       help=f"running servers to measure at before the largest (default {','.join(map(str, default.sizes))}; memory per server is taken at the first above 0)")
    scale.add_argument("--scale-bursts", default=None, metavar="N,N,...", help=f"burst sizes (default {','.join(map(str, default.bursts))})")
    scale.add_argument("--scale-window", type=float, default=None, metavar="S", help=f"seconds of each idle window (default {default.window:g})")
    scale.add_argument("--scale-requests", type=int, default=None, metavar="N", help=f"sequential requests per page and size (default {default.requests})")
    args = parser.parse_args(argv)
    args.only = [k for k in args.only.split(",") if k]
    unknown = set(args.only) - set(keys)
    if unknown:
        parser.error(f"unknown measurement(s): {', '.join(sorted(unknown))}")
    if args.reps is not None and args.reps < 1:
        parser.error("--reps must be at least 1")
    args.scale = None
    given = {"largest": args.scale_max, "sizes": args.scale_sizes, "bursts": args.scale_bursts, "window": args.scale_window, "requests": args.scale_requests}
    if any(v is not None for v in given.values()):
        try:
            for key in ("sizes", "bursts"):
                if given[key] is not None:
                    given[key] = tuple(int(n) for n in given[key].split(",") if n.strip())
        except ValueError:
            parser.error("--scale-sizes and --scale-bursts take numbers separated by commas")
        base = QUICK if args.quick else default
        args.scale = replace(base, **{k: v for k, v in given.items() if v is not None})
        if not args.scale.bursts or min(args.scale.bursts) < 1 or min(args.scale.sizes, default=0) < 0 or args.scale.largest < 1:
            parser.error("--scale-bursts need at least one size above 0, --scale-sizes none below 0, --scale-max at least 1")
        if args.scale.window <= 0 or args.scale.requests < 1:
            parser.error("--scale-window must be above 0, --scale-requests at least 1")
    return args


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # so that the rig's clean-up runs


def main(argv: list[str]) -> int:
    args = parse(argv)
    signal.signal(signal.SIGTERM, _terminated)
    chosen = [m for m in MEASUREMENTS if m.key in args.only] if args.only else [m for m in MEASUREMENTS if not m.opt_in]
    command = "benchmarks/run" + "".join(f" {a}" for a in argv)
    console = Console(width=None if sys.stdout.isatty() else 160)
    started = time.monotonic()
    facts = machine(ROOT)
    sections = []
    ctx = Context(None, args.reps, args.quick, args.scale)  # type: ignore[arg-type]  # the rig comes next
    pool = max([sum(m.fresh_users(ctx) for m in chosen), *(m.logged_in for m in chosen), 1])
    with Rig(pool) as rig:
        ctx.rig = rig
        for m in chosen:
            log(f"measuring: {m.key}")
            began = time.monotonic()
            sections.append(m.func(ctx))
            log(f"{m.key} took {time.monotonic() - began:.0f} s")
    took = time.monotonic() - started
    facts.append(("load average at the end", load_average()))
    console.print()
    for fact, value in facts:
        console.print(f"[bold]{fact}:[/bold] {value}")
    console.print()
    for section in [target_section(sections), *sections]:
        if section.rows or section.notes:
            print_section(console, section)
            console.print()
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(markdown(INTRO, facts, sections, command, took))
    console.print(f"written to {output} ({took / 60:.1f} minutes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
