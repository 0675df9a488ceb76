"""The main job on this machine: `deployer init --local` then `deployer deploy` give a working
hub with the local-dev login (clearly marked), and a second deploy changes nothing."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from deployer.config.discovery import discover
from deployer.config.example import LOCAL_NAME
from deployer.config.hubsettings import Layout
from deployer.config.loader import load
from deployer.hosts.executor import LocalExecutor
from deployer.phases import teardown
from swarm.conftest import docker
from swarm.helpers import spawn

pytestmark = pytest.mark.swarm

DEPLOYER = str(Path(sys.executable).with_name("deployer"))


def deployer(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([DEPLOYER, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def password_login(username: str, password: str) -> tuple[httpx.Client, httpx.Response]:
    browser = httpx.Client(base_url="https://127.0.0.1", verify=False, follow_redirects=False, timeout=60)
    page = browser.get("/hub/login")
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text).group(1)
    return browser, browser.post("/hub/login", data={"username": username, "password": password, "_xsrf": xsrf})


def test_init_local_and_deploy_give_a_working_hub(images, tmp_path: Path) -> None:
    site = tmp_path / "local"
    assert deployer("init", "--local", str(site), cwd=tmp_path).returncode == 0
    password = yaml.safe_load((site / "site.passwords").read_text())["jupyterhub.local.dev"]["local_dev_password"]
    deployment = load(discover(site), "jupyterhub", "local", "dev").deployments[0]
    try:
        first = deployer("deploy", cwd=site)
        assert first.returncode == 0, first.stderr + first.stdout
        assert "hub: https://127.0.0.1" in first.stdout
        assert "login (LOCAL USE ONLY): any username, with the password local_dev_password in site.passwords" in first.stdout
        assert password not in first.stdout + first.stderr

        assert "LOCAL USE ONLY" in httpx.get("https://127.0.0.1/hub/login", verify=False).text
        _, refused = password_login("mallory", "not-the-password")
        assert refused.status_code == 403
        browser, response = password_login("Tester", password)
        assert response.status_code == 302
        assert spawn(browser, "tester") == "ready"
        written = f"/srv/deployer/{LOCAL_NAME}/share/data/tester"
        assert os.path.isdir(written) and (os.stat(written).st_uid, os.stat(written).st_gid) == (1000, 100)

        hub_container = docker("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={LOCAL_NAME}-hub")
        again = deployer("deploy", cwd=site)
        assert again.returncode == 0, again.stderr
        assert "nothing to change: the hub already runs as configured" in again.stdout
        assert docker("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={LOCAL_NAME}-hub") == hub_container
        shown = deployer("status", cwd=site)
        assert shown.returncode == 0, shown.stderr
        assert re.search(r"^\S+\s+Ready\s+Active\s+hub,worker\s+yes\s+1 \(tester\)\s*$", shown.stdout, re.M), shown.stdout
        assert re.search(r"^hub service: Running", shown.stdout, re.M), shown.stdout
        planned = deployer("plan", cwd=site)
        assert planned.returncode == 0, planned.stderr
        assert re.search(r"this-machine\s+nothing\s+Docker .*swarm manager already", planned.stdout), planned.stdout
        # no secret in the hub service's definition or environment
        inspect = docker("service", "inspect", f"{LOCAL_NAME}-hub")
        assert password not in inspect and "local_dev_password" in inspect  # named as a secret, value absent

        refused = subprocess.run([DEPLOYER, "destroy"], cwd=site, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
        assert refused.returncode == 2 and "pass -y to confirm" in refused.stderr
        assert docker("service", "ls", "-q", "--filter", f"name={LOCAL_NAME}-hub")  # nothing removed without confirmation
        removed = deployer("destroy", "-y", cwd=site)
        assert removed.returncode == 0, removed.stderr
        # hub and notebooks gone (and the swarm left, as on any host, when nothing else ran in it)
        assert not docker("service", "ls", "-q", "--filter", f"name={LOCAL_NAME}", check=False)
        assert not docker("secret", "ls", "-q", "--filter", f"label=deployer={LOCAL_NAME}", check=False)
        assert not docker("ps", "-aq", "--filter", f"label=deployer={LOCAL_NAME}")  # the guard and the Docker proxy too
        assert os.path.isdir(written)  # the user's data is kept
        assert deployer("destroy", "-y", "--purge-data", cwd=site).returncode == 0
        assert not os.path.exists(f"/srv/deployer/{LOCAL_NAME}")
    finally:
        teardown.remove(Layout.of(deployment), LocalExecutor())
        shutil.rmtree(f"/srv/deployer/{LOCAL_NAME}", ignore_errors=True)
