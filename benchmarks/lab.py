"""Deploy on the lab: a fresh `deploy` to three new hosts over SSH, then no-op redeploys, with
the wall time and the remote commands each host ran (the executors' own counts).

The hosts are the lab tier's Docker-in-Docker machines (tests/lab/harness.py) on a prefix and
subnet of their own, started anew for every repetition so that "fresh" means fresh: no
engine state, no swarm, no images (they are sent from this machine, as on a site without a
registry). The share is one volume seen by all three hosts, as in the lab tests.
"""

from __future__ import annotations

import os
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


def _site(lab: Lab, directory: Path) -> Path:
    lab.write_servers(directory, SCOPE)
    (directory / "site.configs").write_text(yaml.safe_dump({SCOPE: {
        "tenant": "designsafe", "jupyterhub_host": lab.hosts["hub"], "jupyterhub_oauth_client_id": "bench-client",
        "jupyterhub_image": "deployer/jupyterhub:0.1.0", "jupyter_user_image": "deployer/jupyteruser:0.1.0",
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
