"""Phases: the share. On the hub, its directories, the marker file and the NFS export to the
workers' addresses only; on every other worker, the mount (made only where the worker does not
already see the hub's marker: a site file system mounted there is left as it is)."""

from __future__ import annotations

import secrets
from dataclasses import replace

from deployer.hosts.commands import Command, cmd, sh
from deployer.phases import nfs
from deployer.phases.base import Context, Facts, Phase, Planned, is_placeholder, placeholder
from deployer.phases.facts import hub_directories

SLOW = 1200  # installing packages


def other_workers(ctx: Context) -> list:
    return [w for w in ctx.deployment.workers if w.host_id != ctx.deployment.hub.host_id]


def marker_command(ctx: Context) -> Command:
    """Written once on the hub (kept across deploys); the value is random, so it is not on the command line."""
    return sh('[ -s "$1" ] || { cat >"$1"; chmod 0644 "$1"; }', f"{ctx.layout.share_dir}/{nfs.MARKER}",
              input=f"{ctx.layout.name} {secrets.token_hex(16)}".encode(), why="the share's marker, for the workers to prove they see it")


def plan_hub(ctx: Context, facts: Facts) -> Planned:
    planned, hub = Planned(), ctx.deployment.hub
    f = facts[hub.host_id]
    for path, mode, why in hub_directories(ctx.deployment, ctx.layout):
        if path in f.missing_dirs:
            planned.add(hub.host_id, cmd("install", "-d", "-m", mode, path, why=why))
    if not f.marker:
        planned.add(hub.host_id, marker_command(ctx))
    clients = [w.address for w in other_workers(ctx)]
    if clients:
        kernel = ctx.deployment.config.use_stock_nfs
        commands = nfs.server_commands(ctx.layout, clients, f.nfs or nfs.ServerFacts(), kernel=kernel)
        planned.add(hub.host_id, *(replace(c, timeout=SLOW) for c in commands))
        if not commands:
            planned.ok(hub.host_id, f"exports the share with {'the kernel NFS server' if kernel else 'nfs-ganesha'}")
    if hub.host_id not in planned.commands:
        planned.ok(hub.host_id, "share in place")
    return planned


def expect_hub(ctx: Context, facts: Facts, planned: Planned) -> None:
    f = facts[ctx.deployment.hub.host_id]
    f.missing_dirs = set()
    f.marker = f.marker or placeholder("marker")
    clients = [w.address for w in other_workers(ctx)]
    if clients:
        f.nfs = nfs.served(ctx.layout, clients, f.nfs or nfs.ServerFacts(), kernel=ctx.deployment.config.use_stock_nfs)


def plan_workers(ctx: Context, facts: Facts) -> Planned:
    planned, hub = Planned(), ctx.deployment.hub
    marker = facts[hub.host_id].marker
    for host in other_workers(ctx):
        f = facts[host.host_id]
        if marker and f.marker == marker:
            planned.ok(host.host_id, "sees the share")
        else:
            # Before the hub has written its marker (plan on fresh hosts), whether a worker already sees the
            # share (a site file system mounted there) is known only when deploy gets here.
            unless = "it already sees the share once the hub has written its marker" if is_placeholder(marker) else ""
            commands = nfs.mount_commands(ctx.layout, hub.address, has_client=f.nfs_client)
            planned.add(host.host_id, *(replace(c, timeout=SLOW, unless=unless) for c in commands))
    return planned


def expect_workers(ctx: Context, facts: Facts, planned: Planned) -> None:
    for host_id in planned.commands:
        facts[host_id].marker = facts[ctx.deployment.hub.host_id].marker


def check_workers(ctx: Context, facts: Facts) -> list[str]:
    hub = ctx.deployment.hub
    return [f"{w.host_id}: mounted {hub.address}:{ctx.layout.share_dir} but does not see the hub's files there; "
            f"check the NFS export on {hub.host_id} and that {w.host_id}'s address {w.address} is the one it connects from"
            for w in other_workers(ctx) if facts[w.host_id].marker != facts[hub.host_id].marker]


HUB = Phase("the share on the hub: directories, NFS export", plan_hub, expect_hub)
WORKERS = Phase("the share on the workers: mounts", plan_workers, expect_workers, check_workers)
