"""Deploy on the lab: a fresh `deploy` to three new hosts over SSH, then no-op redeploys, with
the wall time and the remote commands each host ran (the executors' own counts).

The hosts are the lab tier's Docker-in-Docker machines (tests/lab/harness.py) on a prefix and
subnet of their own, started anew for every repetition so that "fresh" means fresh: no
engine state, no swarm, no images (they are sent from this machine, as on a site without a
registry). The share is one volume seen by all three hosts, as in the lab tests.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from lab.harness import Lab  # noqa: E402  (the tests' harness: one definition of a lab host)

from deployer.config.discovery import discover  # noqa: E402
from deployer.config.loader import load  # noqa: E402
from deployer.hosts.commands import cmd  # noqa: E402
from deployer.hosts.ssh import (
    SSHExecutor,  # noqa: E402
    executor_for,  # noqa: E402
)
from deployer.rollout import Report, Rollout  # noqa: E402

SCOPE = "jupyterhub.bench.lab"
NAME = "jupyterhub-bench-lab"
SHARE = f"/srv/deployer/{NAME}/share"


@dataclass
class Run:
    seconds: float
    commands: dict[str, int]
    changed: bool
    hub_container: str


def _site(lab: Lab, directory: Path, user_image: str = "deployer/jupyteruser:0.2.0") -> Path:
    lab.write_servers(directory, SCOPE)
    (directory / "site.configs").write_text(yaml.safe_dump({SCOPE: {
        "tenant": "designsafe", "jupyterhub_host": lab.hosts["hub"], "jupyterhub_oauth_client_id": "bench-client",
        "jupyterhub_image": "deployer/jupyterhub:0.2.0", "jupyter_user_image": user_image,
        "volume_mounts": [f"{SHARE}/data/{{username}}:/home/jupyter/permanent:rw"],
    }}))
    passwords = directory / "site.passwords"
    passwords.write_text(yaml.safe_dump({SCOPE: {"jupyterhub_oauth_client_secret": "bench-secret-not-real"}}))
    os.chmod(passwords, 0o600)
    return directory


def _deploy(site: Path, *, cold_ssh: bool) -> Run:
    deployment = load(discover(site), "jupyterhub", "bench", "lab").deployments[0]
    executors = {h.host_id: executor_for(h, deployment) for h in deployment.hosts}
    if cold_ssh:  # no shared connection left from an earlier run: every host pays its SSH handshake
        for ex in executors.values():
            if isinstance(ex, SSHExecutor):
                ex.close()
    started = time.monotonic()
    report: Report = Rollout(deployment, executors, "deploy").deploy()
    seconds = time.monotonic() - started
    hub = executors["hub"].run(cmd("docker", "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={NAME}-hub")).stdout.strip()
    return Run(seconds, dict(report.commands), report.changed, hub)


def measure(reps: int, workdir: Path) -> dict[str, list[Run]]:
    """{"fresh": [...], "no-op (warm ssh)": [...], "no-op (cold ssh)": [...]} over ``reps`` new labs."""
    runs: dict[str, list[Run]] = {"fresh deploy": [], "no-op redeploy, SSH connections reused": [], "no-op redeploy, new SSH connections": []}
    lab = Lab(prefix="bench-lab", subnet="10.98.0.0/24", shared=(SHARE,))
    try:
        for rep in range(reps):
            lab.start()
            site = _site(lab, Path(tempfile.mkdtemp(prefix="lab-site-", dir=workdir)))
            fresh = _deploy(site, cold_ssh=True)
            warm = _deploy(site, cold_ssh=False)
            cold = _deploy(site, cold_ssh=True)
            for run in (warm, cold):
                if run.changed or run.hub_container != fresh.hub_container:
                    raise RuntimeError(f"a no-op redeploy changed something (rep {rep + 1}): changed={run.changed}, "
                                       f"hub container {fresh.hub_container} -> {run.hub_container}")
            runs["fresh deploy"].append(fresh)
            runs["no-op redeploy, SSH connections reused"].append(warm)
            runs["no-op redeploy, new SSH connections"].append(cold)
    finally:
        lab.stop()
    return runs


# --- image transfer: whole images vs only the layers a host lacks ----------------------------------------------------

BENCH_IMAGE = "deployer/jupyteruser:bench"  # the user image under a tag of the benchmark's own, rebuilt with one new layer
CHANGE = 20 * 1024 * 1024  # the new layer's payload (random: incompressible)
SENT = re.compile(r"^sent ([\d.]+) MB of (\S+) ")


class WholeImages(Rollout):
    """Deploy as before layer skipping: every image sent whole (the same stream, nothing skipped)."""

    def local_layers(self) -> dict[str, list[str]]:
        return {}


@dataclass
class Transfer:
    seconds: float
    user_image_mb: dict[str, float]  # worker -> MB sent of the user image


def _docker_local(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, check=True, **kwargs)


def _rebuild_with_one_layer(workdir: Path) -> None:
    context = Path(tempfile.mkdtemp(prefix="layer-", dir=workdir))
    (context / "blob").write_bytes(os.urandom(CHANGE))
    (context / "Dockerfile").write_text("FROM deployer/jupyteruser:0.2.0\nCOPY blob /blob\n")
    _docker_local("build", "-q", "-t", BENCH_IMAGE, str(context))


def _transfer(site: Path, rollout: type[Rollout]) -> Transfer:
    deployment = load(discover(site), "jupyterhub", "bench", "lab").deployments[0]
    executors = {h.host_id: executor_for(h, deployment) for h in deployment.hosts}
    started = time.monotonic()
    report = rollout(deployment, executors, "deploy").deploy()
    seconds = time.monotonic() - started
    sent = {}
    for host, result in report.results.items():
        for note in result.notes:
            match = SENT.match(note)
            if match and match.group(2) == BENCH_IMAGE:
                sent[host] = float(match.group(1))
    return Transfer(seconds, sent)


def _floor(lab: Lab, worker: str) -> Transfer:
    """The raw floor: `docker save | ssh docker load` of the whole image, no Deployer in between."""
    lab.ssh(worker, f"docker image rm -f {BENCH_IMAGE} >/dev/null 2>&1; true")
    size = int(subprocess.run(f"docker save {BENCH_IMAGE} | wc -c", shell=True, capture_output=True, text=True, check=True).stdout)
    started = time.monotonic()
    save = subprocess.Popen(["docker", "save", BENCH_IMAGE], stdout=subprocess.PIPE)
    subprocess.run([*lab.ssh_command(worker), "docker load -q"], stdin=save.stdout, capture_output=True, check=True, timeout=1800)
    save.wait()
    return Transfer(time.monotonic() - started, {worker: size / 1e6})


def measure_images(reps: int, workdir: Path) -> dict[str, list[Transfer]]:
    """Per repetition and per way of sending (whole images, then only missing layers), on new lab hosts:
    a fresh deploy, then a deploy after the user image was rebuilt with one new 20 MB layer; and the raw floor."""
    runs: dict[str, list[Transfer]] = {}
    lab = Lab(prefix="bench-lab", subnet="10.98.0.0/24", shared=(SHARE,))
    _docker_local("tag", "deployer/jupyteruser:0.2.0", BENCH_IMAGE)
    try:
        for _ in range(reps):
            for name, rollout in (("whole images (before)", WholeImages), ("only the layers a host lacks (ours)", Rollout)):
                lab.start()
                site = _site(lab, Path(tempfile.mkdtemp(prefix="lab-site-", dir=workdir)), user_image=BENCH_IMAGE)
                runs.setdefault(f"fresh deploy, {name}", []).append(_transfer(site, rollout))
                _rebuild_with_one_layer(workdir)
                runs.setdefault(f"one-layer change, {name}", []).append(_transfer(site, rollout))
                if rollout is Rollout:
                    _rebuild_with_one_layer(workdir)
                    runs.setdefault("one-layer change, raw floor: docker save | ssh docker load (whole image)", []).append(_floor(lab, "worker1"))
                lab.stop()
    finally:
        lab.stop()
        _docker_local("image", "rm", "-f", BENCH_IMAGE)
    return runs
