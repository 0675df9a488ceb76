"""The tenant simulator keeps the contracts of Agave v2 (WSO2), Tapis v3 and TAS that the hub is tested against."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
from collections.abc import Iterator
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import jwt
import pytest

from sim.tenant import LoginError, TenantSimulator, complete_login

pytestmark = pytest.mark.local

CLIENT_ID = "hub-client"
CLIENT_SECRET = "hub-secret-0123456789"
CALLBACK = "http://127.0.0.1:9/hub/oauth_callback"  # never followed
ROLE = ("tas-role", "role-pass")


@pytest.fixture(scope="module")
def sim() -> Iterator[TenantSimulator]:
    with TenantSimulator(tenant_id="simtenant").start() as s:
        s.add_user("alice", "alice-pw", uid=458981, gid=816877, home_directory="/home1/01234/alice", email="alice@example.org")
        s.add_user("svc", "svc-pw")
        s.add_client(CLIENT_ID, CLIENT_SECRET, CALLBACK)
        s.add_tas_role_account(*ROLE)
        yield s


@pytest.fixture
def http(sim: TenantSimulator) -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as client:
        yield client
    sim.tas_mode = "up"


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorize_url(base: str, *, client_id: str = CLIENT_ID, redirect_uri: str = CALLBACK, state: str = "st-1", **extra: str) -> str:
    query = {"client_id": client_id, "redirect_uri": redirect_uri, "response_type": "code", "state": state, **extra}
    return f"{base}?{urlencode(query)}"


def agave_authorize(sim: TenantSimulator, **kw: str) -> str:
    return authorize_url(f"{sim.agave_base_url}/authorize", scope="PRODUCTION", **kw)


def tapis_authorize(sim: TenantSimulator, **kw: str) -> str:
    return authorize_url(f"{sim.tapis_base_url}/v3/oauth2/authorize", **kw)


def code_of(location: str, state: str = "st-1") -> str:
    assert location.startswith(CALLBACK + "?")
    query = parse_qs(urlsplit(location).query)
    assert query["state"] == [state]
    return query["code"][0]


def agave_token(http: httpx.Client, sim: TenantSimulator, data: dict, auth: tuple[str, str] | None = None) -> httpx.Response:
    return http.post(f"{sim.agave_base_url}/token", data=data, auth=auth)


def agave_login(http: httpx.Client, sim: TenantSimulator, user: str = "alice", password: str = "alice-pw") -> dict:
    code = code_of(complete_login(http, agave_authorize(sim), user, password))
    reply = agave_token(http, sim, {"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK,
                                    "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET})
    assert reply.status_code == 200, reply.text
    return reply.json()


def tapis_tokens(http: httpx.Client, sim: TenantSimulator, body: dict, auth: tuple[str, str] | None = (CLIENT_ID, CLIENT_SECRET),
                 as_json: bool = True) -> httpx.Response:
    kwargs = {"json": body} if as_json else {"data": body}
    return http.post(f"{sim.tapis_base_url}/v3/oauth2/tokens", auth=auth, **kwargs)


def tapis_login(http: httpx.Client, sim: TenantSimulator, user: str = "alice", password: str = "alice-pw") -> dict:
    code = code_of(complete_login(http, tapis_authorize(sim), user, password))
    reply = tapis_tokens(http, sim, {"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK})
    assert reply.status_code == 200, reply.text
    return reply.json()["result"]


def profile(http: httpx.Client, sim: TenantSimulator, token: str) -> httpx.Response:
    return http.get(f"{sim.agave_base_url}/profiles/v2/me", headers={"Authorization": f"Bearer {token}"})


def userinfo(http: httpx.Client, sim: TenantSimulator, token: str) -> httpx.Response:
    return http.get(f"{sim.tapis_base_url}/v3/oauth2/userinfo", headers={"X-Tapis-Token": token})


# --- Agave v2 -----------------------------------------------------------------------------------


def test_agave_authorization_code_flow(http: httpx.Client, sim: TenantSimulator) -> None:
    before = sim.tokens_issued("alice")
    tokens = agave_login(http, sim)
    assert tokens["token_type"] == "bearer" and tokens["scope"] == "default" and tokens["expires_in"] == 14400
    assert re.fullmatch(r"[0-9a-f]{32}", tokens["access_token"]) and tokens["refresh_token"]
    assert sim.tokens_issued("alice") == before + 1
    reply = profile(http, sim, tokens["access_token"])
    assert reply.status_code == 200
    body = reply.json()
    assert (body["status"], body["version"]) == ("success", "2.2.27")
    assert body["result"]["username"] == "alice" and body["result"]["email"] == "alice@example.org"
    assert body["result"]["status"] == "Active"
    assert ("POST", "/agave/token") in sim.requests and ("GET", "/agave/profiles/v2/me") in sim.requests


def test_login_form_is_a_plain_form_and_wrong_password_shows_it_again(http: httpx.Client, sim: TenantSimulator) -> None:
    page = http.get(agave_authorize(sim, code_challenge="x" * 43, code_challenge_method="S256"))
    assert page.status_code == 200
    assert '<form method="post" action="/agave/authorize">' in page.text
    for name in ("client_id", "redirect_uri", "state", "code_challenge"):
        assert f'type="hidden" name="{name}"' in page.text
    assert 'name="username"' in page.text and 'name="password"' in page.text
    with pytest.raises(LoginError) as refused:
        complete_login(http, agave_authorize(sim), "alice", "wrong")
    assert refused.value.response.status_code == 401
    assert "Invalid username or password" in refused.value.response.text and 'name="password"' in refused.value.response.text


def test_agave_alias_paths_and_basic_client_auth(http: httpx.Client, sim: TenantSimulator) -> None:
    url = authorize_url(f"{sim.agave_base_url}/oauth2/authorize", scope="PRODUCTION")
    code = code_of(complete_login(http, url, "alice", "alice-pw"))
    reply = http.post(f"{sim.agave_base_url}/oauth2/token", data={"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK},
                      auth=(CLIENT_ID, CLIENT_SECRET))
    assert reply.status_code == 200 and reply.headers["cache-control"] == "no-store"


def test_agave_pkce(http: httpx.Client, sim: TenantSimulator) -> None:
    verifier, challenge = pkce_pair()
    base = {"grant_type": "authorization_code", "redirect_uri": CALLBACK}
    for sent, status in ((verifier + "x", 400), (None, 400), (verifier, 200)):
        code = code_of(complete_login(http, agave_authorize(sim, code_challenge=challenge, code_challenge_method="S256"), "alice", "alice-pw"))
        data = {**base, "code": code, **({"code_verifier": sent} if sent else {})}
        reply = agave_token(http, sim, data, auth=(CLIENT_ID, CLIENT_SECRET))
        assert reply.status_code == status, reply.text
        if status == 400:
            assert reply.json()["error"] == "invalid_grant"


def test_agave_wrong_or_missing_client_secret(http: httpx.Client, sim: TenantSimulator) -> None:
    code = code_of(complete_login(http, agave_authorize(sim), "alice", "alice-pw"))
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK}
    for extra, auth in (({"client_id": CLIENT_ID, "client_secret": "nope"}, None), ({}, (CLIENT_ID, "nope")), ({}, None)):
        reply = agave_token(http, sim, {**data, **extra}, auth=auth)
        assert reply.status_code == 401
        assert reply.json()["error"] == "invalid_client" and reply.json()["error_description"]
    # The failed attempts did not use the code up: they never got past client authentication.
    assert agave_token(http, sim, data, auth=(CLIENT_ID, CLIENT_SECRET)).status_code == 200


@pytest.mark.parametrize("flavour", ["agave", "tapis"])
def test_authorize_refuses_unknown_clients_and_unregistered_redirects(http: httpx.Client, sim: TenantSimulator, flavour: str) -> None:
    make = agave_authorize if flavour == "agave" else tapis_authorize
    for url in (make(sim, client_id="nobody"), make(sim, redirect_uri="https://evil.example.org/cb"), make(sim, redirect_uri="")):
        reply = http.get(url)
        assert reply.status_code == 400 and "location" not in reply.headers
        with pytest.raises(LoginError):
            complete_login(http, url, "alice", "alice-pw")


def test_redirect_uri_must_match_at_token_exchange(http: httpx.Client, sim: TenantSimulator) -> None:
    code = code_of(complete_login(http, agave_authorize(sim), "alice", "alice-pw"))
    reply = agave_token(http, sim, {"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK + "/other"},
                        auth=(CLIENT_ID, CLIENT_SECRET))
    assert reply.status_code == 400 and reply.json()["error"] == "invalid_grant"


def test_unsupported_response_type_goes_back_to_the_client(http: httpx.Client, sim: TenantSimulator) -> None:
    url = agave_authorize(sim).replace("response_type=code", "response_type=token")
    reply = http.get(url)
    assert reply.status_code == 302
    assert parse_qs(urlsplit(reply.headers["location"]).query) == {"error": ["unsupported_response_type"], "state": ["st-1"]}


def test_codes_are_single_use_and_expire(http: httpx.Client, sim: TenantSimulator) -> None:
    code = code_of(complete_login(http, agave_authorize(sim), "alice", "alice-pw"))
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK}
    assert agave_token(http, sim, data, auth=(CLIENT_ID, CLIENT_SECRET)).status_code == 200
    again = agave_token(http, sim, data, auth=(CLIENT_ID, CLIENT_SECRET))
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    sim.code_ttl = 0
    try:
        code = code_of(complete_login(http, agave_authorize(sim), "alice", "alice-pw"))
    finally:
        sim.code_ttl = 60
    late = agave_token(http, sim, {**data, "code": code}, auth=(CLIENT_ID, CLIENT_SECRET))
    assert late.status_code == 400 and "expired" in late.json()["error_description"]


def test_agave_refresh_rotates_and_retires_the_old_access_token(http: httpx.Client, sim: TenantSimulator) -> None:
    first = agave_login(http, sim)
    before = sim.tokens_issued("alice")
    data = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    reply = agave_token(http, sim, data, auth=(CLIENT_ID, CLIENT_SECRET))
    assert reply.status_code == 200
    second = reply.json()
    assert second["refresh_token"] != first["refresh_token"] and second["access_token"] != first["access_token"]
    assert sim.tokens_issued("alice") == before + 1
    assert profile(http, sim, second["access_token"]).status_code == 200
    assert profile(http, sim, first["access_token"]).status_code == 401
    reused = agave_token(http, sim, data, auth=(CLIENT_ID, CLIENT_SECRET))
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"


def test_revoked_refresh_token_is_invalid_grant(http: httpx.Client, sim: TenantSimulator) -> None:
    tokens = agave_login(http, sim)
    sim.revoke_refresh_tokens("alice")
    reply = agave_token(http, sim, {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}, auth=(CLIENT_ID, CLIENT_SECRET))
    assert reply.status_code == 400 and reply.json()["error"] == "invalid_grant" and reply.json()["error_description"]


def test_expired_access_token_is_refused_at_profile(http: httpx.Client, sim: TenantSimulator) -> None:
    tokens = agave_login(http, sim)
    assert profile(http, sim, tokens["access_token"]).status_code == 200
    sim.expire_access_tokens("alice")
    reply = profile(http, sim, tokens["access_token"])
    assert reply.status_code == 401
    assert reply.json()["fault"]["code"] == 900901 and reply.json()["fault"]["message"] == "Invalid Credentials"
    assert profile(http, sim, "0" * 32).status_code == 401
    assert http.get(f"{sim.agave_base_url}/profiles/v2/me").status_code == 401
    assert profile(http, sim, agave_login(http, sim)["access_token"]).status_code == 200  # new tokens are unaffected


def test_agave_password_grant_needs_the_client(http: httpx.Client, sim: TenantSimulator) -> None:
    data = {"grant_type": "password", "username": "svc", "password": "svc-pw"}
    assert agave_token(http, sim, data).status_code == 401
    assert agave_token(http, sim, {**data, "password": "bad"}, auth=(CLIENT_ID, CLIENT_SECRET)).json()["error"] == "invalid_grant"
    reply = agave_token(http, sim, {**data, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET})
    assert reply.status_code == 200 and profile(http, sim, reply.json()["access_token"]).json()["result"]["username"] == "svc"


def test_agave_client_registration_then_login(http: httpx.Client, sim: TenantSimulator) -> None:
    url = f"{sim.agave_base_url}/clients/v2"
    callback = "http://127.0.0.1:9/other/oauth_callback"
    form = {"clientName": "hub-agave-new", "callbackUrl": callback, "description": "a hub"}
    assert http.post(url, data=form, auth=("svc", "wrong")).status_code == 401
    missing = http.post(url, data={"callbackUrl": callback}, auth=("svc", "svc-pw"))
    assert missing.status_code == 400 and missing.json()["status"] == "error" and missing.json()["result"] is None
    created = http.post(url, data=form, auth=("svc", "svc-pw"))
    assert created.status_code == 201
    result = created.json()["result"]
    assert created.json()["message"] == "Client created successfully."
    assert (result["name"], result["callbackUrl"], result["tier"]) == ("hub-agave-new", callback, "Unlimited")
    assert http.post(url, data=form, auth=("svc", "svc-pw")).status_code == 400  # duplicate name for this user
    key, secret = result["consumerKey"], result["consumerSecret"]
    location = complete_login(http, agave_authorize(sim, client_id=key, redirect_uri=callback), "alice", "alice-pw")
    code = parse_qs(urlsplit(location).query)["code"][0]
    reply = agave_token(http, sim, {"grant_type": "authorization_code", "code": code, "redirect_uri": callback}, auth=(key, secret))
    assert reply.status_code == 200
    assert http.get(tapis_authorize(sim, client_id=key, redirect_uri=callback)).status_code == 400  # an Agave client only


# --- Tapis v3 -----------------------------------------------------------------------------------


def test_tapis_authorization_code_flow(http: httpx.Client, sim: TenantSimulator) -> None:
    result = tapis_login(http, sim)
    access, refresh = result["access_token"], result["refresh_token"]
    assert access["expires_in"] == 14400 and access["expires_at"].endswith("+00:00") and access["jti"]
    claims = jwt.decode(access["access_token"], sim.jwt_key, algorithms=["HS256"])
    assert claims["iss"] == f"{sim.tapis_base_url}/v3/tokens" and claims["sub"] == "alice@simtenant"
    assert (claims["tapis/token_type"], claims["tapis/username"], claims["tapis/tenant_id"]) == ("access", "alice", "simtenant")
    assert claims["tapis/delegation"] is False and claims["tapis/account_type"] == "user" and claims["jti"] == access["jti"]
    assert jwt.decode(refresh["refresh_token"], sim.jwt_key, algorithms=["HS256"])["tapis/token_type"] == "refresh"
    reply = userinfo(http, sim, access["access_token"])
    assert reply.status_code == 200
    assert reply.json()["result"]["username"] == "alice" and reply.json()["message"] == "User profile retrieved successfully."


def test_tapis_tokens_accept_form_bodies_and_pkce(http: httpx.Client, sim: TenantSimulator) -> None:
    verifier, challenge = pkce_pair()
    url = tapis_authorize(sim, code_challenge=challenge, code_challenge_method="S256")
    code = code_of(complete_login(http, url, "alice", "alice-pw"))
    bad = tapis_tokens(http, sim, {"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK, "code_verifier": "nope"}, as_json=False)
    assert bad.status_code == 400 and bad.json()["status"] == "error"
    code = code_of(complete_login(http, url, "alice", "alice-pw"))
    good = tapis_tokens(http, sim, {"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK, "code_verifier": verifier}, as_json=False)
    assert good.status_code == 200 and good.json()["message"] == "Token created successfully."


def test_tapis_client_credentials_only_as_basic(http: httpx.Client, sim: TenantSimulator) -> None:
    code = code_of(complete_login(http, tapis_authorize(sim), "alice", "alice-pw"))
    body = {"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK}
    for extra, auth in (({"client_id": CLIENT_ID, "client_key": CLIENT_SECRET}, None), ({}, (CLIENT_ID, "wrong"))):
        reply = tapis_tokens(http, sim, {**body, **extra}, auth=auth)
        assert reply.status_code == 401
        assert reply.json() == {"status": "error", "message": "Invalid client credentials", "result": None, "version": "dev", "metadata": {}}
    assert tapis_tokens(http, sim, body).status_code == 200


def test_tapis_refresh_rotation_and_revocation(http: httpx.Client, sim: TenantSimulator) -> None:
    first = tapis_login(http, sim)["refresh_token"]["refresh_token"]
    reply = tapis_tokens(http, sim, {"grant_type": "refresh_token", "refresh_token": first})
    assert reply.status_code == 200
    second = reply.json()["result"]["refresh_token"]["refresh_token"]
    assert second != first
    assert tapis_tokens(http, sim, {"grant_type": "refresh_token", "refresh_token": first}).status_code == 400
    sim.revoke_refresh_tokens()
    revoked = tapis_tokens(http, sim, {"grant_type": "refresh_token", "refresh_token": second})
    assert revoked.status_code == 400 and revoked.json()["status"] == "error" and revoked.json()["version"] == "dev"


def test_tapis_expired_refresh_token_is_refused(http: httpx.Client) -> None:
    with TenantSimulator(refresh_token_ttl=0) as short:
        short.add_user("bob", "bob-pw")
        short.add_client(CLIENT_ID, CLIENT_SECRET, CALLBACK)
        refresh = tapis_tokens(http, short, {"grant_type": "password", "username": "bob", "password": "bob-pw"}).json()
        token = refresh["result"]["refresh_token"]["refresh_token"]
        reply = tapis_tokens(http, short, {"grant_type": "refresh_token", "refresh_token": token})
        assert reply.status_code == 400 and reply.json()["status"] == "error"


def test_tapis_userinfo_wants_x_tapis_token(http: httpx.Client, sim: TenantSimulator) -> None:
    access = tapis_login(http, sim)["access_token"]["access_token"]
    bearer = http.get(f"{sim.tapis_base_url}/v3/oauth2/userinfo", headers={"Authorization": f"Bearer {access}"})
    assert bearer.status_code == 401 and bearer.json()["status"] == "error"
    sim.expire_access_tokens()
    expired = userinfo(http, sim, access)
    assert expired.status_code == 401 and expired.json()["message"] == "Invalid Tapis token"
    assert userinfo(http, sim, "not-a-jwt").status_code == 401


def test_tapis_password_grant_without_a_client(http: httpx.Client, sim: TenantSimulator) -> None:
    body = {"grant_type": "password", "username": "svc", "password": "svc-pw"}
    reply = tapis_tokens(http, sim, body, auth=None)
    assert reply.status_code == 200
    assert userinfo(http, sim, reply.json()["result"]["access_token"]["access_token"]).json()["result"]["username"] == "svc"
    assert tapis_tokens(http, sim, {**body, "password": "bad"}, auth=None).status_code == 400
    assert tapis_tokens(http, sim, body, auth=(CLIENT_ID, "wrong")).status_code == 401


def test_tapis_client_registration_then_login(http: httpx.Client, sim: TenantSimulator) -> None:
    token = tapis_tokens(http, sim, {"grant_type": "password", "username": "svc", "password": "svc-pw"}, auth=None).json()
    headers = {"X-Tapis-Token": token["result"]["access_token"]["access_token"]}
    url = f"{sim.tapis_base_url}/v3/oauth2/clients"
    callback = "http://127.0.0.1:9/tapis/oauth_callback"
    body = {"client_id": "hub-tapis-new", "callback_url": callback, "display_name": "Hub"}
    assert http.post(url, json=body).status_code == 401
    created = http.post(url, json=body, headers=headers)
    assert created.status_code == 200
    result = created.json()["result"]
    assert (result["client_id"], result["callback_url"], result["username"], result["tenant_id"]) == ("hub-tapis-new", callback, "svc", "simtenant")
    assert result["client_key"] and result["create_time"]
    assert http.post(url, json=body, headers=headers).status_code == 400  # duplicate client_id
    location = complete_login(http, tapis_authorize(sim, client_id="hub-tapis-new", redirect_uri=callback), "alice", "alice-pw")
    code = parse_qs(urlsplit(location).query)["code"][0]
    reply = tapis_tokens(http, sim, {"grant_type": "authorization_code", "code": code, "redirect_uri": callback},
                         auth=("hub-tapis-new", result["client_key"]))
    assert reply.status_code == 200


# --- TAS ----------------------------------------------------------------------------------------


def tas_get(http: httpx.Client, sim: TenantSimulator, username: str, auth: tuple[str, str] = ROLE, **kw) -> httpx.Response:
    return http.get(f"{sim.tas_base_url}/users/username/{username}", auth=auth, headers={"Accept": "application/json"}, **kw)


def test_tas_user_lookup(http: httpx.Client, sim: TenantSimulator) -> None:
    reply = tas_get(http, sim, "alice")
    assert reply.status_code == 200
    result = reply.json()["result"]
    assert (result["uid"], result["gid"], result["homeDirectory"], result["source"]) == (458981, 816877, "/home1/01234/alice", "Standard")
    assert isinstance(result["id"], int) and result["username"] == "alice"
    svc = tas_get(http, sim, "svc").json()["result"]
    assert (svc["uid"], svc["gid"], svc["homeDirectory"]) == (None, None, None)


def test_tas_unknown_user_and_bad_role_credentials(http: httpx.Client, sim: TenantSimulator) -> None:
    missing = tas_get(http, sim, "nobody")
    assert missing.status_code == 404
    assert missing.json() == {"status": "error", "message": "User not found", "result": None}
    assert tas_get(http, sim, "alice", auth=(ROLE[0], "wrong")).status_code == 401
    assert tas_get(http, sim, "alice", auth=("alice", "alice-pw")).status_code == 401  # a user is not a role account


def test_tas_down_and_slow(http: httpx.Client, sim: TenantSimulator) -> None:
    sim.tas_mode = "down"
    assert tas_get(http, sim, "alice").status_code == 503
    assert tas_get(http, sim, "nobody", auth=("x", "y")).status_code == 503
    sim.tas_mode, sim.tas_delay = "slow", 0.3
    with pytest.raises(httpx.ReadTimeout):
        tas_get(http, sim, "alice", timeout=0.1)
    # While TAS is slow, the OAuth server still answers at once.
    started = time.monotonic()
    assert http.get(agave_authorize(sim)).status_code == 200
    assert time.monotonic() - started < 0.2
    slow = tas_get(http, sim, "alice")
    assert slow.status_code == 200 and time.monotonic() - started >= 0.3
    with pytest.raises(ValueError):
        sim.tas_mode = "sideways"
