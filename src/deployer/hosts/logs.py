"""``deployer logs``: the hub's or a user's notebook log, read through the swarm manager (the hub),
whichever worker runs the container."""

from __future__ import annotations

from deployer.config.hubsettings import Layout
from deployer.errors import DeployerError
from deployer.hosts.commands import Command, cmd, sh


def notebook_service(ex, layout: Layout, user: str, server: str = "") -> str:
    """The user's notebook service of this deployment (a named server's with ``server``); a clear error when
    there is none. A named server's service is <prefix>-<user>--<server>; an escaped username never holds '--'."""
    prefix = f"{layout.notebook_prefix}-"
    filters = ["--filter", f"label=deployer.user={user}", "--filter", f"name={prefix}"]
    if server:
        filters += ["--filter", f"label=deployer.server={server}"]
    found = ex.run(cmd("docker", "service", "ls", *filters, "--format", "{{.Name}}"), check=False)
    names = [n for n in found.stdout.split() if n.startswith(prefix) and (server or "--" not in n[len(prefix):])]
    if found.code != 0 or not names:
        which = f" {server!r}" if server else ""
        raise DeployerError(f"{ex.host}: {user} has no notebook server{which} in {layout.name} (it is not running, or was stopped "
                            "and removed; a named server's log needs --server NAME); `deployer status` lists the running ones")
    return names[0]


def hub_service(ex, layout: Layout) -> str:
    if ex.run(cmd("docker", "service", "inspect", layout.hub_service), check=False).code != 0:
        raise DeployerError(f"{ex.host}: no hub service {layout.hub_service}: run `deployer deploy` first")
    return layout.hub_service


def logs_command(service: str, tail: int, follow: bool) -> Command:
    """The service's log (both streams, with timestamps), the last ``tail`` lines, then new ones if ``follow``."""
    return sh('exec docker service logs --timestamps --no-task-ids --tail "$2" $3 "$1" 2>&1', service, str(tail), "--follow" if follow else "")
