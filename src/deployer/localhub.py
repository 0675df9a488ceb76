"""A hub on this machine: a single-node swarm that is both hub and worker, no SSH.

Reads the swarm's facts, runs only the commands that change something, then waits
(bounded) for the hub to answer. Used by the `swarm` test tier and by ``scripts/up``.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import dockerproxy, hubsettings, images, netguard, sidecars, tls
from .commands import Command, cmd, sh
from .errors import DeployerError
from .executor import LocalExecutor
from .hubservice import HubSpec, SwarmFacts, config_name, network_commands, object_commands, service_commands
from .hubsettings import HUB_ROOT, TENANT_CA, Layout
from .loader import Deployment
from .state import StateDir


@dataclass
class Outcome:
    url: str
    ran: list[Command] = field(default_factory=list)
    self_signed: bool = False


def state_for(deployment: Deployment) -> StateDir:
    return StateDir(deployment.files.workdir / ".deployer" / Layout.of(deployment).name)


def hub_spec(deployment: Deployment, layout: Layout, state: StateDir, *, https_port: int = 443, http_port: int = 80,
             image_id: str = "") -> tuple[HubSpec, bool]:
    config = deployment.config
    supplied = (config.jupyterhub_cert, config.jupyterhub_key.get_secret_value()) if config.jupyterhub_cert and config.jupyterhub_key else None
    cert, key, self_signed = tls.hub_pair(state, config.jupyterhub_host, supplied)
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


def _lines(ex: LocalExecutor, *argv: str) -> set[str]:
    return {line.strip() for line in ex.run(cmd(*argv)).stdout.splitlines() if line.strip()}


def read_facts(ex: LocalExecutor, layout: Layout) -> SwarmFacts:
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


def swarm_commands(ex: LocalExecutor) -> list[Command]:
    """Initialise a single-node swarm and give this node both roles, if not done yet."""
    state = ex.run(cmd("docker", "info", "--format", "{{.Swarm.LocalNodeState}}")).stdout.strip()
    if state != "active":
        return [cmd("docker", "swarm", "init", "--advertise-addr", "127.0.0.1", why="single-node swarm on this machine")]
    node = ex.run(cmd("docker", "info", "--format", "{{.Swarm.NodeID}}")).stdout.strip()
    labels = json.loads(ex.run(cmd("docker", "node", "inspect", node, "--format", "{{json .Spec.Labels}}")).stdout or "{}") or {}
    missing = [f"deployer.{role}=true" for role in ("hub", "worker") if labels.get(f"deployer.{role}") != "true"]
    if not missing:
        return []
    return [cmd("docker", "node", "update", *sum((["--label-add", m] for m in missing), []), node, why="this node is hub and worker")]


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


def up(deployment: Deployment, ex: LocalExecutor | None = None, *, https_port: int = 443, http_port: int = 80, wait: float = 120) -> Outcome:
    ex = ex or LocalExecutor()
    layout = Layout.of(deployment)
    state = state_for(deployment)
    ran: list[Command] = []
    for _ in range(2):  # swarm init, then labels
        for command in swarm_commands(ex):
            ex.run(command)
            ran.append(command)
    for command in directory_commands(deployment, layout):
        ex.run(command)
        ran.append(command)
    for command in guard_commands(deployment, layout, ex, https_port=https_port, http_port=http_port):
        ex.run(command)
        ran.append(command)
    spec, self_signed = hub_spec(deployment, layout, state, https_port=https_port, http_port=http_port,
                                 image_id=images.image_id(ex, deployment.config.jupyterhub_image) or "")
    for command in proxy_commands(deployment, layout, ex):
        ex.run(command)
        ran.append(command)
    facts = read_facts(ex, layout)
    for command in network_commands(layout, facts) + object_commands(spec, facts) + service_commands(spec, facts):
        ex.run(command)
        ran.append(command)
        if command.argv[:3] == ("docker", "service", "rm"):
            wait_until_gone(ex, layout.hub_service)
    wait_for_hub(f"https://127.0.0.1:{https_port}", wait, ex, layout)
    return Outcome(f"https://{deployment.config.jupyterhub_host}", ran, self_signed)


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
    return sidecars.commands(guard, sidecars.parse_current(ex.run(netguard.read_command(layout)).stdout))


def proxy_commands(deployment: Deployment, layout: Layout, ex) -> list[Command]:
    """Start or replace the hub host's Docker proxy (before the hub service, which mounts its socket)."""
    image_id = _image_id(ex, deployment.config.jupyterhub_image, dockerproxy.WHAT, "jupyterhub_image")
    proxy = dockerproxy.sidecar(deployment, layout, image_id)
    return sidecars.commands(proxy, sidecars.parse_current(ex.run(dockerproxy.read_command(layout)).stdout))


def wait_until_gone(ex: LocalExecutor, service: str, timeout: float = 60) -> None:
    """Until the old hub's container has stopped: else it may answer the health check in its
    grace period and the new one would be taken for ready."""
    deadline = time.monotonic() + timeout
    while _lines(ex, "docker", "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={service}"):
        if time.monotonic() > deadline:
            raise DeployerError(f"the old {service} container did not stop within {timeout:.0f} s")
        time.sleep(0.5)


def wait_for_hub(url: str, timeout: float, ex: LocalExecutor, layout: Layout) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # our own (possibly self-signed) certificate, on loopback
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/hub/health", timeout=5, context=context) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    logs = ex.run(cmd("docker", "service", "logs", "--tail", "30", layout.hub_service), check=False)
    raise DeployerError(f"the hub did not answer at {url} within {timeout:.0f} s; last log lines:\n{logs.stdout[-3000:]}{logs.stderr[-1000:]}")


def down(deployment: Deployment, ex: LocalExecutor | None = None) -> None:
    """Remove the hub, the notebooks, and the Docker objects of this deployment (not the data)."""
    remove(Layout.of(deployment), ex or LocalExecutor())


def remove(layout: Layout, ex: LocalExecutor) -> bool:
    """Returns whether the host's network guard was there (and is now removed)."""
    label = f"label=deployer={layout.name}"
    guard_removed = "removed" in ex.run(netguard.remove_command(layout)).stdout
    ex.run(dockerproxy.remove_command(layout))
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
