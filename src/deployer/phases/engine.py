"""Phase: a Docker engine on every host (Debian's docker.io where none answers)."""

from __future__ import annotations

from dataclasses import replace

from deployer.hosts.commands import sh
from deployer.phases.base import Context, Facts, Phase, Planned, placeholder

INSTALL_DOCKER = replace(sh(
    "set -e; if ! command -v dockerd >/dev/null; then export DEBIAN_FRONTEND=noninteractive; "
    "apt-get update -q; apt-get install -y -q docker.io; fi\n"
    "if [ -d /run/systemd/system ]; then systemctl enable --now docker; else service docker start; fi\n"
    "for i in $(seq 60); do docker info >/dev/null 2>&1 && exit 0; sleep 1; done; echo 'the Docker engine did not start' >&2; exit 1",
    why="no Docker engine answers: install and start Debian's docker.io"), timeout=1200)


def plan(ctx: Context, facts: Facts) -> Planned:
    planned = Planned()
    for host in ctx.deployment.hosts:
        version = facts[host.host_id].docker
        if version is None:
            planned.add(host.host_id, INSTALL_DOCKER)
        else:
            planned.ok(host.host_id, f"Docker {version}")
    return planned


def expect(ctx: Context, facts: Facts, planned: Planned) -> None:
    for host_id in planned.commands:
        facts[host_id].docker = placeholder("installed")


PHASE = Phase("Docker engines", plan, expect)
