"""GPUs as Swarm generic resources: the plans as data (facts in, commands out), and the daemon.json the
engine is given, written for real by the phase's own script into a temporary file."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from conftest import SCOPE, base_hosts
from unit.plans import deployment_of, ready_facts

from deployer.phases import gpus
from deployer.phases.base import Context, Facts
from deployer.phases.pipeline import DEPLOY, plan_all

IDS = ["GPU-3f2a91c4-0d1e-4b7a-9c55-2f1e3a4b5c6d", "GPU-77b1c2d3-1111-2222-3333-444455556666"]
WANTED = sorted(f"NVIDIA-GPU={i}" for i in IDS)


def deployment(site, gpus_of_worker1=None):
    hosts = base_hosts()
    if gpus_of_worker1 is not None:
        hosts[SCOPE]["hosts"][1]["gpus"] = gpus_of_worker1
    return deployment_of(site(hosts=hosts))


def planned(d, facts: Facts):
    return gpus.plan(Context.of(d), facts)


def test_gpus_on_a_worker_write_daemon_json_restart_its_engine_and_wait_on_the_hub(site) -> None:
    d = deployment(site, IDS)
    facts = ready_facts()
    facts["worker1"].daemon_json = '{"log-driver": "journald", "registry-mirrors": ["https://mirror.example.org"]}\n'
    p = planned(d, facts)
    write, restart = p.commands["worker1"]
    assert write.argv[:2] == ("bash", "-c") and write.argv[-2:] == (gpus.DAEMON_JSON, hashlib.sha256(facts["worker1"].daemon_json.encode()).hexdigest())
    content = json.loads(write.input)
    assert content == {"log-driver": "journald", "registry-mirrors": ["https://mirror.example.org"],
                       "node-generic-resources": [f"NVIDIA-GPU={i}" for i in IDS]}  # other keys kept, in their order
    assert "restart the Docker engine of worker1" in restart.why and "notebooks running on worker1 stop" in restart.why
    (wait,) = p.commands["hub1"]
    assert wait.argv[-4:] == ("n2", "worker1", "".join(f"{r} " for r in WANTED), "NVIDIA-GPU")
    assert "worker2" not in p.commands  # no gpus, nothing declared: left alone
    # plan shows what is written, not the file (which may hold credentials, e.g. a registry proxy's)
    assert str(write).startswith(f"write {gpus.DAEMON_JSON} with node-generic-resources [") and "mirror" not in str(write)


def test_nothing_when_the_file_and_the_running_engine_match(site) -> None:
    d = deployment(site, IDS)
    facts = ready_facts()
    facts["worker1"].daemon_json = json.dumps({"node-generic-resources": list(reversed(WANTED))})  # order does not matter
    facts["worker1"].engine_gpus = tuple(WANTED)
    p = planned(d, facts)
    assert p.commands == {}
    assert p.notes["worker1"] == ["2 GPU(s) declared to Swarm"]


def test_a_count_is_declared_as_an_amount_and_read_back_from_the_engine(site) -> None:
    """gpus: 2 is NVIDIA-GPU=2, a discrete amount (the hub names the devices 0 and 1: deployer_hub.gpus)."""
    d = deployment(site, 2)
    facts = ready_facts()
    write, _restart = planned(d, facts).commands["worker1"]
    assert json.loads(write.input) == {"node-generic-resources": ["NVIDIA-GPU=2"]}
    facts["worker1"].daemon_json = write.input.decode()
    facts["worker1"].engine_gpus = gpus.engine_resources({"GenericResources": [{"DiscreteResourceSpec": {"Kind": "NVIDIA-GPU", "Value": 2}}]})
    p = planned(d, facts)
    assert p.commands == {} and p.notes["worker1"] == ["2 GPU(s) declared to Swarm"]


def test_a_count_is_valid_but_warned_about(site) -> None:
    from conftest import run_cli

    hosts = base_hosts()
    hosts[SCOPE]["hosts"][1]["gpus"] = 2
    result = run_cli(["-i", "prod", "-t", "designsafe", "validate"], site(hosts=hosts).path)
    assert result.exit_code == 0, result.output
    assert f"site.hosts: {SCOPE}/hosts/1/gpus: a count names the GPUs by index (0, 1, ...)" in result.stderr


def test_a_file_already_right_but_an_engine_not_restarted_is_restarted_only(site) -> None:
    d = deployment(site, IDS)
    facts = ready_facts()
    facts["worker1"].daemon_json = json.dumps({"node-generic-resources": WANTED})
    [restart] = planned(d, facts).commands["worker1"]
    assert restart.why.startswith("restart the Docker engine")


def test_removing_gpus_removes_the_key_and_keeps_the_rest(site) -> None:
    d = deployment(site)
    facts = ready_facts()
    facts["worker1"].daemon_json = json.dumps({"debug": True, "node-generic-resources": WANTED + ["FPGA=fpga0"]})
    facts["worker1"].engine_gpus = tuple(WANTED)
    write, restart = planned(d, facts).commands["worker1"]
    assert restart.why.startswith("restart the Docker engine of worker1")
    assert json.loads(write.input) == {"debug": True, "node-generic-resources": ["FPGA=fpga0"]}  # another kind is not ours
    facts["worker1"].daemon_json = json.dumps({"debug": True, "node-generic-resources": WANTED})
    write, _ = planned(d, facts).commands["worker1"]
    assert json.loads(write.input) == {"debug": True}
    assert "worker1 has no gpus any more" == write.why


def test_hosts_without_gpus_and_no_file_get_nothing(site) -> None:
    d = deployment(site)
    p = planned(d, ready_facts())
    assert p.commands == {} and p.notes == {}


def test_a_broken_daemon_json_is_named_and_only_where_it_matters(site) -> None:
    facts = ready_facts()
    facts["worker2"].daemon_json = "{not json"
    assert planned(deployment(site), facts).commands == {}  # nothing to declare there: not ours to fix
    facts["worker1"].daemon_json = "{not json"
    with pytest.raises(gpus.DaemonJsonError, match=r"worker1: /etc/docker/daemon.json is not valid JSON"):
        planned(deployment(site, IDS), facts)


def test_plan_of_a_fresh_deploy_waits_for_a_node_id_it_cannot_know_yet(site) -> None:
    d = deployment(site, IDS)
    facts = ready_facts()
    for f in facts.values():
        f.swarm_state, f.node_id, f.node_labels, f.manager = "inactive", "", {}, False
    plans = {phase.title: p for phase, p in plan_all(Context.of(d), facts, DEPLOY)}
    p = plans[gpus.PHASE.title]
    (wait,) = p.commands["hub1"]
    assert wait.argv[-4] == "<node ID of worker1>"


def test_expect_leaves_nothing_to_do(site) -> None:
    d = deployment(site, IDS)
    facts = ready_facts()
    ctx = Context.of(d)
    gpus.expect(ctx, facts, gpus.plan(ctx, facts))
    assert gpus.plan(ctx, facts).commands == {}
    assert gpus.check(ctx, facts) == []


def run_write(tmp_path: Path, path: Path, digest: str, content: str) -> subprocess.CompletedProcess:
    """The phase's write script, run for real against a file in tmp_path (no dockerd there: no flags to refuse)."""
    return subprocess.run(["bash", "-c", gpus.WRITE, "bash", str(path), digest], input=content, capture_output=True, text=True, check=False)


def test_the_write_script_writes_only_the_file_it_planned_against(tmp_path: Path, site) -> None:
    d = deployment(site, IDS)
    target = tmp_path / "etc" / "docker" / "daemon.json"
    first = gpus.write_command(d.hosts[1], None)
    assert run_write(tmp_path, target, first.argv[-1], first.input.decode()).returncode == 0
    assert json.loads(target.read_text()) == {"node-generic-resources": [f"NVIDIA-GPU={i}" for i in IDS]}
    target.chmod(0o640)
    text = target.read_text()
    again = gpus.write_command(d.hosts[1], text)
    stale = run_write(tmp_path, target, gpus.digest('{"changed": 1}'), again.input.decode())
    assert stale.returncode == 1 and "changed since deploy read it" in stale.stderr and target.read_text() == text
    assert run_write(tmp_path, target, again.argv[-1], again.input.decode()).returncode == 0
    assert oct(target.stat().st_mode & 0o777) == "0o640"  # its mode kept
