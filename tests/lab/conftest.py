"""The lab tier: several Docker-in-Docker "hosts" on this machine, reached over real SSH."""

from __future__ import annotations

import os
import subprocess

import pytest

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
