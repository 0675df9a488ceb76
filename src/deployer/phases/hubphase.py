"""The hub's phase, as the Rollout runs it on the hub's executor (this machine or over SSH): its
spec (settings, secrets, files), the facts of its Docker objects, the hub's directories, the
workers' guards and the hub's Docker proxy, and removing all of it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from deployer.config import hubsettings
from deployer.config.hubsettings import HUB_ROOT, TENANT_CA, Layout
from deployer.config.loader import Deployment
from deployer.errors import DeployerError
from deployer.hosts.commands import Command, cmd, sh
from deployer.hosts.executor import Executor
from deployer.hosts.state import StateDir
from deployer.phases import dockerproxy, images, netguard, sidecars, tls
from deployer.phases.hubservice import HubSpec, SwarmFacts, config_name


def hub_spec(deployment: Deployment, layout: Layout, state: StateDir, *, https_port: int = 443, http_port: int = 80,
             image_id: str = "") -> tuple[HubSpec, bool]:
    config = deployment.config
    supplied = (config.jupyterhub_cert, config.jupyterhub_key.get_secret_value()) if config.jupyterhub_cert and config.jupyterhub_key else None
    cert, key, self_signed = tls.hub_pair(state, config.hub_address.host, supplied)
    secrets = {"cookie_secret": state.secret("cookie_secret"), "crypt_key": state.secret("crypt_key"), "ssl_key": key}
    if config.login == "local-dev":
        secrets["local_dev_password"] = config.local_dev_password.get_secret_value()
    else:
        secrets["oauth_client_secret"] = config.jupyterhub_oauth_client_secret.get_secret_value()
    if config.tas_role_pass is not None and config.uses_tas:
        secrets["tas_role_pass"] = config.tas_role_pass.get_secret_value()
    files = {f"{HUB_ROOT}/ssl/cert.pem": cert}
    if config.tenant_ca_bundle:
        files[TENANT_CA] = config.tenant_ca_bundle
    settings = hubsettings.settings(deployment, layout, https_port=https_port, http_port=http_port)
    if settings["tenant"].get("ca_bundle") and config.tenant_ca_bundle:
        # Notebooks get the same config object as the hub's tenant-ca.pem (the spawner attaches it
        # to each notebook service by this name): content-addressed, removed with the others.
        settings["notebooks"]["ca_config"] = config_name(layout, TENANT_CA, config.tenant_ca_bundle)
    return HubSpec(layout, config.jupyterhub_image, settings, secrets, files, https_port, http_port, image_id), self_signed


def _lines(ex: Executor, *argv: str) -> set[str]:
    return {line.strip() for line in ex.run(cmd(*argv)).stdout.splitlines() if line.strip()}


def read_facts(ex: Executor, layout: Layout) -> SwarmFacts:
    label = f"label=deployer={layout.name}"
    facts = SwarmFacts(
        networks=_lines(ex, "docker", "network", "ls", "--filter", label, "--format", "{{.Name}}"),
        secrets=_lines(ex, "docker", "secret", "ls", "--filter", label, "--format", "{{.Name}}"),
        configs=_lines(ex, "docker", "config", "ls", "--filter", label, "--format", "{{.Name}}"),
    )
    inspect = ex.run(cmd("docker", "service", "inspect", layout.hub_service, "--format", '{{index .Spec.Labels "deployer.spec"}}'), check=False)
    if inspect.code == 0:
        facts.hub_spec_hash = inspect.stdout.strip()
    return facts


def directory_commands(deployment: Deployment, layout: Layout, missing: Callable[[list[str]], set[str]] | None = None) -> list[Command]:
    """The hub's data directory, the share with the token root, and the static part of every
    mount below the share (per-user directories are made by the spawner, owned by the user).
    ``missing`` says which of the given directories do not exist (default: on this machine)."""
    static = [m.static_host_dir for m in deployment.config.volume_mounts if m.static_host_dir.startswith(layout.share_dir)]
    commands = [cmd("install", "-d", "-m", "0700", layout.data_dir, why="the hub's database directory"),
                cmd("install", "-d", "-m", "0700", layout.docker_proxy_dir, why="the socket of the hub's Docker proxy"),
                # The share's top is readable (NFS clients list it); the token root is not.
                cmd("install", "-d", "-m", "0755", layout.share_dir, why="the share"),
                cmd("install", "-d", "-m", "0711", layout.token_root, why="the share's token root")]
    if static:
        commands.append(cmd("install", "-d", "-m", "0755", *sorted(set(static)), why="the static part of the mounts below the share"))
    missing = missing or (lambda paths: {p for p in paths if not Path(p).is_dir()})
    absent = missing([p for c in commands for p in c.argv[4:]])
    return [c for c in commands if any(p in absent for p in c.argv[4:])]


def missing_on(ex) -> Callable[[list[str]], set[str]]:
    """A ``missing`` for directory_commands that asks the executor's host (one command)."""
    def missing(paths: list[str]) -> set[str]:
        return set(ex.run(sh('for d; do [ -d "$d" ] || echo "$d"; done', *paths)).stdout.split())
    return missing


def _image_id(ex, image: str, what: str, key: str) -> str:
    found = images.image_id(ex, image)
    if found is None:
        raise images.ImageError(f"{ex.host}: the image of {what}, {image}, is not there; build it with scripts/build-images "
                                f"(or set {key} to an image the host has)")
    return found


def guard_commands(deployment: Deployment, layout: Layout, ex, *, https_port: int = 443, http_port: int = 80) -> list[Command]:
    """Start or replace the executor's host's network guard when its spec differs from the running one."""
    image_id = _image_id(ex, deployment.config.network_guard_image, netguard.WHAT, "network_guard_image")
    guard = netguard.sidecar(deployment, layout, image_id, https_port=https_port, http_port=http_port)
    return sidecars.commands(guard, sidecars.current(ex, guard.name))


def proxy_commands(deployment: Deployment, layout: Layout, ex) -> list[Command]:
    """Start or replace the hub host's Docker proxy (before the hub service, which mounts its socket)."""
    image_id = _image_id(ex, deployment.config.jupyterhub_image, dockerproxy.WHAT, "jupyterhub_image")
    proxy = dockerproxy.sidecar(deployment, layout, image_id)
    return sidecars.commands(proxy, sidecars.current(ex, proxy.name))


def wait_until_gone(ex: Executor, service: str, timeout: float = 60) -> None:
    """Until the old hub's container has stopped: else it may answer the health check in its
    grace period and the new one would be taken for ready."""
    deadline = time.monotonic() + timeout
    while _lines(ex, "docker", "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={service}"):
        if time.monotonic() > deadline:
            raise DeployerError(f"the old {service} container did not stop within {timeout:.0f} s")
        time.sleep(0.5)


def remove(layout: Layout, ex: Executor) -> bool:
    """Returns whether the host's network guard was there (and is now removed)."""
    label = f"label=deployer={layout.name}"
    guard_removed = "removed" in ex.run(netguard.remove_command(layout)).stdout
    ex.run(dockerproxy.remove_command(layout))
    if ex.run(cmd("docker", "info", "--format", "{{.Swarm.ControlAvailable}}"), check=False).stdout.strip() != "true":
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
        if not left:
            return guard_removed
        time.sleep(1)
    raise DeployerError(f"Docker objects of {layout.name} are still in use after 60 s: {', '.join(sorted(left))}")
