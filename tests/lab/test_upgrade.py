"""Upgrading a running deployment: the last release (its git tag, built and deployed by its own
scripts and CLI) deployed on the lab with users logged in and notebooks running, then this checkout
deployed over it; and an upgrade that fails, which must put the previous hub and its database back.
Runs after test_deploy.py, on the same lab (whatever that left is destroyed first)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from deployer.config.model import DEFAULT_HUB_IMAGE
from lab.deployment import (
    NAME,
    SCOPE,
    assert_ran_as_planned,
    deployer,
    http_login,
    hub_container,
    hub_xsrf,
    notebook_answers,
    notebook_container,
    running_notebook,
    text,
)
from lab.harness import ROOT, Lab

pytestmark = pytest.mark.lab

USER_IMAGE = DEFAULT_HUB_IMAGE.replace("jupyterhub", "jupyteruser")
UPGRADES = f"/srv/deployer/{NAME}/state/upgrades"


@dataclass
class Release:
    tag: str
    version: str
    source: Path

    def deployer(self, site: Path, *args: str) -> subprocess.CompletedProcess:
        """The release's own CLI (its source first on the path), run as an operator would run it."""
        env = {**os.environ, "PYTHONPATH": f"{self.source / 'src'}:{self.source / 'hub' / 'src'}"}
        return subprocess.run([sys.executable, "-c", "from deployer.cli import run; run()", "-i", "lab", "-t", "sim", *args],
                              cwd=site, env=env, capture_output=True, text=True, timeout=900)


def last_release() -> str:
    """The newest release tag (vX.Y.Z) that is an ancestor of this checkout and not this commit itself
    (or, without tags, the newest commit RELEASES lists)."""
    git = lambda *args: subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False)  # noqa: E731
    head = git("rev-parse", "HEAD").stdout.strip()
    tags = git("tag", "--merged", "HEAD", "--sort=-v:refname", "--list", "v[0-9]*").stdout.split()
    for tag in tags:
        if git("rev-parse", f"{tag}^{{commit}}").stdout.strip() != head:
            return tag
    # No tags in this checkout (fetched without them): the release list's newest commit, if it is here.
    listed = [line.split() for line in (ROOT / "RELEASES").read_text().splitlines() if line.strip() and not line.startswith("#")]
    for _version, commit in reversed(listed):
        if commit != head and git("cat-file", "-e", f"{commit}^{{commit}}").returncode == 0:
            return commit
    pytest.fail(f"no release before HEAD in {ROOT}: neither a tag (v*) nor a commit of RELEASES is in this checkout; "
                "the upgrade test deploys the last release first (a CI checkout must have the history or the tags)")


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Release:
    """The last release's source (git archive of its tag) with its images built by its own build script."""
    tag = last_release()
    source = tmp_path_factory.mktemp("release")
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", tag], capture_output=True, check=True).stdout
    (source / "release.tar").write_bytes(archive)
    with tarfile.open(source / "release.tar") as tar:
        tar.extractall(source, filter="data")
    version = re.search(r'^__version__ = "([^"]+)"', (source / "src" / "deployer" / "__init__.py").read_text(), re.M).group(1)
    assert f":{version}" != DEFAULT_HUB_IMAGE[DEFAULT_HUB_IMAGE.rindex(":"):], f"{tag} has this checkout's version {version}: bump it"
    built = subprocess.run(["bash", str(source / "scripts" / "build-images")], cwd=source, capture_output=True, text=True, timeout=1800, check=False)
    assert built.returncode == 0, f"{tag}'s scripts/build-images failed:\n{built.stdout[-3000:]}\n{built.stderr[-3000:]}"
    found = Release(tag, version, source)
    which = found.deployer(Path.cwd(), "--help")
    assert which.returncode == 0, which.stderr
    return found


def use_images(site: Path, hub_image: str, user_image: str) -> None:
    configs = yaml.safe_load((site / "site.configs").read_text())
    configs[SCOPE].update(jupyterhub_image=hub_image, jupyter_user_image=user_image)
    (site / "site.configs").write_text(yaml.safe_dump(configs))


@pytest.fixture(scope="module")
def upgraded(lab: Lab, site: Path, release: Release):
    """The release deployed, jdoe logged in with a running notebook and an API token of hers, then this
    checkout deployed over it (plan first): what each step printed, and what was there before."""
    destroyed = deployer(site, "destroy", "-y", "--purge-data")  # what test_deploy.py left
    assert destroyed.returncode == 0, destroyed.stderr + destroyed.stdout
    use_images(site, f"deployer/jupyterhub:{release.version}", f"deployer/jupyteruser:{release.version}")
    first = release.deployer(site, "deploy")
    assert first.returncode == 0, f"{release.tag} did not deploy:\n{first.stderr[-5000:]}\n{first.stdout[-2000:]}"
    hub = lab.hosts["hub"]
    browser = running_notebook(hub, "jdoe")
    token = browser.post("/hub/api/users/jdoe/tokens", headers=hub_xsrf(browser), json={"note": "before the upgrade"})
    assert token.status_code == 201, token.text
    worker, container = notebook_container(lab, "jdoe")
    lab.ssh(worker, f"docker exec {container} sh -c 'echo written before the upgrade > /home/jupyter/permanent/upgrade.txt'")
    before = {"browser": browser, "token": token.json()["token"], "notebook": (worker, container), "hub": hub_container(lab),
              "token_file": text(lab.ssh(worker, f"docker exec {container} cat /home/jupyter/.agave/current"))}
    use_images(site, DEFAULT_HUB_IMAGE, USER_IMAGE)
    planned = deployer(site, "plan")
    result = deployer(site, "deploy")
    yield planned, result, before
    if os.environ.get("DEPLOYER_KEEP_LAB") != "1":
        deployer(site, "destroy", "-y", "--purge-data")


def test_an_upgrade_from_the_last_release_keeps_users_notebooks_tokens_and_the_database(upgraded, lab: Lab, site: Path) -> None:
    planned, result, before = upgraded
    ran = assert_ran_as_planned(planned, result)
    assert any(line.startswith(f"replace {NAME}-hub: keep its spec and databases in {UPGRADES}/<time>") for line in ran["hub"]), ran["hub"]
    assert "the hub was replaced (running notebooks were not touched)" in result.stdout
    assert hub_container(lab) not in ("", before["hub"])
    # Kept before the old hub stopped: its spec and both databases; upgrade-db ran (the image changed) and said so.
    kept = text(lab.ssh("hub", f"ls {UPGRADES}/*/")).split()
    assert {"hub-service.json", "jupyterhub.sqlite", "identities.sqlite", "upgrade-db.log"} <= set(kept), kept
    assert text(lab.ssh("hub", f"stat -c %a {UPGRADES}")) == "700"
    # The user is still logged in (cookie secret and database kept), her notebook the same container, still
    # answering through the new hub's proxy; her API token and the tenant's token file are still there.
    browser, hub = before["browser"], lab.hosts["hub"]
    me = browser.get("/hub/api/user", headers=hub_xsrf(browser)).json()
    assert me["name"] == "jdoe" and "" in me["servers"], me
    assert notebook_container(lab, "jdoe") == before["notebook"]
    deadline = time.monotonic() + 60
    while not notebook_answers(browser, "jdoe"):
        assert time.monotonic() < deadline, "jdoe's notebook does not answer through the new hub"
        time.sleep(1)
    by_token = httpx.get(f"https://{hub}/hub/api/user", verify=False, timeout=30, headers={"Authorization": f"token {before['token']}"})
    assert by_token.status_code == 200 and by_token.json()["name"] == "jdoe"
    worker, container = before["notebook"]
    assert text(lab.ssh(worker, f"docker exec {container} cat /home/jupyter/.agave/current")) == before["token_file"]
    assert text(lab.ssh(worker, f"docker exec {container} cat /home/jupyter/permanent/upgrade.txt")) == "written before the upgrade"
    # And a new user's server starts from this checkout's image. (A new login to jdoe's notebook, started by
    # the release's hub, which it knows by the old hub container's address, fails for up to 10 minutes.)
    running_notebook(hub, "bob")
    bobs_worker, bobs = notebook_container(lab, "bob")
    image = text(lab.ssh(bobs_worker, f"docker inspect {bobs} --format '{{{{.Config.Image}}}}'"))
    assert image.split("@")[0] == USER_IMAGE
    # bob's notebook knows the hub by the relay's address (deployer_hub.hubrelay), which a later hub
    # replacement keeps: a login that starts just after one reaches his running notebook (which asks the
    # hub to complete its OAuth, and keeps the address it resolved for 10 minutes).
    relay = f"docker inspect {NAME}-hubapi --format '{{{{.Id}}}} {{{{range .NetworkSettings.Networks}}}}{{{{.IPAddress}}}}{{{{end}}}}'"
    before_replacement = text(lab.ssh("hub", relay))
    assert notebook_answers(http_login(hub, "bob"), "bob")
    replaced = deployer(site, "update", "-o", "cull_idle_notebook_timeout=7200")
    assert replaced.returncode == 0 and "the hub was replaced" in replaced.stdout, replaced.stderr + replaced.stdout
    assert text(lab.ssh("hub", relay)) == before_replacement
    started, deadline = time.monotonic(), time.monotonic() + 20
    while not notebook_answers(http_login(hub, "bob"), "bob"):
        assert time.monotonic() < deadline, "a new login to bob's running notebook fails after the hub's replacement"
        time.sleep(1)
    print(f"a new login to a running notebook worked {time.monotonic() - started:.1f} s after the hub's replacement")
    settled = deployer(site, "deploy")  # the files' configuration again (without the -o above) for the tests below
    assert settled.returncode == 0, settled.stderr + settled.stdout


def answers(browser: httpx.Client) -> bool:
    """The hub answers the user's session (not yet while the restored hub starts)."""
    try:
        return browser.get("/hub/api/user", headers=hub_xsrf(browser)).status_code == 200
    except httpx.TransportError:
        return False


BROKEN = {
    # upgrade-db damages the database (as a migration that fails half way) and fails.
    "upgrade-db": ('if [ "$1" = upgrade-db ]; then python3 -c "import sqlite3; sqlite3.connect(\'/srv/jupyterhub/data/jupyterhub.sqlite\')'
                   '.execute(\'DROP TABLE api_tokens\')"; echo "simulated migration failure" >&2; exit 1; fi; exec jupyterhub-real "$@"'),
    # the hub itself exits at start (a configuration or code it cannot run).
    "start": 'if [ "$1" = upgrade-db ]; then exec jupyterhub-real "$@"; fi; echo "simulated start failure" >&2; exit 1',
}


@pytest.mark.parametrize("failing", sorted(BROKEN))
def test_a_failed_upgrade_puts_the_previous_hub_and_its_database_back(upgraded, lab: Lab, site: Path, tmp_path: Path, failing: str) -> None:
    _, result, before = upgraded
    assert result.returncode == 0, result.stderr
    broken = f"deployer/jupyterhub:broken-{failing}"
    (tmp_path / "jupyterhub").write_text(f"#!/bin/sh\n{BROKEN[failing]}\n")
    (tmp_path / "jupyterhub").chmod(0o755)
    (tmp_path / "Dockerfile").write_text(f"FROM {DEFAULT_HUB_IMAGE}\nRUN mv /opt/hub/bin/jupyterhub /opt/hub/bin/jupyterhub-real\n"
                                         "COPY jupyterhub /opt/hub/bin/jupyterhub\n")
    subprocess.run(["docker", "build", "-q", "-t", broken, str(tmp_path)], check=True, capture_output=True)
    hub, browser = lab.hosts["hub"], before["browser"]
    running = hub_container(lab)
    spec = text(lab.ssh("hub", f"docker service inspect {NAME}-hub --format '{{{{json .Spec}}}}'"))
    failed = deployer(site, "deploy", "-o", f"jupyterhub_image={broken}")
    assert failed.returncode == 1, failed.stderr + failed.stdout
    reason = "simulated migration failure" if failing == "upgrade-db" else "simulated start failure"
    assert reason in failed.stderr and "the previous hub service and its database are back" in failed.stderr, failed.stderr
    assert "Traceback" not in failed.stderr and re.search(r"^hub\s+\S+\s+failed at the hub service", failed.stdout, re.M), failed.stdout
    # The previous service (same spec, so the next deploy has nothing to change) and database: the user is
    # still logged in, her API token (in the table the failed migration dropped) still works.
    assert text(lab.ssh("hub", f"docker service inspect {NAME}-hub --format '{{{{json .Spec}}}}'")) == spec
    deadline = time.monotonic() + 60
    while not answers(browser):
        assert time.monotonic() < deadline, "the previous hub did not come back"
        time.sleep(1)
    back = hub_container(lab)
    assert back not in ("", running)
    by_token = httpx.get(f"https://{hub}/hub/api/user", verify=False, timeout=30, headers={"Authorization": f"token {before['token']}"})
    assert by_token.status_code == 200 and by_token.json()["name"] == "jdoe"
    assert notebook_container(lab, "jdoe") == before["notebook"]
    # The next deploy (without the bad image) puts the Docker proxy, which runs from the hub image, back
    # on the good one; the hub service is as it should be already.
    again = deployer(site, "deploy")
    assert again.returncode == 0 and "the hub's spec changed" not in again.stderr, again.stderr + again.stdout
    assert hub_container(lab) == back
