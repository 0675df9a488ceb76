"""The phases in the order deploy and update run them, and ``plan_all``: every phase planned from
the facts, without running anything (what ``deployer plan`` prints)."""

from __future__ import annotations

import copy

from deployer.phases import engine, gpus, hub, images, members, mountguard, netguard, notebooknet, share, swarm
from deployer.phases.base import Context, Facts, Phase, Planned

DEPLOY: tuple[Phase, ...] = (members.DRAIN_PHASE, members.LEAVE_PHASE, members.FORGET_PHASE,
                             engine.PHASE, swarm.INIT, swarm.SETTINGS, swarm.JOIN_PHASE, swarm.LABELS, gpus.PHASE, share.HUB, share.WORKERS,
                             images.PHASE, notebooknet.NEIGHBOURS, netguard.PHASE, mountguard.PHASE, hub.STATE, hub.PROXY, hub.SERVICE, hub.UNUSED,
                             members.RECORD_PHASE)
#: update rolls out a new image or configuration onto a deployed swarm: no engines, swarm or share.
UPDATE: tuple[Phase, ...] = (images.PHASE, netguard.PHASE, mountguard.PHASE, hub.STATE, hub.PROXY, hub.SERVICE, hub.UNUSED)


def plan_all(ctx: Context, facts: Facts, phases: tuple[Phase, ...] = DEPLOY) -> list[tuple[Phase, Planned]]:
    """Each phase planned from the facts as the phases before it would leave them (``facts`` is not changed)."""
    facts = copy.deepcopy(facts)
    plans = []
    for phase in phases:
        planned = phase.plan(ctx, facts)
        phase.expect(ctx, facts, planned)
        plans.append((phase, planned))
    return plans
