"""The hub's Docker proxy on the hub host: the policy deploy gives it, and the container that runs it.

The hub container never holds the engine's socket (root on the hub host): it gets the socket of
an allowlisting proxy (``deployer_hub.dockerproxy``) that passes only the calls the spawner makes
and only notebook services as the operator configured them (image, mounts, network, no
capabilities). The proxy runs from the hub image as a :mod:`sidecars` container with no network
and no capabilities; its socket lives in ``Layout.docker_proxy_dir`` (0700, the hub's local disk).
"""

from __future__ import annotations

import json
import posixpath

from deployer_hub import names

from deployer.config.hubsettings import DOCKER_PROXY_DIR, DOCKER_PROXY_SOCKET, TENANT_CA, Layout, notebook_images, notebook_secret_prefix
from deployer.config.loader import Deployment
from deployer.hosts.commands import Command
from deployer.phases import sidecars
from deployer.phases.hubservice import config_name

WHAT = "the hub's Docker proxy"


def container_name(layout: Layout) -> str:
    return names.fit(f"{layout.name}-dockerproxy", names.SERVICE_NAME_MAX)


def policy(deployment: Deployment, layout: Layout) -> dict:
    """What notebook services the hub may create: exactly what its spawner is configured to."""
    config = deployment.config
    ca_config = ""
    if config.tenant_ca_bundle and config.login != "local-dev":
        ca_config = config_name(layout, TENANT_CA, config.tenant_ca_bundle)  # the one config notebooks get
    every_mount = [*config.volume_mounts, *(m for p in config.notebook_profiles for m in p.volume_mounts)]
    roots = {layout.share_dir} | {posixpath.normpath(m.static_host_dir) for m in every_mount}
    if config.project_mounts:
        roots.add(posixpath.normpath(config.project_mounts.static_host_dir))
    return {
        "listen": DOCKER_PROXY_SOCKET,
        "service_prefix": f"{layout.notebook_prefix}-",
        "images": notebook_images(config),
        # The notebooks' secret environment values (hub.HubSpec.notebook_secrets), by name.
        "secret_prefix": notebook_secret_prefix(layout) if config.notebook_secret_env else "",
        "network": layout.network,
        "config_prefix": ca_config,
        "bind_roots": sorted(roots),
        "constraints": ["node.labels.deployer.worker==true"],
    }


def sidecar(deployment: Deployment, layout: Layout, image_id: str) -> sidecars.Sidecar:
    options = ("--network", "none", "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--read-only",
               "--mount", "type=bind,src=/var/run/docker.sock,dst=/var/run/docker.sock",
               "--mount", f"type=bind,src={layout.docker_proxy_dir},dst={DOCKER_PROXY_DIR}",
               "--env", f"DEPLOYER_DOCKER_PROXY_POLICY={json.dumps(policy(deployment, layout), sort_keys=True, separators=(',', ':'))}")
    return sidecars.Sidecar(container_name(layout), layout.name, deployment.config.jupyterhub_image, image_id, options,
                            ("python3", "-m", "deployer_hub.dockerproxy"), what=WHAT)


def remove_command(layout: Layout) -> Command:
    return sidecars.remove_command(container_name(layout), WHAT)
