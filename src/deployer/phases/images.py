"""Images on the hosts: pulled from their registry, or, where there is none, sent from this
machine (``docker save | ssh HOST docker load``), and only to a host whose copy differs.

A host "has" an image when its image ID equals the one on this machine: a rebuilt image
under the same tag is sent again, an unchanged one never is.
"""

from __future__ import annotations

from deployer.errors import DeployerError
from deployer.hosts.commands import Command, cmd
from deployer.hosts.executor import LocalExecutor, RemoteCommandError


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


def needs(local: str | None, remote: str | None) -> bool:
    """Whether a host must get the image: it lacks it, or ours (the one to deploy) differs."""
    return remote is None or (local is not None and local != remote)


def provide(ex, image: str, local: str | None, timeout: float = 1800) -> str:
    """Puts ``image`` on the executor's host; returns how ("sent" or "pulled")."""
    if local is None:
        result = ex.run(cmd("docker", "pull", image), check=False, timeout=timeout)
        if result.code != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            raise ImageError(f"{ex.host}: image {image} is not on this machine and `docker pull {image}` failed there: {tail[0]}; "
                             "build or load it on this machine (scripts/build-images) so Deployer can send it, or push it to its registry")
        return "pulled"
    if isinstance(ex, LocalExecutor):
        return "present"  # the same engine
    send(ex, image, timeout)
    return "sent"


def send(ex, image: str, timeout: float = 1800) -> None:
    """``docker save IMAGE | <to the host> docker load``, streamed (nothing written to disk)."""
    load = Command(("docker", "load", "--quiet"), why=f"load {image}")
    streamed = ex.stream_from(["docker", "save", image], load, timeout=timeout)
    if streamed.source_code != 0:
        raise ImageError(f"docker save {image} failed on this machine: {streamed.source_error.strip()[-500:]}")
    if streamed.result.code != 0:
        raise RemoteCommandError(ex.host, Command(("docker", "save", image, "|", "docker", "load")), streamed.result.code, streamed.result.stderr)
