"""One version everywhere: the packages, the images scripts/build-images tags, and the images the
configuration defaults to (the upgrade test deploys the last release's tag over it)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import deployer
import deployer_hub

from deployer.config.model import DEFAULT_HUB_IMAGE, DEFAULT_NETGUARD_IMAGE

ROOT = Path(__file__).resolve().parents[2]


def test_the_packages_the_build_script_and_the_default_images_share_one_version() -> None:
    version = deployer.__version__
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"] == version
    assert tomllib.loads((ROOT / "hub" / "pyproject.toml").read_text())["project"]["version"] == version
    assert deployer_hub.__version__ == version
    assert re.search(r"^VERSION=(\S+)$", (ROOT / "scripts" / "build-images").read_text(), re.M).group(1) == version
    assert DEFAULT_HUB_IMAGE.endswith(f":{version}") and DEFAULT_NETGUARD_IMAGE.endswith(f":{version}")
    assert f"deployer/jupyterhub:{version}" in (ROOT / "src" / "deployer" / "example" / "site.configs").read_text()


def test_the_release_list_names_released_versions_older_than_this_one() -> None:
    """RELEASES (the upgrade test's fallback when a checkout has no tags): "version commit" lines, oldest first."""
    listed = [line.split() for line in (ROOT / "RELEASES").read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert listed and all(len(entry) == 2 and re.fullmatch(r"[0-9a-f]{40}", entry[1]) for entry in listed)
    versions = [tuple(int(part) for part in version.split(".")) for version, _ in listed]
    assert versions == sorted(versions) and versions[-1] < tuple(int(part) for part in deployer.__version__.split("."))
