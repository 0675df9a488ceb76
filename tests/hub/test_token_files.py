"""Token files the hub writes are what the notebook's own libraries load: agavepy's
Agave.restore() and tapipy's Tapis client, each in its own venv, as in the notebook."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from hub import token_libs
from hub.flows import auth_state, login
from hub.harness import HubProcess

pytestmark = pytest.mark.hub


def notebook_home(tmp_path: Path, token_dir: Path) -> Path:
    """A home directory laid out as the spawner mounts it: the token directory at ~/.agave."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".agave").symlink_to(token_dir)
    return home


def test_files_are_private_and_complete(start_hub) -> None:
    hub: HubProcess = start_hub("agave")
    login(hub, "JDoe", "pw-jdoe")
    directory = hub.workdir / "tokens" / "sim" / "jdoe"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(directory.parent.stat().st_mode) == 0o711
    assert sorted(p.name for p in directory.iterdir()) == [".agpy", "current"]  # no temporary files left behind
    for path in directory.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert (path.stat().st_uid, path.stat().st_gid) == (1000, 100)  # the image's user when TAS is off
    current = json.loads((directory / "current").read_text())
    assert current["apisecret"] == "" and current["apikey"] == ""  # the hub's client secret is not shared by default
    assert current["username"] == "jdoe" and current["tenantid"] == "sim"


def test_agavepy_restores_the_users_session(start_hub, tmp_path: Path) -> None:
    hub: HubProcess = start_hub("agave")
    login(hub, "JDoe", "pw-jdoe")
    token = auth_state(hub, "jdoe")["access_token"]
    directory = hub.workdir / "tokens" / "sim" / "jdoe"
    home = notebook_home(tmp_path, directory)
    script = "from agavepy.agave import Agave\nag = Agave.restore()\nprint(ag.api_server, ag.tenant_id, ag.username, ag._token)"
    assert token_libs.run(script, home).split() == [configured_base_url(hub), "sim", "jdoe", token]
    # The same session from .agpy alone (agavepy's second place to look).
    os.unlink(home / ".agave")
    (home / ".agpy").symlink_to(directory / ".agpy")
    assert token_libs.run(script, home).split()[-1] == token


def test_tapipy_builds_a_client_from_the_file_offline(start_hub, tmp_path: Path) -> None:
    hub: HubProcess = start_hub("tapis")
    login(hub, "JDoe", "pw-jdoe")
    state = auth_state(hub, "jdoe")
    directory = hub.workdir / "tokens" / "sim" / "jdoe"
    assert sorted(p.name for p in directory.iterdir()) == ["tapis.json", "tapis_token"]
    assert (directory / "tapis_token").read_text() == state["access_token"]
    script = (
        "import json, os\nfrom tapipy.tapis import Tapis\n"
        "cfg = json.load(open(os.path.expanduser('~/.agave/tapis.json')))\n"
        "t = Tapis(base_url=cfg['base_url'], tenant_id=cfg['tenant_id'], username=cfg['username'], access_token=cfg['access_token'],"
        " refresh_token=cfg['refresh_token'] or None, verify=cfg['verify'])\n"
        "print(t.base_url, t.tenant_id, t.username, t.get_access_jwt(), t.access_token.expires_at.isoformat())"
    )
    base_url, tenant, user, jwt, expires = token_libs.run(script, notebook_home(tmp_path, directory)).split()
    assert (tenant, user, jwt) == ("sim", "jdoe", state["access_token"])
    assert base_url == configured_base_url(hub)
    assert expires.startswith("20")  # tapipy read the expiry from the JWT the tenant issued


def configured_base_url(hub: HubProcess) -> str:
    """The tenant base URL the hub was configured with, read back from its config file."""
    for line in (hub.workdir / "jupyterhub_config.py").read_text().splitlines():
        if ".tenant_base_url = " in line:
            return line.split("=", 1)[1].strip().strip('"')
    raise AssertionError("no tenant_base_url in the hub's config")
