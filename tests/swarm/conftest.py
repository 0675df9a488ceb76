"""The swarm tier: a real Docker engine in swarm mode on this machine, the real images,
a hub deployed from deployment files, the tenant simulator over HTTPS."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from sim.tenant import TenantSimulator
from sim.tls import server_tls

from deployer.config.discovery import discover
from deployer.config.example import LOCAL_NAME
from deployer.config.hubsettings import Layout
from deployer.config.loader import Deployment, load
from deployer.hosts.executor import LocalExecutor
from deployer.hosts.ssh import executor_for
from deployer.phases import teardown
from deployer.rollout import Report, Rollout

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ("swarm-hub", "S3CR3T-client-xyzzy")
TAS_ROLE = ("jhub-role", "S3CR3T-tas-plugh")
USERS = {"jdoe": ("pw-jdoe", 5001, 6001), "alice": ("pw-alice", 5003, 6003)}
NAME = "jupyterhub-test-sim"
SHARE = f"/srv/deployer/{NAME}/share"


def docker(*args: str, check: bool = True) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, timeout=300).stdout.strip()


@pytest.fixture(scope="session")
def images() -> None:
    """The engine and the images, as an operator's machine gets them (cached by content hash)."""
    result = subprocess.run(["bash", str(ROOT / "scripts" / "build-images")], capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        pytest.fail(f"scripts/build-images failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    # The swarm's gateway bridge must exist before the tenant simulator binds to it (a deploy would
    # make the swarm, but the simulator starts first).
    if docker("info", "--format", "{{.Swarm.LocalNodeState}}") != "active":
        docker("swarm", "init", "--advertise-addr", "127.0.0.1")
    # Ports 80 and 443 are needed: a local hub left by scripts/up (or a killed run) is removed.
    for name in (NAME, LOCAL_NAME):
        teardown.remove(Layout(name), LocalExecutor())


@pytest.fixture(scope="module")
def worker_node(images) -> Iterator[str]:
    """This node labelled as a worker, for tests that start notebooks without a deploy (a deploy
    labels its nodes, and a destroy that leaves nothing running takes the labels off again). The
    label is removed afterwards only if this fixture added it."""
    node = docker("info", "--format", "{{.Swarm.NodeID}}")
    labels = docker("node", "inspect", node, "--format", "{{json .Spec.Labels}}")
    added = '"deployer.worker":"true"' not in labels
    if added:
        docker("node", "update", "--label-add", "deployer.worker=true", node)
    yield node
    if added:
        docker("node", "update", "--label-rm", "deployer.worker", node, check=False)


@pytest.fixture(scope="session")
def gateway_ip(images) -> str:
    """This machine's address on the swarm's gateway bridge: reachable from the browser here
    and from containers on the overlay network alike."""
    return docker("network", "inspect", "docker_gwbridge", "--format", "{{(index .IPAM.Config 0).Gateway}}")


@pytest.fixture(scope="session")
def tenant(gateway_ip: str):
    ca, context, _ = server_tls(gateway_ip, Path(os.environ.get("TMPDIR", "/tmp")) / "deployer-swarm-tls")
    with TenantSimulator(tenant_id="sim", host=gateway_ip, ssl_context=context).start() as sim:
        for name, (password, uid, gid) in USERS.items():
            sim.add_user(name, password, uid=uid, gid=gid, home_directory=f"05/{uid}/{name}")
        sim.add_user("../evil", "pw-evil", uid=5099, gid=6099)
        sim.add_tas_role_account(*TAS_ROLE)
        sim.add_client(*CLIENT, "https://127.0.0.1/hub/oauth_callback")
        sim.ca_pem = ca
        yield sim


@dataclass
class Site:
    path: Path
    tenant: TenantSimulator

    def deployment(self, overrides: str | None = None) -> Deployment:
        return load(discover(self.path), "jupyterhub", "test", "sim", overrides).deployments[0]


@pytest.fixture(scope="session")
def site(tenant: TenantSimulator, tmp_path_factory) -> Site:
    path = tmp_path_factory.mktemp("site")
    (path / "extras").mkdir()
    (path / "extras" / "tenant-ca.pem").write_text(tenant.ca_pem)
    (path / "site.hosts").write_text(yaml.safe_dump({"jupyterhub.test.sim": {"hosts": [
        {"host_id": "local", "ssh_host": "127.0.0.1", "roles": ["hub", "worker"]}]}}))
    (path / "site.configs").write_text(yaml.safe_dump({"jupyterhub.test.sim": {
        "tenant": "sim", "tenant_type": "agave",
        "jupyterhub_tenant_base_url": tenant.agave_base_url,
        "tenant_ca_bundle": "tenant-ca.pem",
        "tas_base_url": tenant.tas_base_url,
        "jupyterhub_host": "127.0.0.1",
        "jupyterhub_oauth_client_id": CLIENT[0],
        "jupyterhub_image": "deployer/jupyterhub:0.2.0",
        "jupyter_user_image": "deployer/jupyteruser:0.2.0",
        "use_tas_uid": True, "use_tas_gid": True, "tas_role_account": TAS_ROLE[0],
        "volume_mounts": [f"{SHARE}/data/{{tenant_id}}/{{username}}:/home/jupyter/permanent:rw", f"{SHARE}/shared:/home/jupyter/shared:ro"],
        "notebook_memory_limit": "1G", "notebook_offer_lab": True, "cull_idle_notebook_timeout": 3600,
    }}))
    passwords = path / "site.passwords"
    passwords.write_text(yaml.safe_dump({"jupyterhub.test.sim": {"jupyterhub_oauth_client_secret": CLIENT[1], "tas_role_pass": TAS_ROLE[1]}}))
    os.chmod(passwords, 0o600)
    return Site(path, tenant)


def deploy_here(deployment: Deployment) -> Report:
    """`deployer deploy` of a deployment on this machine: the one Rollout, with the local executor."""
    return Rollout(deployment, {h.host_id: executor_for(h, deployment) for h in deployment.hosts}, "deploy").deploy()


def remove_everything(deployment: Deployment) -> None:
    teardown.remove(Layout.of(deployment), LocalExecutor())
    shutil.rmtree(f"/srv/deployer/{NAME}", ignore_errors=True)


@pytest.fixture(scope="session")
def hub(site: Site):
    deployment = site.deployment()
    remove_everything(deployment)  # leftovers of a killed run
    yield deploy_here(deployment)
    if os.environ.get("DEPLOYER_KEEP_SWARM") != "1":
        remove_everything(deployment)


def mount_sources(container_spec: dict) -> dict[str, str]:
    """Target -> the host directory each mount of a service's container spec comes from: a volume of the
    deployment's mount guard names it in its driver options (notebooks get no bind mounts)."""
    found = {}
    for mount in container_spec.get("Mounts") or []:
        assert mount["Type"] == "volume" and mount["VolumeOptions"]["DriverConfig"]["Name"] == f"{NAME}-mounts", mount
        found[mount["Target"]] = mount["VolumeOptions"]["DriverConfig"]["Options"]["source"]
    return found


def same_directory(container: str, path_in_container: str, host_path: str) -> bool:
    """The directory a container sees at a path is the host's directory (same device and inode)."""
    inside = docker("exec", container, "stat", "-c", "%d %i", path_in_container).split()
    host = os.stat(host_path)
    return (int(inside[0]), int(inside[1])) == (host.st_dev, host.st_ino)
