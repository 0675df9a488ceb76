"""Helpers of the planner tests (imported by several test modules, so kept out of any of them): a deployment
from a test site, the facts of a deployed swarm, every phase planned from facts, and the facts a deploy leaves."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from deployer.config.discovery import discover
from deployer.config.hubsettings import Layout
from deployer.config.loader import load
from deployer.errors import Problem
from deployer.hosts.commands import Command
from deployer.phases import nfs, preflight
from deployer.phases.base import Context, Facts
from deployer.phases.facts import HostFacts
from deployer.phases.pipeline import DEPLOY, plan_all
from deployer.phases.tls import self_signed

HUB_IMAGE, USER_IMAGE = "taccsciapps/jupyterhub:0.8.0", "taccsciapps/jupyteruser-ds:1.1.0"
GUARD_IMAGE = "deployer/netguard:0.2.0"
CERT, KEY = self_signed("jupyter.example.org")


@dataclass
class Plan:
    """Every phase's commands and notes per host, and the preflight's problems."""

    commands: dict[str, list[Command]] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)


def plan(d, facts: Facts, layout=None, local_images: dict | None = None) -> Plan:
    result = Plan(problems=preflight.problems(d, facts))
    for _, planned in plan_all(Context.of(d, local_images), facts):
        for host, commands in planned.commands.items():
            result.commands.setdefault(host, []).extend(commands)
        for host, notes in planned.notes.items():
            result.notes.setdefault(host, []).extend(notes)
    return result


def settled(d, facts: Facts, local_images: dict | None = None) -> Facts:
    """The facts as a deploy would leave them (every phase's expected effect)."""
    facts = copy.deepcopy(facts)
    ctx = Context.of(d, local_images)
    for phase in DEPLOY:
        phase.expect(ctx, facts, phase.plan(ctx, facts))
    return facts


def deployment_of(site):
    return load(discover(site.path), "jupyterhub", "prod", "designsafe").deployments[0]


def ready_facts() -> dict[str, HostFacts]:
    """A deployed swarm: labelled nodes, images, the share seen by every worker, the hub's kept state."""
    labels = {"n1": {"deployer.hub": "true"}, "n2": {"deployer.worker": "true"}, "n3": {"deployer.worker": "true"}}
    state = {"cookie_secret": "c" * 64, "crypt_key": "k" * 64, "name_key": "n" * 64, "tls/cert.pem": CERT, "tls/key.pem": KEY}
    worker = {"images": {USER_IMAGE: "sha256:u", GUARD_IMAGE: "sha256:g"}, "paths": {"/data/shared": True}, "marker": "m", "nfs_client": True}
    return {
        "hub1": HostFacts(docker="24.0", swarm_state="active", node_id="n1", manager=True, managers={"10.10.0.10"}, images={HUB_IMAGE: "sha256:h"}, listening={22, 80, 443},
                          published={443: {"jupyterhub-prod-designsafe-hub"}, 80: {"jupyterhub-prod-designsafe-hub"}}, node_labels=labels,
                          join_token="SWMTKN-1-secret", marker="m", state=state,
                          nfs=nfs.ServerFacts(installed=True, running=True, export=nfs.ganesha_export(Layout("jupyterhub-prod-designsafe"), ["10.10.0.11", "10.10.0.12"]),
                                              main=nfs.ganesha_main(["jupyterhub-prod-designsafe"]), exported=("jupyterhub-prod-designsafe",))),
        "worker1": HostFacts(docker="24.0", swarm_state="active", node_id="n2", managers={"10.10.0.10"}, **copy.deepcopy(worker)),
        "worker2": HostFacts(docker="24.0", swarm_state="active", node_id="n3", managers={"10.10.0.10"}, **copy.deepcopy(worker)),
    }


