"""The network guard on each worker: the policy deploy gives it, and the commands that keep it running.

The guard itself (``deployer_hub.netguard``) runs as one container per host that runs notebooks,
beside Docker rather than in the swarm: it needs the host's network and process namespaces
(``--network host --pid host``), which swarm services cannot have. It restarts with the engine
(``--restart always``). Its spec hash (image ID + policy) is a label: an unchanged guard is left
alone, a changed one replaced (the new one re-applies every running notebook's rules at start).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from urllib.parse import urlsplit

from deployer_hub import names
from deployer_hub.netguard import LABEL, Policy, Target

from .commands import Command, cmd, sh
from .hubsettings import Layout
from .loader import Deployment

#: Capabilities the guard needs, nothing more: NET_ADMIN for iptables, SYS_ADMIN to enter a
#: notebook's network namespace (setns), SYS_PTRACE to open /proc/PID/ns/net of another uid.
CAPABILITIES = ("NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE")


def container_name(layout: Layout) -> str:
    return names.fit(f"{layout.name}-netguard", names.SERVICE_NAME_MAX)


def _tenant_endpoint(url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.hostname}:{port}"


def policy(deployment: Deployment, layout: Layout, *, https_port: int = 443, http_port: int = 80) -> Policy:
    config = deployment.config
    hosts = sorted({a for h in deployment.hosts for a in (h.address, h.ssh_host)})
    hub = deployment.hub
    hub_addresses = sorted({hub.address, hub.ssh_host})
    tenant = () if config.login == "local-dev" else (_tenant_endpoint(config.tenant_info.base_url),)
    return Policy(
        deployment=layout.name, network=layout.network, hosts=tuple(hosts),
        hub_ports=tuple(f"{a}:{p}" for a in hub_addresses for p in (https_port, http_port)),
        tenant=tenant,
        allow=tuple(Target.parse(t) for t in config.notebook_egress_allow),
        deny=tuple(Target.parse(t) for t in config.notebook_egress_deny),
        allow_rules=dict(config.notebook_egress_allow_rules),
    )


@dataclass(frozen=True)
class GuardSpec:
    layout: Layout
    image: str
    policy: Policy
    image_id: str = ""  # on the host: a rebuilt image under the same tag replaces the guard

    @property
    def spec_hash(self) -> str:
        return hashlib.sha256(f"{self.image}\n{self.image_id}\n{self.policy.to_json()}".encode()).hexdigest()[:12]

    @property
    def name(self) -> str:
        return container_name(self.layout)


def spec(deployment: Deployment, layout: Layout, image_id: str, *, https_port: int = 443, http_port: int = 80) -> GuardSpec:
    return GuardSpec(layout, deployment.config.network_guard_image,
                     policy(deployment, layout, https_port=https_port, http_port=http_port), image_id)


def read_command(layout: Layout) -> Command:
    """Prints '<spec hash> <running>' of the host's guard, nothing when there is none."""
    return sh('docker inspect --format \'{{index .Config.Labels "deployer.spec"}} {{.State.Running}}\' "$1" 2>/dev/null || true',
              container_name(layout))


def parse_current(output: str) -> tuple[str, bool] | None:
    parts = output.split()
    if len(parts) != 2:
        return None
    return parts[0], parts[1] == "true"


def commands(spec: GuardSpec, current: tuple[str, bool] | None) -> list[Command]:
    """Nothing when the host's guard is this spec and runs; else (re)create it."""
    if current == (spec.spec_hash, True):
        return []
    argv = [
        "docker", "run", "--detach", "--name", spec.name, "--restart", "always",
        "--network", "host", "--pid", "host",
        "--cap-drop", "ALL", *sum((["--cap-add", c] for c in CAPABILITIES), []),
        "--security-opt", "no-new-privileges", "--read-only", "--tmpfs", "/run",
        "--label", f"deployer={spec.layout.name}", "--label", f"deployer.spec={spec.spec_hash}",
        "--mount", "type=bind,src=/var/run/docker.sock,dst=/var/run/docker.sock,readonly",
        "--log-opt", "max-size=10m", "--log-opt", "max-file=3",
        "--env", f"DEPLOYER_NETGUARD_POLICY={spec.policy.to_json()}",
        spec.image,
    ]
    run = Command(tuple(argv), why="the notebooks' network guard" if current is None else "the network guard's policy or image changed")
    if current is None:
        return [run]
    return [cmd("docker", "rm", "--force", spec.name, why="replace the network guard"), run]


def remove_command(layout: Layout) -> Command:
    """Removes the host's guard; prints 'removed' when there was one."""
    return sh('if docker inspect "$1" >/dev/null 2>&1; then docker rm --force "$1" >/dev/null && echo removed; fi', container_name(layout),
              why="remove the network guard")


__all__ = ["LABEL", "GuardSpec", "commands", "container_name", "parse_current", "policy", "read_command", "remove_command", "spec"]
