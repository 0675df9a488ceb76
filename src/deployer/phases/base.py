"""The deploy's phases, each a pure planner: the deployment and the hosts' facts in, commands out.

``deploy`` runs each phase's commands, then reads the facts again before planning the next
phase (a worker joins with the token the hub has once it leads a swarm). ``plan`` runs nothing:
it plans each phase, then updates its copy of the facts as the phase would have changed them
(``expect``). A value that exists only once an earlier phase has run (a node's ID after it
joins, a secret generated on the hub) is printed as a ``<placeholder>``; everything else in
``plan``'s output is exactly what ``deploy`` runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from deployer.config.hubsettings import Layout
from deployer.config.loader import Deployment
from deployer.hosts.commands import Command

if TYPE_CHECKING:
    from deployer.phases.facts import HostFacts

Facts = dict[str, "HostFacts"]


def placeholder(what: str) -> str:
    """A value plan cannot know yet, shown as such."""
    return f"<{what}>"


def is_placeholder(value: str | None) -> bool:
    return bool(value) and value.startswith("<") and value.endswith(">")


@dataclass(frozen=True)
class Context:
    """What every planner may read besides the facts."""

    deployment: Deployment
    layout: Layout
    local_images: dict[str, str | None] = field(default_factory=dict)  # image -> its ID on this machine
    local_layers: dict[str, list[str]] = field(default_factory=dict)  # image -> its layers' diff IDs on this machine
    https_port: int = 443  # where the hub is published on its host
    http_port: int = 80

    @classmethod
    def of(cls, deployment: Deployment, local_images: dict[str, str | None] | None = None, *, https_port: int = 443,
           http_port: int = 80, local_layers: dict[str, list[str]] | None = None) -> Context:
        return cls(deployment, Layout.of(deployment), local_images or {}, local_layers or {}, https_port, http_port)


@dataclass
class Planned:
    """One phase's commands per host (run there in this order; hosts in parallel), and what is already right."""

    commands: dict[str, list[Command]] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)

    def add(self, host: str, *commands: Command) -> None:
        if commands:
            self.commands.setdefault(host, []).extend(commands)

    def ok(self, host: str, note: str) -> None:
        self.notes.setdefault(host, []).append(note)


@dataclass(frozen=True)
class Phase:
    title: str
    plan: Callable[[Context, Facts], Planned]
    #: The facts as running ``planned`` would leave them (for ``plan``, which runs nothing).
    expect: Callable[[Context, Facts, Planned], None] = lambda ctx, facts, planned: None
    #: With the facts read again after the phase ran: what did not take (a worker that does not see the share).
    check: Callable[[Context, Facts], list[str]] = lambda ctx, facts: []
    #: A host's failure here is reported on its row and the run goes on (a removed worker that is gone for good).
    best_effort: bool = False


def shown(host: str, command: Command) -> str:
    """A command as plan prints it and deploy reports it: the host, the argv (secrets masked), the reason."""
    # One line per command (a script's line breaks as \n), so that plan's output reads and compares line by line.
    line = f"  {host}: $ {str(command).replace(chr(10), chr(92) + 'n')}" + (f"    # {command.why}" if command.why else "")
    return line + (f" (unless {command.unless})" if command.unless else "")


def sequence(*planned: Planned) -> Planned:
    """Several plans of one phase, one after the other on each host."""
    merged = Planned()
    for p in planned:
        for host, commands in p.commands.items():
            merged.add(host, *commands)
        for host, notes in p.notes.items():
            for note in notes:
                merged.ok(host, note)
    return merged
