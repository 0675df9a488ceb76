"""The OIDC test harness drives a real third-party provider (panva's oidc-provider) end to end.

Authorization code + PKCE, token exchange with client_secret_basic, userinfo, refresh: what an authenticator for
"any standard OpenID Connect provider" relies on.
"""

from __future__ import annotations

import base64
import json
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from oidc.harness import OIDCLoginError, OIDCProvider, complete_oidc_login, pkce_pair

pytestmark = pytest.mark.local

CLIENT_ID = "deployer-hub"
CLIENT_SECRET = "hub-secret-0123456789"
REDIRECT_URI = "http://127.0.0.1:8000/hub/oauth_callback"


@pytest.fixture(scope="module")
def provider():
    with OIDCProvider(CLIENT_ID, CLIENT_SECRET, [REDIRECT_URI], access_ttl=120) as op:
        yield op


@pytest.fixture(scope="module")
def discovery(provider):
    resp = httpx.get(provider.discovery_url, timeout=10)
    resp.raise_for_status()
    return resp.json()


def authorize_url(discovery, challenge: str, state: str, scope: str = "openid profile email") -> str:
    query = {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT_URI,
        "scope": scope,
        "state": state,
        "nonce": "n-" + state,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    return discovery["authorization_endpoint"] + "?" + urlencode(query)


def exchange_code(discovery, code: str, verifier: str) -> httpx.Response:
    return httpx.post(
        discovery["token_endpoint"],
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI, "code_verifier": verifier},
        auth=(CLIENT_ID, CLIENT_SECRET),  # client_secret_basic
        timeout=10,
    )


def jwt_claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_discovery_document(provider, discovery):
    assert provider.issuer.startswith("http://127.0.0.1:")
    assert discovery["issuer"] == provider.issuer
    assert "S256" in discovery["code_challenge_methods_supported"]
    assert {"client_secret_basic", "client_secret_post"} <= set(discovery["token_endpoint_auth_methods_supported"])
    assert {"openid", "profile", "email", "offline_access"} <= set(discovery["scopes_supported"])
    for endpoint in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri"):
        assert discovery[endpoint].startswith(provider.issuer + "/")


def test_code_flow_with_pkce_userinfo_and_refresh(provider, discovery):
    verifier, challenge = pkce_pair()
    with httpx.Client(timeout=10) as browser:
        location = complete_oidc_login(browser, authorize_url(discovery, challenge, "st4te"), "alice")

    assert location.startswith(REDIRECT_URI + "?")
    params = parse_qs(urlsplit(location).query)
    assert params["state"] == ["st4te"]
    assert params["iss"] == [provider.issuer]  # RFC 9207 iss parameter comes with the code
    code = params["code"][0]

    resp = exchange_code(discovery, code, verifier)
    assert resp.status_code == 200, resp.text
    tokens = resp.json()
    assert tokens["token_type"].lower() == "bearer"
    assert 0 < tokens["expires_in"] <= 120
    assert tokens["refresh_token"]
    id_token = jwt_claims(tokens["id_token"])
    assert id_token["iss"] == provider.issuer
    assert id_token["aud"] == CLIENT_ID
    assert id_token["sub"] == "alice"
    assert id_token["nonce"] == "n-st4te"

    userinfo = httpx.get(
        discovery["userinfo_endpoint"], headers={"Authorization": f"Bearer {tokens['access_token']}"}, timeout=10
    )
    assert userinfo.status_code == 200, userinfo.text
    claims = userinfo.json()
    assert claims["sub"] == "alice"
    assert claims["preferred_username"] == "alice"
    assert claims["email"] == "alice@example.org"
    assert claims["name"]

    refreshed = httpx.post(
        discovery["token_endpoint"],
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        auth=(CLIENT_ID, CLIENT_SECRET),
        timeout=10,
    )
    assert refreshed.status_code == 200, refreshed.text
    new_access = refreshed.json()["access_token"]
    assert new_access != tokens["access_token"]
    again = httpx.get(discovery["userinfo_endpoint"], headers={"Authorization": f"Bearer {new_access}"}, timeout=10)
    assert again.status_code == 200, again.text
    assert again.json()["preferred_username"] == "alice"


def login_code(discovery: dict, state: str, username: str) -> tuple[str, str]:
    """Log ``username`` in with a fresh PKCE pair; return (verifier, authorization code)."""
    verifier, challenge = pkce_pair()
    with httpx.Client(timeout=10) as browser:
        location = complete_oidc_login(browser, authorize_url(discovery, challenge, state), username)
    return verifier, parse_qs(urlsplit(location).query)["code"][0]


def test_code_is_single_use_and_pkce_is_checked(discovery):
    verifier, code = login_code(discovery, "s2", "bob")

    wrong = exchange_code(discovery, code, pkce_pair()[0])
    assert wrong.status_code == 400
    assert wrong.json()["error"] == "invalid_grant"
    # the right verifier still redeems the code (a PKCE failure does not consume it), once
    assert exchange_code(discovery, code, verifier).status_code == 200
    reused = exchange_code(discovery, code, verifier)
    assert reused.status_code == 400
    assert reused.json()["error"] == "invalid_grant"


def test_client_secret_post_and_wrong_secret(discovery):
    verifier, code = login_code(discovery, "s3", "carol")
    base = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI, "code_verifier": verifier}

    bad = httpx.post(discovery["token_endpoint"], data=base, auth=(CLIENT_ID, "not-the-secret"), timeout=10)
    assert bad.status_code == 401
    assert bad.json()["error"] == "invalid_client"

    good = httpx.post(
        discovery["token_endpoint"], data={**base, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}, timeout=10
    )
    assert good.status_code == 200, good.text
    assert good.json()["refresh_token"]


def test_wrong_password_is_refused(discovery):
    _, challenge = pkce_pair()
    with httpx.Client(timeout=10) as browser:
        with pytest.raises(OIDCLoginError, match="refused"):
            complete_oidc_login(browser, authorize_url(discovery, challenge, "s4"), "mallory", password="guess")


def test_second_login_reuses_the_provider_session(discovery):
    with httpx.Client(timeout=10) as browser:
        first = complete_oidc_login(browser, authorize_url(discovery, pkce_pair()[1], "s5"), "dave")
        # the same browser: no login or consent form this time, straight back with a new code
        second = complete_oidc_login(browser, authorize_url(discovery, pkce_pair()[1], "s6"), "ignored")
    assert parse_qs(urlsplit(first).query)["state"] == ["s5"]
    assert parse_qs(urlsplit(second).query)["state"] == ["s6"]
    assert parse_qs(urlsplit(second).query)["code"] != parse_qs(urlsplit(first).query)["code"]


def test_short_access_ttl_expires_and_refresh_recovers():
    # 4 s: long enough that the *refreshed* token is still valid on a loaded machine, short enough to wait out.
    with OIDCProvider(CLIENT_ID, CLIENT_SECRET, [REDIRECT_URI], access_ttl=4) as op:
        disc = httpx.get(op.discovery_url, timeout=10).json()
        verifier, code = login_code(disc, "s7", "erin")
        tokens = exchange_code(disc, code, verifier).json()
        assert tokens["expires_in"] <= 4
        time.sleep(4.5)
        stale = httpx.get(disc["userinfo_endpoint"], headers={"Authorization": f"Bearer {tokens['access_token']}"}, timeout=10)
        assert stale.status_code == 401
        assert 'error="invalid_token"' in stale.headers["www-authenticate"]
        refreshed = httpx.post(
            disc["token_endpoint"],
            data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
            auth=(CLIENT_ID, CLIENT_SECRET),
            timeout=10,
        ).json()
        fresh = httpx.get(disc["userinfo_endpoint"], headers={"Authorization": f"Bearer {refreshed['access_token']}"}, timeout=10)
        assert fresh.status_code == 200
        assert fresh.json()["preferred_username"] == "erin"
    assert not op.running
