"""The swarm's own store with thousands of notebook services: what the hub's listings and `docker service ls`
cost as it grows, and where gRPC's 4 MB message limit (moby #37997) would stop them.

    .venv/bin/python -m benchmarks.swarmstore [--sizes 0,500,1000,2000,3000]

Each service has a notebook's spec as TenantSwarmSpawner makes it (image, 16 environment variables,
four mount-guard volumes with their driver options, labels, no capabilities, a uid:gid, memory and
pids limits, placement, restart none, DNS round robin) and one task, kept pending by a placement no
node satisfies: the task and the spec are in the store as a running server's are, but no container
runs, so thousands fit on this machine. Prints a markdown table; removes every ``storebench-`` service.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import docker
from docker.types import ContainerSpec, DriverConfig, EndpointSpec, Mount, Placement, Resources, RestartPolicy, ServiceMode, TaskTemplate

PREFIX = "storebench-nb-"
IMAGE = "deployer/jupyteruser:0.2.0"


def spec(i: int) -> dict:
    user = f"user{i:05d}"
    env = {f"JUPYTERHUB_{k}": f"/user/{user}/{k.lower()}-value" for k in
           ("API_URL", "ACTIVITY_URL", "BASE_URL", "CLIENT_ID", "HOST", "OAUTH_CALLBACK_URL", "OAUTH_SCOPES", "OAUTH_ACCESS_SCOPES",
            "OAUTH_CLIENT_ALLOWED_SCOPES", "SERVER_NAME", "SERVICE_PREFIX", "SERVICE_URL", "USER", "DEFAULT_URL")}
    env.update(HOME="/home/jupyter", AGAVE_CACHE_DIR="/home/jupyter/.agave")
    mounts = [Mount(target=t, source=f"jupyterhub-bench-mounts-{i:05d}-{n}", type="volume", no_copy=True,
                    driver_config=DriverConfig("jupyterhub-bench-mounts", {"source": f"/srv/deployer/bench/share/data/sim/{user}/{n}"}))
              for n, t in enumerate(("/home/jupyter/permanent", "/home/jupyter/shared", "/home/jupyter/.agave", "/home/jupyter/project"))]
    container = ContainerSpec(IMAGE, args=["jupyterhub-singleuser"], env=env, mounts=mounts, user="5001:6001", cap_drop=["ALL"],
                              labels={"deployer.netguard": "jupyterhub-bench"})
    resources = Resources(mem_limit=1 << 30)
    resources.setdefault("Limits", {})["Pids"] = 4096
    task = TaskTemplate(container_spec=container, resources=resources, restart_policy=RestartPolicy(condition="none"),
                        placement=Placement(constraints=["node.labels.storebench.nowhere==true"]))
    return dict(task_template=task, name=f"{PREFIX}{user}", mode=ServiceMode("replicated", replicas=1), endpoint_spec=EndpointSpec(mode="dnsrr"),
                labels={"deployer.user": user, "deployer.tenant": "sim", "deployer.server": "", "deployer.profile": ""})


def timed(fn, reps: int = 5) -> tuple[float, object]:
    samples, result = [], None
    for _ in range(reps):
        start = time.perf_counter()
        result = fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), result


def dockerd_rss_mib() -> float:
    pid = subprocess.run(["pidof", "dockerd"], capture_output=True, text=True).stdout.split()[0]
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def raft_mib() -> float:
    out = subprocess.run(["du", "-sb", "/var/lib/docker/swarm/raft"], capture_output=True, text=True).stdout.split()
    return int(out[0]) / 2**20 if out else float("nan")


def cli_ls() -> str:
    done = subprocess.run(["docker", "service", "ls", "-q"], capture_output=True, text=True)
    return "ok" if done.returncode == 0 else done.stderr.strip()[:80]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="0,500,1000,2000,3000")
    args = parser.parse_args()
    sizes = sorted({int(s) for s in args.sizes.split(",")})
    client = docker.from_env(timeout=600)
    api = client.api
    made: list[str] = []
    rows = []
    try:
        for size in sizes:
            start, before = time.perf_counter(), len(made)
            with ThreadPoolExecutor(8) as pool:
                made += [s["ID"] for s in pool.map(lambda i: api.create_service(**spec(i)), range(before, size))]
            fill = (time.perf_counter() - start) / max(1, size - before)
            names = [f"{PREFIX}user{i:05d}" for i in range(min(size, 100))]
            listing, services = timed(lambda: api.services(filters={"name": PREFIX}))
            tasks_time, tasks = timed(lambda: api.tasks(filters={"service": names}) if names else [])
            size_bytes = len(json.dumps(services))
            ls_time, ls = timed(cli_ls, reps=3)
            rows.append([f"{size:,}", f"{fill * 1000:.0f}" if size > before else "-", f"{listing * 1000:.0f}", f"{size_bytes / 2**20:.1f}",
                         f"{size_bytes / max(1, size) / 1024:.1f}" if size else "-", f"{tasks_time * 1000:.0f}", f"{ls_time * 1000:.0f} ({ls})",
                         f"{raft_mib():.0f}", f"{dockerd_rss_mib():.0f}"])
            print(" | ".join(rows[-1]), flush=True)
    finally:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(api.remove_service, made))
    print()
    print("| services | create, ms each | hub's listing (name prefix), ms | its answer, MiB | per service, KiB | 100 services' tasks, ms "
          "| `docker service ls` | raft dir, MiB | dockerd RSS, MiB |")
    print("|" + "---|" * 9)
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"\nmachine: {os.cpu_count()} cores; docker {client.version()['Version']}")


if __name__ == "__main__":
    main()
