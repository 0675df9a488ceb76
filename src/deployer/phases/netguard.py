"""The network guard on each worker: the policy deploy gives it, and the container that runs it.

The guard itself (``deployer_hub.netguard``) runs as one container per host that runs notebooks,
beside the swarm (a :mod:`sidecars` container): it needs the host's network and process namespaces
(``--network host --pid host``), which swarm services cannot have. A changed policy or image
replaces it; the new one re-applies every running notebook's rules at start. The guard also keeps
the host's own NFS rules (no container reaches the share's server); removing the guard removes them.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from deployer_hub import names
from deployer_hub.netguard import Policy, Target

from deployer.config.hubsettings import Layout
from deployer.config.loader import Deployment
from deployer.hosts.commands import Command, sh
from deployer.phases import images, nfs, sidecars
from deployer.phases.base import Context, Facts, Phase, Planned

#: Capabilities the guard needs, nothing more: NET_ADMIN for iptables, SYS_ADMIN to enter a
#: notebook's network namespace (setns), SYS_PTRACE to open /proc/PID/ns/net of another uid.
CAPABILITIES = ("NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE")
WHAT = "the notebooks' network guard"


def container_name(layout: Layout) -> str:
    return names.fit(f"{layout.name}-netguard", names.SERVICE_NAME_MAX)


def _tenant_endpoint(url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.hostname}:{port}"


def refused_addresses(deployment: Deployment, facts: Facts) -> list[str]:
    """Every address of the swarm's machines: each deployment host's configured ones and every IPv4
    address it has (its facts), and each swarm node's as the manager knows it (other deployments' too)."""
    found = {a for h in deployment.hosts for a in (h.address, h.ssh_host)}
    for host in deployment.hosts:
        if host.host_id in facts:
            found |= facts[host.host_id].addresses | facts[host.host_id].node_addresses
    return sorted(found)


def policy(deployment: Deployment, layout: Layout, facts: Facts | None = None, *, https_port: int = 443, http_port: int = 80) -> Policy:
    config = deployment.config
    hosts = refused_addresses(deployment, facts or {})
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
        nfs_ports=nfs.ports(kernel=config.use_stock_nfs),
    )


def sidecar(deployment: Deployment, layout: Layout, image_id: str, facts: Facts | None = None, *,
            https_port: int = 443, http_port: int = 80) -> sidecars.Sidecar:
    guard_policy = policy(deployment, layout, facts, https_port=https_port, http_port=http_port)
    options = ("--network", "host", "--pid", "host",
               "--cap-drop", "ALL", *sum((("--cap-add", c) for c in CAPABILITIES), ()),
               "--security-opt", "no-new-privileges", "--read-only", "--tmpfs", "/run",
               "--mount", "type=bind,src=/var/run/docker.sock,dst=/var/run/docker.sock,readonly",
               "--env", f"DEPLOYER_NETGUARD_POLICY={guard_policy.to_json()}")
    return sidecars.Sidecar(container_name(layout), layout.name, deployment.config.network_guard_image, image_id, options, what=WHAT)


#: The guard's container removed, then its host rules, by its own image (the same iptables as the guard
#: used, whatever the host has): `--unguard-host`. Prints 'removed' when there was a guard.
REMOVE = ('image=$(docker container inspect --format "{{.Image}}" "$1" 2>/dev/null) || exit 0\n'
          'docker rm --force "$1" >/dev/null\n'
          'out=$(docker run --rm --network host --cap-drop ALL --cap-add NET_ADMIN --security-opt no-new-privileges '
          '--log-driver none "$image" --unguard-host "$2" 2>&1) || echo "the host NFS rules of $2 were not removed: $out" >&2\n'
          'echo removed')


def remove_command(layout: Layout) -> Command:
    return sh(REMOVE, container_name(layout), layout.name, why=f"remove {WHAT} and its host NFS rules")


def plan(ctx: Context, facts: Facts) -> Planned:
    """Start or replace each worker's guard when its spec (image ID, policy) differs from the running one."""
    planned = Planned()
    for host in ctx.deployment.workers:
        f = facts[host.host_id]
        image_id = images.guards_image_id(ctx, facts, host.host_id, WHAT)
        commands = sidecars.commands(sidecar(ctx.deployment, ctx.layout, image_id, facts, https_port=ctx.https_port, http_port=ctx.http_port), f.guard)
        planned.add(host.host_id, *commands)
        if not commands:
            planned.ok(host.host_id, "network guard running")
    return planned


def expect(ctx: Context, facts: Facts, planned: Planned) -> None:
    for host_id in planned.commands:
        image_id = facts[host_id].images[ctx.deployment.config.network_guard_image] or ""
        facts[host_id].guard = (sidecar(ctx.deployment, ctx.layout, image_id, facts, https_port=ctx.https_port, http_port=ctx.http_port).spec_hash, True)


PHASE = Phase("the notebooks' network guard on every worker", plan, expect)
