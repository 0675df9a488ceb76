"""`deployer plan` against three real hosts over real SSH, as an operator runs it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lab.harness import Lab

pytestmark = pytest.mark.lab

DEPLOYER = str(Path(sys.executable).with_name("deployer"))
SCOPE = "jupyterhub.lab.sim"


def write_site(path: Path, lab: Lab) -> Path:
    lab.write_servers(path, SCOPE)
    (path / "site.configs").write_text(yaml.safe_dump({SCOPE: {
        "tenant": "designsafe", "jupyterhub_host": "jupyter.example.org", "jupyterhub_oauth_client_id": "lab-client",
        "jupyterhub_image": "deployer/jupyterhub:0.2.0", "jupyter_user_image": "deployer/jupyteruser:0.2.0",
        "volume_mounts": ["/srv/share/{username}:/home/jupyter/permanent:rw", "/srv/published:/home/jupyter/published:ro"],
    }}))
    (path / "site.passwords").write_text(yaml.safe_dump({SCOPE: {"jupyterhub_oauth_client_secret": "S3CR3T-client-xyzzy"}}))
    os.chmod(path / "site.passwords", 0o600)
    return path


def plan(site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([DEPLOYER, "-i", "lab", "-t", "sim", "plan"], cwd=site, capture_output=True, text=True, timeout=300)


def test_plan_reads_every_host_over_ssh(lab: Lab, tmp_path: Path) -> None:
    site = write_site(tmp_path, lab)
    for name in ("worker1", "worker2"):
        lab.ssh(name, "mkdir -p /srv/published /srv/share")  # the static parts of both mounts
    # A known state, whatever ran before: worker1 has the notebook image, worker2 has not.
    lab.load_image("worker1", "deployer/jupyteruser:0.2.0")
    lab.ssh("worker2", "docker image rm -f deployer/jupyteruser:0.2.0 >/dev/null 2>&1; true")
    result = plan(site)
    assert result.returncode == 0, result.stderr + result.stdout
    # each host's row of the table, its wrapped continuation lines joined
    rows = {m.group(1): " ".join(m.group(0).split()) for m in re.finditer(r"^(hub|worker1|worker2)\s{2,}.*$(\n {10,}\S.*$)*", result.stdout, re.M)}
    assert "initialise the swarm on the hub" in rows["hub"]
    for worker in ("worker1", "worker2"):
        assert "join the swarm as a worker" in rows[worker], rows[worker]
    assert "image deployer/jupyteruser:0.2.0 present" in rows["worker1"] and "send image deployer/jupyteruser" not in rows["worker1"]
    assert "send image deployer/jupyteruser:0.2.0" in rows["worker2"], rows["worker2"]
    assert "S3CR3T" not in result.stdout + result.stderr
    # plan changed nothing: still no swarm anywhere
    for name in lab.hosts:
        assert lab.ssh(name, "docker info --format '{{.Swarm.LocalNodeState}}'").stdout.decode().strip() == "inactive"


def test_plan_names_a_missing_path_and_an_unreachable_worker(lab: Lab, tmp_path: Path) -> None:
    site = write_site(tmp_path, lab)
    lab.ssh("worker1", "mkdir -p /srv/published /srv/share")
    lab.ssh("worker2", "rm -rf /srv/published; mkdir -p /srv/share")
    result = plan(site)
    assert result.returncode == 2
    # a problem of the hosts, named as one (not "problems in the deployment files")
    assert "error: preflight found 1 problem on the hosts; nothing was changed" in result.stderr, result.stderr
    assert "preflight on worker2: static mount path /srv/published does not exist on worker worker2 (10.99.0.13)" in result.stderr
    subprocess.run(["docker", "exec", lab.container("worker2"), "pkill", "-x", "sshd"], check=True)
    try:
        result = plan(site)
        assert result.returncode == 1
        assert "error: worker2 (root@10.99.0.13:22): cannot connect over SSH" in result.stderr
        assert "Traceback" not in result.stderr
    finally:
        subprocess.run(["docker", "exec", lab.container("worker2"), "/usr/sbin/sshd"], check=True)


def test_status_over_ssh_shows_every_node_and_its_role(lab: Lab, tmp_path: Path) -> None:
    site = write_site(tmp_path, lab)
    run = lambda *args: subprocess.run([DEPLOYER, "-i", "lab", "-t", "sim", *args], cwd=site, capture_output=True, text=True, timeout=300)  # noqa: E731
    assert "no swarm on the hub hub yet: run 'deployer deploy'" in run("status").stdout
    hub_ip = lab.hosts["hub"]
    try:  # a swarm made by hand (deploy will make it): status reads it through the hub over SSH
        lab.ssh("hub", f"docker swarm init --advertise-addr {hub_ip}")
        token = lab.ssh("hub", "docker swarm join-token -q worker").stdout.decode().strip()
        for name in ("worker1", "worker2"):
            lab.ssh(name, f"docker swarm join --token {token} {hub_ip}:2377")
        lab.ssh("hub", "docker node update --label-add deployer.hub=true hub")
        for name in ("worker1", "worker2"):
            lab.ssh("hub", f"docker node update --label-add deployer.worker=true {name}")
        result = run("status")
        assert result.returncode == 0, result.stderr
        assert re.search(r"^hub\s+Ready\s+Active\s+hub\s+yes\s+0\s*$", result.stdout, re.M), result.stdout
        for name in ("worker1", "worker2"):
            assert re.search(rf"^{name}\s+Ready\s+Active\s+worker\s+no\s+0\s*$", result.stdout, re.M), result.stdout
        assert "hub service: absent" in result.stdout
    finally:
        for name in ("worker1", "worker2", "hub"):
            lab.ssh(name, "docker swarm leave --force", check=False)
