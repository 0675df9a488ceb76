"""The Rollout runs exactly what the planners plan, phase by phase, and stops at the first failure.

The hosts here are recording executors: they answer every command with success and record it;
what a host "looks like" after a phase is what that phase's planner expects (``Phase.expect``),
so each phase is planned from the facts the previous phases leave, as on real hosts. (The lab
tier compares ``plan`` with what a real deploy ran on three real hosts.)
"""

from __future__ import annotations

import copy
import json

import pytest
from unit.plans import GUARD_IMAGE, HUB_IMAGE, USER_IMAGE, deployment_of, ready_facts, settled

from deployer.errors import DeployerError
from deployer.hosts.commands import Command
from deployer.hosts.executor import RemoteCommandError, Result, Streamed
from deployer.phases import pipeline
from deployer.phases.base import Context, shown
from deployer.phases.facts import HostFacts
from deployer.rollout import Rollout, RolloutError

LOCAL = {USER_IMAGE: "sha256:u", HUB_IMAGE: "sha256:h", GUARD_IMAGE: "sha256:g"}


class Recorder:
    """An executor that runs nothing: it records each command and answers success (or fails one)."""

    def __init__(self, host: str, fail: str = "") -> None:
        self.host, self.fail, self.count = host, fail, 0
        self.ran: list[Command] = []

    def run(self, command: Command, *, check: bool = True, timeout: float = 600) -> Result:
        self.count += 1
        self.ran.append(command)
        if self.fail and self.fail in str(command):
            raise RemoteCommandError(self.host, command, 1, "no space left on device")
        return Result(0, "", "")

    def stream_from(self, source: list[str], command: Command, *, timeout: float = 1800) -> Streamed:
        self.count += 1
        self.ran.append(command)
        if self.fail and self.fail in str(command):
            return Streamed(Result(1, "", "no space left on device"), 0, "")
        return Streamed(Result(0, "", ""), 0, "")


class Recorded(Rollout):
    """A Rollout whose hosts change as its phases expect them to."""

    def __init__(self, d, world: dict[str, HostFacts], fail: dict[str, str] | None = None) -> None:
        super().__init__(d, {h.host_id: Recorder(h.host_id, (fail or {}).get(h.host_id, "")) for h in d.hosts}, "deploy",
                         executor_for=lambda host, _: Recorder(host.host_id, (fail or {}).get(host.host_id, "")))
        self.world = copy.deepcopy(world)
        self.ctx = Context.of(d, LOCAL)

    def local_images(self) -> dict[str, str | None]:
        return LOCAL

    def local_layers(self) -> dict[str, list[str]]:
        return {}

    def read_facts(self):
        for host in self.report.results.values():
            host.contacted = True
        return copy.deepcopy(self.world)

    def execute(self, planned, best_effort: bool = False) -> None:
        super().execute(planned, best_effort)
        phase = next(p for p in pipeline.DEPLOY if p.title == self._current[0])
        phase.expect(self.ctx, self.world, planned)


def bare() -> dict[str, HostFacts]:
    return {h: HostFacts(paths={"/data/shared": True} if h != "hub1" else {}) for h in ("hub1", "worker1", "worker2")}


def test_a_fresh_deploy_runs_on_each_host_exactly_what_plan_prints(site) -> None:
    d = deployment_of(site())
    planned = {}
    for _, p in pipeline.plan_all(Context.of(d, LOCAL), bare()):
        for host, commands in p.commands.items():
            planned.setdefault(host, []).extend(shown(host, c) for c in commands)
    roll = Recorded(d, bare())
    roll._deploy(pipeline.DEPLOY)
    ran: dict[str, list[str]] = {}
    for host, command in roll.report.executed:
        ran.setdefault(host, []).append(shown(host, command))
    assert ran == planned
    assert [title for title, _ in roll.report.phases[:2]] == ["reading every host", "checking ports, paths and swarm membership"]
    assert {r.outcome for r in roll.report.results.values()} == {"changed"}
    assert roll.report.url == "https://jupyter.example.org" and roll.report.self_signed
    # the run recorded every changing command its executors ran, and nothing else changed anything
    for host_id, ex in roll.ex.items():
        assert [c for c in ex.ran if c.why and c.why != ""] == [c for h, c in roll.report.executed if h == host_id]


def test_a_deployed_swarm_gets_no_command(site) -> None:
    d = deployment_of(site())
    roll = Recorded(d, settled(d, ready_facts(), LOCAL))
    roll._deploy(pipeline.DEPLOY)
    assert roll.report.executed == [] and not roll.report.changed and not roll.report.hub_replaced
    assert {r.outcome for r in roll.report.results.values()} == {"unchanged"}


def test_a_failed_command_stops_the_run_in_its_phase_and_names_the_host(site) -> None:
    d = deployment_of(site())
    roll = Recorded(d, bare(), fail={"worker2": "docker load"})
    with pytest.raises(RolloutError, match=r"worker2: `.* -m deployer.hosts.layers .* \| docker load --quiet` failed with exit code 1: no space left on device"):
        roll._deploy(pipeline.DEPLOY)
    outcomes = {h: r.outcome for h, r in roll.report.results.items()}
    assert outcomes == {"hub1": "changed", "worker1": "changed", "worker2": "failed at images"}
    assert not any(c.why == "the hub service" for _, c in roll.report.executed)  # later phases never ran


def test_a_failed_pull_says_what_to_do(site) -> None:
    d = deployment_of(site())
    world = settled(d, ready_facts(), LOCAL)
    world["worker1"].images[USER_IMAGE] = None
    roll = Recorded(d, world, fail={"worker1": "docker pull"})
    roll.local_images = lambda: {HUB_IMAGE: "sha256:h", GUARD_IMAGE: "sha256:g"}  # the notebook image is not on this machine
    with pytest.raises(DeployerError) as raised:
        roll._deploy(pipeline.DEPLOY)
    assert str(raised.value) == (f"worker1: image {USER_IMAGE} is not on this machine and `docker pull {USER_IMAGE}` failed there; build or "
                                 "load it on this machine (scripts/build-images) so Deployer can send it, or push it to its registry: "
                                 "no space left on device")


def test_a_worker_removed_from_the_servers_file_is_taken_out_and_one_gone_for_good_does_not_stop_the_run(site) -> None:
    d = deployment_of(site())
    world = settled(d, ready_facts(), LOCAL)
    gone = {"host_id": "worker3", "ssh_host": "worker3.example.org", "private_ip": "10.10.0.13", "ssh_user": "root", "ssh_key": None,
            "ssh_port": 22, "ssh_known_hosts": None}
    recorded = json.loads(world["hub1"].state["workers.json"])
    world["hub1"].state["workers.json"] = json.dumps(recorded + [gone], sort_keys=True)
    roll = Recorded(d, world, fail={"worker3": "umount"})  # its machine no longer answers
    roll._deploy(pipeline.DEPLOY)
    ran = [(h, c.why) for h, c in roll.report.executed]
    assert ran[0] == ("hub1", "take out worker3 (removed from the servers file): drain it, stopping its notebooks, and remove its worker label")
    assert ("hub1", "remove the node of worker3 from the swarm") in ran
    assert ran[-1] == ("hub1", "record the workers deployed (so that one removed from the servers file is taken out next time)")
    assert "10.10.0.13" in roll.report.executed[0][1].argv
    row = roll.report.results["worker3"]
    assert row.roles == "removed" and any(n.startswith("not done (worker3: `") for n in row.notes)
    assert json.loads(roll.world["hub1"].state["workers.json"]) == recorded  # the record no longer names it
