"""A real JupyterHub with our tenant authenticators logs users in through the tenant simulator,
over HTTP, for Agave v2 and Tapis v3: state, client secret, refresh, revocation, usernames."""

from __future__ import annotations

import json
import stat
import time
from urllib.parse import parse_qs, urlencode, urlparse, urlunparse

import httpx
import pytest

from hub.flows import CLIENT_ID, CLIENT_SECRET, TAS_ROLE, auth_state, begin_login, logged_in, login, tas_config
from hub.harness import HubProcess
from sim.tenant import TenantSimulator, complete_login

pytestmark = pytest.mark.hub

FLAVOURS = ["agave", "tapis"]


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_login_normalises_the_username_and_keeps_encrypted_tokens(flavour: str, start_hub, sim: TenantSimulator) -> None:
    hub = start_hub(flavour)
    browser = hub.browser()
    authorize = begin_login(browser)
    query = parse_qs(urlparse(authorize).query)
    assert query["client_id"] == [CLIENT_ID]
    assert query["redirect_uri"] == [f"{hub.url}/hub/oauth_callback"]
    assert query["code_challenge_method"] == ["S256"] and query["state"]  # PKCE and state on every login
    with httpx.Client(timeout=30) as idp:
        callback = complete_login(idp, authorize, "JDoe", "pw-jdoe")
    response = browser.get(callback)
    assert response.status_code == 302, response.text
    assert logged_in(browser)
    state = auth_state(hub, "jdoe")  # "JDoe" at the tenant, "jdoe" at the hub
    assert state["access_token"] and state["refresh_token"] and state["expires_at"] > time.time()
    # Auth state is stored encrypted: the token is nowhere in the database file in clear.
    assert state["access_token"].encode() not in (hub.workdir / "jupyterhub.sqlite").read_bytes()
    assert CLIENT_SECRET not in hub.log_text()


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_wrong_state_is_rejected(flavour: str, start_hub) -> None:
    hub = start_hub(flavour)
    browser = hub.browser()
    authorize = begin_login(browser)
    with httpx.Client(timeout=30) as idp:
        callback = complete_login(idp, authorize, "JDoe", "pw-jdoe")
    parts = urlparse(callback)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query["state"] = "forged" + query["state"][6:]
    response = browser.get(urlunparse(parts._replace(query=urlencode(query))))
    assert response.status_code == 400
    assert not logged_in(browser)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_wrong_client_secret_is_rejected(flavour: str, start_hub) -> None:
    hub = start_hub(flavour, secret="not-the-secret")
    browser, response = login(hub, "JDoe", "pw-jdoe")
    assert response.status_code == 403
    assert "refused the login" in response.text
    assert not logged_in(browser)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_token_about_to_expire_is_refreshed_before_it_does(flavour: str, start_hub, sim: TenantSimulator) -> None:
    # Every token is "about to expire" when the margin exceeds the tenant's token lifetime.
    hub = start_hub(flavour, extra=f"c.{'Agave' if flavour == 'agave' else 'Tapis'}OAuthenticator.refresh_margin = 10**6")
    browser, _ = login(hub, "JDoe", "pw-jdoe")
    before = auth_state(hub, "jdoe")
    issued = sim.tokens_issued("JDoe")
    time.sleep(1.2)  # past auth_refresh_age
    assert logged_in(browser)
    after = auth_state(hub, "jdoe")
    assert sim.tokens_issued("JDoe") > issued
    assert after["access_token"] != before["access_token"]
    assert after["refresh_token"] != before["refresh_token"]  # the tenant rotates refresh tokens
    files = hub.workdir / "tokens" / "sim" / "jdoe"
    name = ".agpy" if flavour == "agave" else "tapis.json"
    assert after["access_token"] in (files / name).read_text()  # files follow every refresh


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_token_expired_at_the_tenant_is_refreshed(flavour: str, start_hub, sim: TenantSimulator) -> None:
    hub = start_hub(flavour)
    browser, _ = login(hub, "JDoe", "pw-jdoe")
    before = auth_state(hub, "jdoe")
    sim.expire_access_tokens("JDoe")
    time.sleep(1.2)
    assert logged_in(browser)
    assert auth_state(hub, "jdoe")["access_token"] != before["access_token"]


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_revoked_refresh_token_forces_a_new_login(flavour: str, start_hub, sim: TenantSimulator) -> None:
    hub = start_hub(flavour)
    browser, _ = login(hub, "JDoe", "pw-jdoe")
    assert logged_in(browser)
    sim.revoke_refresh_tokens("JDoe")
    sim.expire_access_tokens("JDoe")
    time.sleep(1.2)
    response = browser.get("/hub/home")
    assert response.status_code == 302 and "/hub/login" in response.headers["location"]
    browser, _ = login(hub, "JDoe", "pw-jdoe")  # and a new login works
    assert logged_in(browser)


def test_username_that_could_escape_a_path_is_refused(start_hub) -> None:
    hub = start_hub("agave")
    browser, response = login(hub, "../evil", "pw-evil")
    assert response.status_code == 403
    assert not logged_in(browser)
    assert not (hub.workdir / "tokens" / "evil").exists() and not (hub.workdir / "evil").exists()


# --- TAS -------------------------------------------------------------------------------



@pytest.fixture
def tas_hub(start_hub, sim: TenantSimulator) -> HubProcess:
    sim.tas_mode = "up"
    yield start_hub("agave", extra=tas_config(sim))
    sim.tas_mode = "up"


def progress_events(hub: HubProcess, name: str) -> list[dict]:
    """The spawn's progress events, as the spawn page receives them (until ready or failed)."""
    headers = {"Authorization": f"token {hub.admin_token}"}
    deadline = time.monotonic() + 20
    while True:
        with httpx.stream("GET", f"{hub.url}/hub/api/users/{name}/server/progress", headers=headers, timeout=30) as stream:
            if stream.status_code != 400 or time.monotonic() > deadline:  # 400: not pending yet
                return [json.loads(line[5:]) for line in stream.iter_lines() if line.startswith("data:")]
        time.sleep(0.2)


def spawn_and_read_page(hub: HubProcess, browser: httpx.Client, name: str) -> str:
    """Ask for a server as the user does (the spawn page), follow the progress events the page
    shows, then read the page again: "ready", or the text the user sees about the failure."""
    browser.get(f"/hub/spawn/{name}")
    events = progress_events(hub, name)
    if events and events[-1].get("ready"):
        return "ready"
    message = events[-1].get("message", "") if events else ""
    return message + "\n" + browser.get(f"/hub/spawn-pending/{name}").text


def test_tas_identity_is_applied(tas_hub: HubProcess) -> None:
    browser, _ = login(tas_hub, "JDoe", "pw-jdoe")
    assert spawn_and_read_page(tas_hub, browser, "jdoe") == "ready"
    record = json.loads((tas_hub.workdir / "spawned-jdoe.json").read_text())
    assert record == {"NB_UID": "5001", "NB_GID": "6001", "TAS_HOMEDIRECTORY": "05/12345/jdoe", "JUPYTERHUB_USER": "jdoe"}
    files = tas_hub.workdir / "tokens" / "sim" / "jdoe"
    for path in [files, *files.iterdir()]:
        info = path.stat()
        assert (info.st_uid, info.st_gid) == (5001, 6001), path
        assert stat.S_IMODE(info.st_mode) == (0o700 if path.is_dir() else 0o600), path
    assert TAS_ROLE[1] not in tas_hub.log_text()


def test_tas_down_refuses_the_spawn_with_a_message(tas_hub: HubProcess, sim: TenantSimulator) -> None:
    browser, _ = login(tas_hub, "JDoe", "pw-jdoe")
    sim.tas_mode = "down"
    page = spawn_and_read_page(tas_hub, browser, "jdoe")
    assert page.startswith("Spawn failed: TAS, the TACC Accounting System, is unavailable right now")  # live, on the page
    assert "TAS, the TACC Accounting System, is unavailable right now" in page.split("\n", 1)[1]  # and after a reload
    assert not (tas_hub.workdir / "spawned-jdoe.json").exists()


def test_tas_too_slow_refuses_within_the_timeout(tas_hub: HubProcess, sim: TenantSimulator) -> None:
    browser, _ = login(tas_hub, "JDoe", "pw-jdoe")
    sim.tas_mode, sim.tas_delay = "slow", 30
    started = time.monotonic()
    page = spawn_and_read_page(tas_hub, browser, "jdoe")
    assert "is unavailable right now" in page
    assert time.monotonic() - started < 15  # bounded by tas_timeout, not by TAS


def test_tas_without_uid_refuses_the_spawn(tas_hub: HubProcess) -> None:
    browser, _ = login(tas_hub, "nouid", "pw-nouid")
    page = spawn_and_read_page(tas_hub, browser, "nouid")
    assert "has no uid or gid for your account" in page
    assert not (tas_hub.workdir / "spawned-nouid.json").exists()
