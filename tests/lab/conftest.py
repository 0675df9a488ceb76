"""The lab tier: several Docker-in-Docker "hosts" on this machine, reached over real SSH."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml
from sim.tenant import TenantSimulator
from sim.tls import server_tls

from lab.deployment import CLIENT, METRICS_TOKEN, SCOPE, TAS_ROLE, USERS
from lab.harness import ROOT, Lab

#: The share of the lab deployment (jupyterhub.lab.sim): one volume seen by all three hosts, in
#: place of the workers' NFS mount of the hub's export, which this kernel cannot make.
LAB_SHARE = "/srv/deployer/jupyterhub-lab-sim/share"


@pytest.fixture(scope="package")
def lab():
    """The started lab (hub, worker1, worker2); removed when the lab tier's tests are done (not at the end
    of the whole run: three idle engines would slow the tiers after it) unless DEPLOYER_KEEP_LAB=1."""
    prepare = subprocess.run(
        ["bash", "-c", f'source "{ROOT}/scripts/lib/docker.sh" && ensure_docker && ensure_base_image'],
        capture_output=True, text=True, timeout=900, check=False,
    )
    if prepare.returncode != 0:
        pytest.fail(f"the Docker engine or the base image is not available:\n{prepare.stderr[-3000:]}")
    # The images deploy sends to the lab's hosts, as this checkout builds them (cached by content hash):
    # an image left by another checkout would run a hub that cannot read this one's hub.json.
    built = subprocess.run(["bash", str(ROOT / "scripts" / "build-images")], capture_output=True, text=True, timeout=1800, check=False)
    if built.returncode != 0:
        pytest.fail(f"scripts/build-images failed:\n{built.stdout[-3000:]}\n{built.stderr[-3000:]}")
    lab = Lab(shared=(LAB_SHARE,)).start()
    try:
        yield lab
    finally:
        if os.environ.get("DEPLOYER_KEEP_LAB") != "1":
            lab.stop()


@pytest.fixture(scope="module")
def tenant(lab: Lab, tmp_path_factory):
    gateway = subprocess.run(["docker", "network", "inspect", lab.network, "--format", "{{(index .IPAM.Config 0).Gateway}}"],
                             capture_output=True, text=True, check=True).stdout.strip() or str(lab.subnet.network_address + 1)
    ca, context, _ = server_tls(gateway, tmp_path_factory.mktemp("tenant-tls"))
    with TenantSimulator(tenant_id="sim", host=gateway, ssl_context=context).start() as sim:
        for name, (password, uid, gid) in USERS.items():
            sim.add_user(name, password, uid=uid, gid=gid, home_directory=f"05/{uid}/{name}")
        sim.add_tas_role_account(*TAS_ROLE)
        sim.add_client(*CLIENT, f"https://{lab.hosts['hub']}/hub/oauth_callback")
        sim.ca_pem = ca
        yield sim


@pytest.fixture(scope="module")
def site(lab: Lab, tenant: TenantSimulator, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("lab-site")
    (path / "extras").mkdir()
    (path / "extras" / "tenant-ca.pem").write_text(tenant.ca_pem)
    lab.write_servers(path, SCOPE)
    (path / "site.configs").write_text(yaml.safe_dump({SCOPE: {
        "tenant": "sim", "tenant_type": "agave", "jupyterhub_tenant_base_url": tenant.agave_base_url, "tenant_ca_bundle": "tenant-ca.pem",
        "tas_base_url": tenant.tas_base_url, "use_tas_uid": True, "use_tas_gid": True, "tas_role_account": TAS_ROLE[0],
        "jupyterhub_host": lab.hosts["hub"], "jupyterhub_oauth_client_id": CLIENT[0],
        "jupyterhub_image": "deployer/jupyterhub:0.2.0", "jupyter_user_image": "deployer/jupyteruser:0.2.0",
        "volume_mounts": [f"{LAB_SHARE}/data/{{username}}:/home/jupyter/permanent:rw"],
        "notebook_offer_lab": True, "notebook_memory_limit": "1G", "notebook_node_down_timeout": 15,
    }}))
    passwords = path / "site.passwords"
    passwords.write_text(yaml.safe_dump({SCOPE: {"jupyterhub_oauth_client_secret": CLIENT[1], "tas_role_pass": TAS_ROLE[1],
                                                 "jupyterhub_metrics_token": METRICS_TOKEN}}))
    os.chmod(passwords, 0o600)
    return path
