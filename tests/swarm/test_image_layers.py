"""Sending an image without the layers the host has: a rebuilt image costs its new layer, and the
engine loads it from what was sent (the real engine: the image removed, then loaded from the stream)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from deployer.hosts.layers import chain_ids, diff_ids, present_prefix
from swarm.conftest import docker

pytestmark = pytest.mark.swarm

BASE = "deployer/netguard:0.2.0"
TAG = "deployer-layertest:1"
LAYER = 5 * 1024 * 1024


def test_a_rebuilt_image_is_sent_as_its_new_layer_and_the_engine_loads_it(images, tmp_path) -> None:
    (tmp_path / "blob").write_bytes(os.urandom(LAYER))
    (tmp_path / "Dockerfile").write_text(f"FROM {BASE}\nCOPY blob /blob\n")
    docker("build", "-q", "-t", TAG, str(tmp_path))
    try:
        built = docker("image", "inspect", "--format", "{{.Id}}", TAG)
        layers = diff_ids(TAG)
        skip = present_prefix(layers, set(chain_ids(diff_ids(BASE))))
        assert skip == len(layers) - 1  # everything but the new layer is on a host that has the base
        sent = subprocess.run([sys.executable, "-m", "deployer.hosts.layers", TAG, str(skip)], capture_output=True, check=True)
        whole = subprocess.run(f"docker save {TAG} | wc -c", shell=True, capture_output=True, text=True, check=True)
        print(f"\none-layer change ({LAYER / 1e6:.1f} MB): sent {len(sent.stdout) / 1e6:.2f} MB instead of {int(whole.stdout) / 1e6:.1f} MB")
        assert len(sent.stdout) <= 1.2 * LAYER
        assert f"({skip} of its layers" in sent.stderr.decode()
        docker("image", "rm", TAG)  # the host lacks the image (and its new layer), has the base
        loaded = subprocess.run(["docker", "load"], input=sent.stdout, capture_output=True)
        assert loaded.returncode == 0, loaded.stderr.decode()
        assert docker("image", "inspect", "--format", "{{.Id}}", TAG) == built
    finally:
        docker("image", "rm", "-f", TAG, check=False)
