"""The CLI installs on its own from the repository in one command (no hub-side dependencies)."""

from __future__ import annotations

import subprocess
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.local

ROOT = Path(__file__).resolve().parents[2]


def test_pip_install_of_the_repository_gives_a_working_cli_without_jupyterhub(tmp_path: Path) -> None:
    env = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env)
    python = env / "bin" / "python"
    installed = subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(ROOT)], capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr[-3000:]
    names = subprocess.run([str(python), "-m", "pip", "list", "--format", "freeze"], capture_output=True, text=True, check=True).stdout.lower()
    assert "deployer==" in names and "jupyterhub" not in names and "dockerspawner" not in names
    site = tmp_path / "site"
    deployer = str(env / "bin" / "deployer")
    assert subprocess.run([deployer, "init", "--local", str(site)], capture_output=True, text=True, timeout=60).returncode == 0
    checked = subprocess.run([deployer, "-C", str(site), "validate"], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0 and checked.stdout.startswith("ok jupyterhub.local.dev"), checked.stdout + checked.stderr
