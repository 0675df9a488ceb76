"""Phase: images on the hosts. Pulled from their registry, or, where there is none, sent from this
machine (``docker save | ssh HOST docker load``), and only to a host whose copy differs.

A host "has" an image when its image ID equals the one on this machine: a rebuilt image
under the same tag is sent again, an unchanged one never is.
"""

from __future__ import annotations

import subprocess
import sys

from deployer.config.hubsettings import notebook_images
from deployer.config.loader import Deployment
from deployer.config.model import Host
from deployer.errors import DeployerError
from deployer.hosts import layers
from deployer.hosts.commands import Command, cmd
from deployer.hosts.executor import LocalExecutor, RemoteCommandError
from deployer.phases.base import Context, Facts, Phase, Planned, placeholder

TRANSFER = 1800  # seconds a pull or a send may take


class ImageError(DeployerError):
    """An image is neither on this machine nor pullable on the host that needs it."""


def image_id(ex, image: str) -> str | None:
    """The image's ID on the executor's host, None when it is not there (or no engine answers)."""
    result = ex.run(cmd("docker", "image", "inspect", "--format", "{{.Id}}", image), check=False)
    return result.stdout.strip() or None if result.code == 0 else None


def local_id(image: str) -> str | None:
    try:
        return image_id(LocalExecutor(), image)
    except RemoteCommandError:  # no docker on this machine: every image is pulled on the hosts
        return None


def worker_images(deployment: Deployment) -> list[str]:
    """What workers run: every notebook image (the default and each profile's) and the network guard's."""
    return [*notebook_images(deployment.config), deployment.config.network_guard_image]


def all_images(deployment: Deployment) -> list[str]:
    return list(dict.fromkeys([deployment.config.jupyterhub_image, *worker_images(deployment)]))


def local_ids(deployment: Deployment) -> dict[str, str | None]:
    """The IDs on this machine of every image the deployment runs (None: not here, pulled on the hosts)."""
    return {image: local_id(image) for image in all_images(deployment)}


def wanted_images(deployment: Deployment, host: Host) -> list[str]:
    """The hub gets the hub image, workers the notebook images and the network guard's (never inspected on the hub)."""
    wanted = [deployment.config.jupyterhub_image] if host.has("hub") else []
    return list(dict.fromkeys(wanted + (worker_images(deployment) if host.has("worker") else [])))


def needs(local: str | None, remote: str | None) -> bool:
    """Whether a host must get the image: it lacks it, or ours (the one to deploy) differs."""
    return remote is None or (local is not None and local != remote)


def pull(image: str) -> Command:
    return Command(("docker", "pull", image), why=f"pull image {image} (not on this machine)", timeout=TRANSFER,
                   hint=f"image {image} is not on this machine and `docker pull {image}` failed there; build or load it on this machine "
                        "(scripts/build-images) so Deployer can send it, or push it to its registry")


def send(image: str, skip: int = 0) -> Command:
    """``docker save IMAGE`` here without the blobs of its first ``skip`` layers (the host has them), piped
    into ``docker load`` on the host (nothing written to disk)."""
    return Command(("docker", "load", "--quiet"), source=(sys.executable, "-m", "deployer.hosts.layers", image, str(skip)), timeout=TRANSFER,
                   why=f"send image {image} from this machine (docker save | ssh docker load)")


def local_diff_ids(deployment: Deployment) -> dict[str, list[str]]:
    """The layers (diff IDs) of the deployment's images on this machine."""
    found = {}
    for image in all_images(deployment):
        try:
            found[image] = layers.diff_ids(image)
        except (OSError, subprocess.CalledProcessError, ValueError):  # not here: pulled on the hosts
            continue
    return found


def plan(ctx: Context, facts: Facts) -> Planned:
    planned = Planned()
    for host in ctx.deployment.hosts:
        there = set(facts[host.host_id].layers)  # and, in order, what the sends before this one leave there
        for image in wanted_images(ctx.deployment, host):
            local, remote = ctx.local_images.get(image), facts[host.host_id].images.get(image)
            if not needs(local, remote):
                planned.ok(host.host_id, f"image {image} present")
            elif local is None:
                planned.add(host.host_id, pull(image))
            else:
                mine = ctx.local_layers.get(image, [])
                planned.add(host.host_id, send(image, layers.present_prefix(mine, there)))
                there.update(layers.chain_ids(mine))
    return planned


def expect(ctx: Context, facts: Facts, planned: Planned) -> None:
    for host_id, commands in planned.commands.items():
        for command in commands:
            image = command.source[-2] if command.source else command.argv[-1]
            facts[host_id].images[image] = ctx.local_images.get(image) or placeholder(f"ID of {image} once pulled")
            facts[host_id].layers.update(layers.chain_ids(ctx.local_layers.get(image, [])))


PHASE = Phase("images", plan, expect)


def guards_image_id(ctx: Context, facts: Facts, host_id: str, what: str) -> str:
    """The ID of the guards' image (network_guard_image: both guards run from it) on a worker, or ImageError."""
    image = ctx.deployment.config.network_guard_image
    image_id = facts[host_id].images.get(image)
    if not image_id:
        raise ImageError(f"{host_id}: the image of {what}, {image}, is not there; build it with scripts/build-images "
                         "(or set network_guard_image to an image the host has)")
    return image_id
