"""Deployer's per-host containers beside the swarm (the network guard on workers, the Docker proxy
on the hub): plain ``docker run --restart always`` containers, because each needs something swarm
services cannot have (the host's network and process namespaces; ``--network none`` with the
engine's socket). Each carries the hash of its spec as a label: an unchanged one is left alone, a
changed one replaced, and ``destroy`` removes it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from deployer.hosts.commands import Command, cmd, sh


@dataclass(frozen=True)
class Sidecar:
    name: str  # the container's name
    deployment: str  # the layout's name: label deployer=<this>
    image: str
    image_id: str  # on the host: a rebuilt image under the same tag replaces the container
    options: tuple[str, ...]  # docker run options (capabilities, mounts, environment, ...)
    args: tuple[str, ...] = ()  # after the image
    what: str = "sidecar"  # for the reasons printed by plan and deploy
    #: The image is not part of the spec: a new image does not replace a running container (one whose
    #: address others keep, such as the hub API's relay).
    pinned_image: bool = False

    @property
    def spec_hash(self) -> str:
        if self.image_id.startswith("<"):  # plan: the image is pulled first, its ID unknown yet
            return "<new spec hash>"
        image = [] if self.pinned_image else [self.image, self.image_id]
        text = "\n".join([self.name, *image, *self.options, "--", *self.args])
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def run(self, why: str) -> Command:
        return Command(("docker", "run", "--detach", "--name", self.name, "--restart", "always",
                        "--label", f"deployer={self.deployment}", "--label", f"deployer.spec={self.spec_hash}",
                        "--log-opt", "max-size=10m", "--log-opt", "max-file=3",
                        *self.options, self.image, *self.args), why=why)


def read_command(name: str) -> Command:
    """Prints '<spec hash> <running>' of the container, nothing when there is none."""
    return sh('docker container inspect --format \'{{index .Config.Labels "deployer.spec"}} {{.State.Running}}\' "$1" 2>/dev/null || true', name)


def parse_current(output: str) -> tuple[str, bool] | None:
    parts = output.split()
    return (parts[0], parts[1] == "true") if len(parts) == 2 else None


def current(ex, name: str) -> tuple[str, bool] | None:
    """(spec hash, running) of the container on the executor's host, None when there is none."""
    return parse_current(ex.run(read_command(name)).stdout)


def commands(sidecar: Sidecar, current: tuple[str, bool] | None) -> list[Command]:
    """Nothing when the host runs this spec; else create it, or replace what is there."""
    if current == (sidecar.spec_hash, True):
        return []
    if current is None:
        return [sidecar.run(sidecar.what)]
    return [cmd("docker", "rm", "--force", sidecar.name, why=f"replace {sidecar.what}"),
            sidecar.run(f"{sidecar.what}: its image or configuration changed")]


def remove_command(name: str, what: str) -> Command:
    """Removes the container; prints 'removed' when there was one."""
    return sh('if docker container inspect "$1" >/dev/null 2>&1; then docker rm --force "$1" >/dev/null && echo removed; fi', name, why=f"remove {what}")
