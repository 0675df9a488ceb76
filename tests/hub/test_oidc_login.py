"""The generic OpenID Connect path against a real third-party provider (npm oidc-provider),
not against our simulator: discovery, login, username, refresh."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from hub.flows import oidc_config
from hub.harness import HubProcess
from oidc.harness import OIDCProvider, complete_oidc_login

pytestmark = pytest.mark.hub

CLIENT_ID = "jupyterhub-oidc"
CLIENT_SECRET = "oidcSecret-1234567890"


@pytest.fixture
def oidc_hub(tmp_path: Path):
    hub = HubProcess(tmp_path, "")
    callback = f"{hub.url}/hub/oauth_callback"
    with OIDCProvider(CLIENT_ID, CLIENT_SECRET, [callback], access_ttl=30, require_pkce=True) as provider:
        hub.config = oidc_config(hub, provider.issuer, CLIENT_ID, CLIENT_SECRET,
                                 'c.TenantOIDCAuthenticator.username_case_insensitive = True  # "Alice" is "alice" at this provider\n')
        with hub:
            yield hub, provider


def oidc_login(hub: HubProcess, username: str, password: str = "secret") -> tuple[httpx.Client, httpx.Response, str]:
    browser = hub.browser()
    authorize = browser.get("/hub/oauth_login").headers["location"]
    with httpx.Client(timeout=30) as idp:
        callback = complete_oidc_login(idp, authorize, username, password)
    return browser, browser.get(callback), authorize


def test_oidc_login_through_discovery(oidc_hub) -> None:
    hub, provider = oidc_hub
    browser, response, authorize = oidc_login(hub, "Alice")
    assert authorize.startswith(provider.issuer + "/")  # the endpoint came from discovery, not a guess
    assert parse_qs(urlparse(authorize).query)["code_challenge_method"] == ["S256"]
    assert response.status_code == 302, response.text
    assert browser.get("/hub/home").status_code == 200
    model = hub.api("GET", "/users/alice").json()  # preferred_username, normalised
    assert model["name"] == "alice"
    assert model["auth_state"]["refresh_token"]
    token_file = hub.workdir / "tokens" / "example" / "alice" / "token.json"
    assert model["auth_state"]["access_token"] in token_file.read_text()


def test_oidc_access_token_is_refreshed(oidc_hub) -> None:
    hub, _ = oidc_hub
    browser, _, _ = oidc_login(hub, "bob")
    first = hub.api("GET", "/users/bob").json()["auth_state"]["access_token"]
    time.sleep(1.2)  # past auth_refresh_age; 30 s tokens are within the 300 s refresh margin: refreshed early
    assert browser.get("/hub/home").status_code == 200
    assert hub.api("GET", "/users/bob").json()["auth_state"]["access_token"] != first


def test_oidc_wrong_state_is_rejected(oidc_hub) -> None:
    hub, _ = oidc_hub
    browser = hub.browser()
    authorize = browser.get("/hub/oauth_login").headers["location"]
    with httpx.Client(timeout=30) as idp:
        callback = complete_oidc_login(idp, authorize, "mallory")
    response = browser.get(callback.replace("state=", "state=x"))
    assert response.status_code == 400
    assert browser.get("/hub/home").status_code == 302
