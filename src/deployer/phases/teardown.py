"""Removing a deployment's Docker objects from a host: its sidecars (the network guard, the Docker
proxy), and on a manager the hub and notebook services, then the secrets, configs and network
once no task holds them any more."""

from __future__ import annotations

import time

from deployer.config.hubsettings import Layout
from deployer.errors import DeployerError
from deployer.hosts.commands import cmd
from deployer.hosts.executor import Executor
from deployer.phases import dockerproxy, hubrelay, mountguard, netguard


def _lines(ex: Executor, *argv: str) -> set[str]:
    return {line.strip() for line in ex.run(cmd(*argv)).stdout.splitlines() if line.strip()}


def remove(layout: Layout, ex: Executor) -> bool:
    """Returns whether the host's network guard was there (and is now removed)."""
    label = f"label=deployer={layout.name}"
    guard_removed = "removed" in ex.run(netguard.remove_command(layout)).stdout
    ex.run(dockerproxy.remove_command(layout))
    ex.run(hubrelay.remove_command(layout))  # (before the network it is attached to)
    if ex.run(cmd("docker", "info", "--format", "{{.Swarm.ControlAvailable}}"), check=False).stdout.strip() != "true":
        ex.run(mountguard.remove_command(layout))
        return guard_removed  # not a manager (no swarm any more): no services, secrets or configs to remove
    services = _lines(ex, "docker", "service", "ls", "--filter", label, "--format", "{{.Name}}")
    services |= _lines(ex, "docker", "service", "ls", "--filter", f"name={layout.notebook_prefix}", "--format", "{{.Name}}")
    if services:
        ex.run(cmd("docker", "service", "rm", *sorted(services)))
    # Tasks leave asynchronously; secrets, configs and the network are in use until they have.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for kind in ("secret", "config"):
            names = _lines(ex, "docker", kind, "ls", "--filter", label, "--format", "{{.Name}}")
            if names:
                ex.run(cmd("docker", kind, "rm", *sorted(names)), check=False)
        ex.run(cmd("docker", "network", "rm", layout.network), check=False)
        left = _lines(ex, "docker", "network", "ls", "--filter", f"name=^{layout.network}$", "--format", "{{.Name}}")
        left |= _lines(ex, "docker", "secret", "ls", "--filter", label, "--format", "{{.Name}}")
        # Notebooks hold the tenant CA config until their tasks have left, as they hold the network.
        left |= _lines(ex, "docker", "config", "ls", "--filter", label, "--format", "{{.Name}}")
        if not left:  # no notebook left: the mount guard has nothing mounted any more
            ex.run(mountguard.remove_command(layout))
            return guard_removed
        time.sleep(1)
    raise DeployerError(f"Docker objects of {layout.name} are still in use after 60 s: {', '.join(sorted(left))}")
