"""A worker's ``gpus:`` deployed as Swarm node generic resources on real lab hosts over real SSH: the
engine's daemon.json gets them (its other keys kept), the engine restarts, the manager's node
inspect shows them on that worker only; a second deploy plans nothing for them and restarts no
engine; removing the key removes them.

LAB SUBSTITUTION: a lab host's dockerd is its container's main process (no systemd, no init), so
only the container's restart policy can start it again; the test gives worker1's container one,
as a site's service manager would restart the engine. No GPU is needed: Swarm takes the device ids
as names.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from lab.deployment import SCOPE, commands_by_host, deployer, same_command, text
from lab.harness import Lab

pytestmark = pytest.mark.lab

IDS = ["GPU-3f2a91c4-0d1e-4b7a-9c55-2f1e3a4b5c6d", "GPU-77b1c2d3-1111-2222-3333-444455556666"]
OTHER_KEYS = {"max-concurrent-downloads": 4}  # the operator's own daemon.json key, which must survive


def outer(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True, timeout=60).stdout.strip()


def set_gpus(site: Path, ids: list[str] | None) -> None:
    servers = yaml.safe_load((site / "site.hosts").read_text())
    worker1 = next(h for h in servers[SCOPE]["hosts"] if h["host_id"] == "worker1")
    worker1.pop("gpus", None)
    if ids:
        worker1["gpus"] = ids
    (site / "site.hosts").write_text(yaml.safe_dump(servers))


def node_gpus(lab: Lab) -> dict[str, list[str]]:
    """Every node's NVIDIA-GPU generic resources, as the manager sees them."""
    found = {}
    for host in lab.hosts:
        raw = text(lab.ssh("hub", f"docker node inspect {host} --format '{{{{json .Description.Resources.GenericResources}}}}'"))
        found[host] = sorted(r["NamedResourceSpec"]["Value"] for r in json.loads(raw) or []
                             if (r.get("NamedResourceSpec") or {}).get("Kind") == "NVIDIA-GPU")
    return found


def daemon_json(lab: Lab) -> dict:
    return json.loads(text(lab.ssh("worker1", "cat /etc/docker/daemon.json")))


def restarts(lab: Lab) -> str:
    """When worker1's engine (its container's main process) last started."""
    return outer("inspect", "--format", "{{.RestartCount}} {{.State.StartedAt}}", lab.container("worker1"))


def gpu_commands(output: str) -> dict[str, list[str]]:
    """Per host, the GPU phase's command lines (hosts run in parallel: only each host's order is fixed)."""
    found = {host: [line for line in lines if any(word in line for word in ("daemon.json", "NVIDIA-GPU", "node-generic-resources"))]
             for host, lines in commands_by_host(output).items()}
    return {host: lines for host, lines in found.items() if lines}


def gpu_lines(output: str) -> list[str]:
    return [line for lines in gpu_commands(output).values() for line in lines]


def assert_gpus_ran_as_planned(planned: subprocess.CompletedProcess, ran: subprocess.CompletedProcess) -> None:
    """deploy ran the GPU commands plan printed (the rest of the deployment is test_deploy's to check)."""
    assert planned.returncode == 0 and ran.returncode == 0, ran.stderr[-4000:] + planned.stderr[-2000:]
    want, got = gpu_commands(planned.stdout), gpu_commands(ran.stderr)
    assert [len(want.get(h, [])) for h in ("worker1", "hub")] == [2, 1] and set(want) == set(got), f"plan: {want}\ndeploy: {got}"
    for host, lines in want.items():
        assert len(lines) == len(got[host]) and all(same_command(w, g) for w, g in zip(lines, got[host])), f"plan: {want}\ndeploy: {got}"


@pytest.fixture(scope="module")
def gpu_site(lab: Lab, site: Path):
    outer("update", "--restart", "unless-stopped", lab.container("worker1"))  # its "service manager" (see above)
    lab.ssh("worker1", f"mkdir -p /etc/docker && echo '{json.dumps(OTHER_KEYS)}' >/etc/docker/daemon.json")
    yield site
    if "NVIDIA-GPU" in text(lab.ssh("worker1", "docker info --format '{{json .GenericResources}}'", check=False)):
        set_gpus(site, None)  # (a failed test left them: a deploy takes them off while the restart policy holds)
        deployer(site, "deploy")
    if os.environ.get("DEPLOYER_KEEP_LAB") != "1":
        deployer(site, "destroy", "-y", "--purge-data")
    outer("update", "--restart", "no", lab.container("worker1"))
    lab.ssh("worker1", "rm -f /etc/docker/daemon.json", check=False)  # (deployed without gpus last: no restart needed)


def test_gpus_become_generic_resources_of_that_worker_only(lab: Lab, gpu_site: Path) -> None:
    set_gpus(gpu_site, IDS)
    planned = deployer(gpu_site, "plan")
    assert any("restart the Docker engine of worker1" in line and "notebooks running on worker1 stop" in line
               for line in planned.stdout.splitlines()), planned.stdout
    deployed = deployer(gpu_site, "deploy")
    assert_gpus_ran_as_planned(planned, deployed)
    assert node_gpus(lab) == {"hub": [], "worker1": sorted(IDS), "worker2": []}
    assert daemon_json(lab) == {**OTHER_KEYS, "node-generic-resources": [f"NVIDIA-GPU={i}" for i in IDS]}

    # Again: nothing planned for them, the engine not restarted.
    before = restarts(lab)
    planned = deployer(gpu_site, "plan")
    again = deployer(gpu_site, "deploy")
    assert again.returncode == 0, again.stderr[-4000:]
    assert gpu_lines(planned.stdout) == [] and gpu_lines(again.stderr) == []
    assert restarts(lab) == before
    assert node_gpus(lab)["worker1"] == sorted(IDS)

    # Removed from the servers file: removed from the engine, the other keys kept; the network guard
    # (a --restart always container) runs again after the engine's restart.
    guard = text(lab.ssh("worker1", "docker ps -q --filter name=netguard"))
    assert guard
    set_gpus(gpu_site, None)
    planned = deployer(gpu_site, "plan")
    removed = deployer(gpu_site, "deploy")
    assert_gpus_ran_as_planned(planned, removed)
    assert restarts(lab) != before
    assert node_gpus(lab) == {"hub": [], "worker1": [], "worker2": []}
    assert daemon_json(lab) == OTHER_KEYS
    assert text(lab.ssh("worker1", f"docker inspect -f '{{{{.State.Running}}}}' {guard}")) == "true"
    status = text(lab.ssh("hub", "docker node inspect worker1 --format '{{.Status.State}} {{.Spec.Availability}}'"))
    assert status == "ready active"
