"""The hub's Docker proxy on the hub host: the policy deploy gives it, and the container that runs it.

The hub container never holds the engine's socket (root on the hub host): it gets the socket of
an allowlisting proxy (``deployer_hub.dockerproxy``) that passes only the calls the spawner makes
and only notebook services as the operator configured them (image, mounts, network, no
capabilities). The proxy runs from the hub image as a :mod:`sidecars` container with no network
and no capabilities; its socket lives in ``Layout.docker_proxy_dir`` (0700, the hub's local disk).
"""

from __future__ import annotations

import json

from deployer_hub import mountguard, names
from deployer_hub.settings import IMAGE_GID, IMAGE_UID

from deployer.config.hubsettings import DOCKER_PROXY_DIR, DOCKER_PROXY_SOCKET, TENANT_CA, Layout, notebook_images, notebook_secret_prefix
from deployer.config.loader import Deployment
from deployer.hosts.commands import Command
from deployer.phases import sidecars
from deployer.phases.hubservice import config_name
from deployer.phases.mountguard import rules as mount_rules

WHAT = "the hub's Docker proxy"


def container_name(layout: Layout) -> str:
    return names.fit(f"{layout.name}-dockerproxy", names.SERVICE_NAME_MAX)


def floors(deployment: Deployment) -> tuple[int, int]:
    """The smallest uid and gid a notebook of this deployment runs as: TAS's tas_min_id, the start of
    notebook_uid_range, the configured ids, else the image's own 1000:100 (deployer_hub.settings.IMAGE_UID/IMAGE_GID)."""
    config = deployment.config
    if config.notebook_uid_range:  # (validate refuses it beside TAS or fixed ids)
        return config.notebook_uid_range[0], config.notebook_uid_range[0]
    uid = config.tas_min_id if config.use_tas_uid else (config.jupyteruser_uid or IMAGE_UID)
    gid = config.tas_min_id if config.use_tas_gid else (config.jupyteruser_gid or IMAGE_GID)
    return uid, gid


def _largest(default: float | None, per_profile: list[float | None], profiles: bool) -> float | None:
    """The largest limit a server may get, or None when some server gets none (then none is required)."""
    values = [p if p is not None else default for p in per_profile] if profiles else [default]
    return None if any(v is None for v in values) else max(values)  # type: ignore[type-var]


def policy(deployment: Deployment, layout: Layout, socket_gids: set[int] | frozenset[int] = frozenset()) -> dict:
    """What notebook services the hub may create: exactly what its spawner is configured to."""
    config = deployment.config
    ca_config = ""
    if config.tenant_ca_bundle and config.login != "local-dev":
        ca_config = config_name(layout, TENANT_CA, config.tenant_ca_bundle)  # the one config notebooks get
    profiles = list(config.notebook_profiles)
    memory = _largest(config.notebook_memory_limit, [p.memory_limit for p in profiles], bool(profiles))
    cpus = _largest(config.notebook_cpu_limit, [p.cpu_limit for p in profiles], bool(profiles))
    min_uid, min_gid = floors(deployment)
    return {
        "listen": DOCKER_PROXY_SOCKET,
        "service_prefix": f"{layout.notebook_prefix}-",
        "deployment": layout.name,
        "images": notebook_images(config),
        # The notebooks' secret environment values (hub.HubSpec.notebook_secrets), by name.
        "secret_prefix": notebook_secret_prefix(layout) if config.notebook_secret_env else "",
        "network": layout.network,
        "config_prefix": ca_config,
        "mount_driver": mountguard.driver_name(layout.name),
        "mounts": [rule.to_dict() for rule in mount_rules(deployment, layout)],
        "constraints": [layout.worker_constraint],
        "guard_label": layout.name,
        "min_uid": min_uid, "min_gid": min_gid,
        "refused_gids": sorted({65534, *socket_gids}), "refused_uids": [65534],
        "memory_limit": int(memory or 0),
        "nano_cpus_limit": int(cpus * 1e9) if cpus else 0,  # as the spawner computes it
        "pids_limit": config.notebook_pids_limit,
    }


def sidecar(deployment: Deployment, layout: Layout, image_id: str, socket_gids: set[int] | frozenset[int] = frozenset()) -> sidecars.Sidecar:
    options = ("--network", "none", "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--read-only",
               "--mount", "type=bind,src=/var/run/docker.sock,dst=/var/run/docker.sock",
               "--mount", f"type=bind,src={layout.docker_proxy_dir},dst={DOCKER_PROXY_DIR}",
               "--env", f"DEPLOYER_DOCKER_PROXY_POLICY={json.dumps(policy(deployment, layout, socket_gids), sort_keys=True, separators=(',', ':'))}")
    return sidecars.Sidecar(container_name(layout), layout.name, deployment.config.jupyterhub_image, image_id, options,
                            ("python3", "-m", "deployer_hub.dockerproxy"), what=WHAT)


def remove_command(layout: Layout) -> Command:
    return sidecars.remove_command(container_name(layout), WHAT)
