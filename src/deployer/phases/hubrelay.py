"""The hub API's stable address for notebooks (deployer_hub.hubrelay): a :mod:`sidecars` container on
the hub host, on the deployment's overlay network, named so that notebooks reach the hub API at
``http://<name>:8081``. Its address is what notebooks cache for 10 minutes (c-ares, Docker's DNS TTL),
so it must outlive the hub: it is replaced only when its own command or network change, never for a
new hub image (it keeps running the image it started from: a relay of bytes)."""

from __future__ import annotations

from deployer.config.hubsettings import Layout
from deployer.config.loader import Deployment
from deployer.hosts.commands import Command
from deployer.phases import sidecars

WHAT = "the hub API's relay for notebooks"
PORT = 8081


def container_name(layout: Layout) -> str:
    return layout.hub_relay


def sidecar(deployment: Deployment, layout: Layout) -> sidecars.Sidecar:
    # The image is not part of its spec (image_id "", see the module's doc): the hub image's tag at creation.
    options = ("--network", layout.network, "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--read-only", "--user", "65534:65534")
    return sidecars.Sidecar(container_name(layout), layout.name, deployment.config.jupyterhub_image, "", options,
                            ("python3", "-m", "deployer_hub.hubrelay", layout.hub_service, str(PORT)), what=WHAT, pinned_image=True)


def remove_command(layout: Layout) -> Command:
    return sidecars.remove_command(container_name(layout), WHAT)
