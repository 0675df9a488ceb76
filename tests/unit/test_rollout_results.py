"""What the per-host table says after a run, whatever stopped it: the Rollout's bookkeeping, driven
through its own phase and parallel-work methods (no host is needed for it)."""

from __future__ import annotations

import pytest
from unit.plans import deployment_of

from deployer.errors import DeployerError
from deployer.hosts.ssh import ConnectError
from deployer.rollout import Rollout, RolloutError


def rollout(site) -> Rollout:
    d = deployment_of(site())
    return Rollout(d, {h.host_id: object() for h in d.hosts}, "deploy")


def test_hosts_a_run_never_reached_are_not_contacted(site) -> None:
    roll = rollout(site)
    assert {r.outcome for r in roll.report.results.values()} == {"not contacted"}


def test_each_host_gets_its_own_outcome_and_the_phase_it_failed_in(site) -> None:
    roll = rollout(site)
    roll.phase("reading every host")
    roll.each(["hub1", "worker1", "worker2"], lambda host: None)
    roll.phase("images")

    def work(host: str) -> None:
        if host == "worker1":
            raise DeployerError("worker1: image x is not on this machine")
        if host == "worker2":
            raise ConnectError("worker2 (root@w2:22): cannot connect over SSH", "worker2")

    with pytest.raises(RolloutError) as raised:
        roll.each(["worker1", "worker2"], work)
    assert str(raised.value).splitlines() == ["worker1: image x is not on this machine", "worker2 (root@w2:22): cannot connect over SSH"]
    outcomes = {h: r.outcome for h, r in roll.report.results.items()}
    assert outcomes == {"hub1": "unchanged", "worker1": "failed at images", "worker2": "unreachable"}


def test_a_change_makes_a_host_changed(site) -> None:
    roll = rollout(site)
    roll.report.results["hub1"].contacted = True
    roll.report.results["hub1"].changes.append("the hub service")
    assert roll.report.results["hub1"].outcome == "changed" and roll.report.changed
