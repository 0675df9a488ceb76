"""The second OIDC provider harness (npm oauth2-mock-server, tests/oidc_mock) does what hub tests rely on:
discovery over HTTP and HTTPS with a private CA, the code flow with PKCE and a nonce, each control, keys,
refresh and the request log. Only httpx and PyJWT here: no JupyterHub."""

from __future__ import annotations

import base64
import hashlib
import secrets
import ssl
import time
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import jwt
import pytest

from oidc_mock.harness import MockOIDCProvider, complete_mock_login
from sim.tls import server_tls

pytestmark = pytest.mark.hub

CLIENT_ID = "hub-client"
CLIENT_SECRET = "hub-secret"
CALLBACK = "http://127.0.0.1:9/hub/oauth_callback"  # never followed


@pytest.fixture(scope="module")
def provider():
    with MockOIDCProvider() as op:
        yield op


@pytest.fixture
def op(provider: MockOIDCProvider):
    provider.reset()
    provider.login_as("alice", "sub-alice")
    provider.access_ttl = 3600
    provider.clear_requests()
    yield provider
    provider.reset()


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorize(client: httpx.Client, op: MockOIDCProvider, *, client_id: str = CLIENT_ID) -> dict:
    """/authorize with PKCE S256, state and nonce; returns the code and what was sent."""
    verifier, challenge = pkce()
    state, nonce = secrets.token_urlsafe(8), secrets.token_urlsafe(8)
    query = urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": CALLBACK, "scope": "openid profile",
        "state": state, "nonce": nonce, "code_challenge": challenge, "code_challenge_method": "S256",
    })
    location = complete_mock_login(client, f"{op.issuer}/authorize?{query}")
    assert location.startswith(CALLBACK + "?")
    params = parse_qs(urlsplit(location).query)
    assert params["state"] == [state]
    return {"code": params["code"][0], "verifier": verifier, "nonce": nonce}


def exchange(client: httpx.Client, op: MockOIDCProvider, flow: dict, **extra) -> httpx.Response:
    data = {"grant_type": "authorization_code", "code": flow["code"], "redirect_uri": CALLBACK,
            "code_verifier": flow["verifier"], **extra}
    return client.post(f"{op.issuer}/token", data=data, auth=(CLIENT_ID, CLIENT_SECRET))


def login(client: httpx.Client, op: MockOIDCProvider) -> tuple[dict, dict]:
    flow = authorize(client, op)
    resp = exchange(client, op, flow)
    assert resp.status_code == 200, resp.text
    return flow, resp.json()


def jwks(client: httpx.Client, op: MockOIDCProvider) -> jwt.PyJWKSet:
    return jwt.PyJWKSet.from_dict(client.get(op.jwks_url).json())


def verify(token: str, keys: jwt.PyJWKSet, op: MockOIDCProvider) -> dict:
    kid = jwt.get_unverified_header(token)["kid"]
    return jwt.decode(token, keys[kid], algorithms=["RS256"], audience=CLIENT_ID, issuer=op.issuer)


def claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def test_discovery_over_http_and_https_with_a_private_ca(tmp_path: Path, provider: MockOIDCProvider):
    doc = httpx.get(provider.discovery_url).json()
    assert provider.issuer.startswith("http://127.0.0.1:")
    assert doc["issuer"] == provider.issuer
    assert doc["jwks_uri"] == provider.jwks_url
    assert "S256" in doc["code_challenge_methods_supported"]

    ca_pem, _, tls_dir = server_tls("127.0.0.1", tmp_path / "tls")
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text(ca_pem)
    with MockOIDCProvider(https_cert=tls_dir / "cert.pem", https_key=tls_dir / "key.pem") as secure:
        assert secure.issuer.startswith("https://127.0.0.1:")
        with pytest.raises(httpx.ConnectError):  # the system trust store does not know the private CA
            httpx.get(secure.discovery_url)
        with httpx.Client(verify=ssl.create_default_context(cafile=str(ca_file))) as client:
            doc = client.get(secure.discovery_url).json()
            assert doc["issuer"] == secure.issuer
            assert doc["token_endpoint"].startswith(secure.issuer)
            secure.login_as("bob", "sub-bob")
            flow, tokens = login(client, secure)
            id_claims = verify(tokens["id_token"], jwks(client, secure), secure)
            assert (id_claims["sub"], id_claims["nonce"]) == ("sub-bob", flow["nonce"])


def test_code_flow_with_pkce_and_nonce(op: MockOIDCProvider):
    op.login_as("alice", "sub-alice", {"email": "alice@example.org"})
    op.access_ttl = 120
    with httpx.Client() as client:
        flow, tokens = login(client, op)
        assert tokens["expires_in"] == 120 and tokens["refresh_token"]
        id_claims = verify(tokens["id_token"], jwks(client, op), op)
        assert id_claims["aud"] == CLIENT_ID
        assert id_claims["nonce"] == flow["nonce"]
        assert (id_claims["sub"], id_claims["preferred_username"], id_claims["email"]) == ("sub-alice", "alice", "alice@example.org")
        access = claims(tokens["access_token"])
        assert access["sub"] == "sub-alice" and access["exp"] - access["iat"] == 120
        info = client.get(f"{op.issuer}/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
        assert info.json() == {"sub": "sub-alice", "preferred_username": "alice", "email": "alice@example.org"}
        assert client.get(f"{op.issuer}/userinfo").status_code == 401

        # The code is spent (with a verifier the library itself refuses it: invalid_request, "code_challenge
        # required"; without one, invalid_grant); a code issued with a challenge needs the right verifier.
        replay = exchange(client, op, flow)
        assert replay.status_code == 400 and replay.json()["error"] == "invalid_request"
        replay = client.post(f"{op.issuer}/token", data={"grant_type": "authorization_code", "code": flow["code"]})
        assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
        flow = authorize(client, op)
        assert exchange(client, op, {**flow, "verifier": pkce()[0]}).status_code == 400
        flow = authorize(client, op)
        resp = client.post(f"{op.issuer}/token", data={"grant_type": "authorization_code", "code": flow["code"],
                                                         "redirect_uri": CALLBACK}, auth=(CLIENT_ID, CLIENT_SECRET))
        assert resp.json()["error"] == "invalid_grant"

        # No preferred_username at all; client_secret_post names the audience too.
        op.login_as(None, "sub-anon")
        flow = authorize(client, op)
        resp = client.post(f"{op.issuer}/token", data={"grant_type": "authorization_code", "code": flow["code"],
                                                         "redirect_uri": CALLBACK, "code_verifier": flow["verifier"],
                                                         "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET})
        tokens = resp.json()
        id_claims = verify(tokens["id_token"], jwks(client, op), op)
        assert id_claims["sub"] == "sub-anon" and "preferred_username" not in id_claims
        info = client.get(f"{op.issuer}/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}).json()
        assert info == {"sub": "sub-anon"}


def test_claim_overrides(op: MockOIDCProvider):
    past = int(time.time()) - 600
    cases = [
        ({"iss": "https://evil.example"}, None, lambda c: c["iss"] == "https://evil.example"),
        ({"aud": "someone-else"}, None, lambda c: c["aud"] == "someone-else"),
        ({"exp": past}, None, lambda c: c["exp"] == past),
        ({"nonce": "wrong"}, None, lambda c: c["nonce"] == "wrong"),
        ({"sub": "other"}, None, lambda c: c["sub"] == "other"),
        (None, ["nonce"], lambda c: "nonce" not in c),
    ]
    with httpx.Client() as client:
        for set_, remove, check in cases:
            op.id_token_claims(set=set_, remove=remove)
            _, tokens = login(client, op)
            assert check(claims(tokens["id_token"])), (set_, remove, claims(tokens["id_token"]))
        op.id_token_claims(set={"exp": past})
        with pytest.raises(jwt.ExpiredSignatureError):
            verify(login(client, op)[1]["id_token"], jwks(client, op), op)

        op.userinfo_claims(set={"sub": "someone-else", "groups": ["a"]}, remove=["preferred_username"])
        _, tokens = login(client, op)
        info = client.get(f"{op.issuer}/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}).json()
        assert info == {"sub": "someone-else", "groups": ["a"]}

        op.reset()
        flow, tokens = login(client, op)
        id_claims = verify(tokens["id_token"], jwks(client, op), op)
        assert (id_claims["sub"], id_claims["nonce"]) == ("sub-alice", flow["nonce"])
        info = client.get(f"{op.issuer}/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}).json()
        assert info == {"sub": "sub-alice", "preferred_username": "alice"}


def test_unpublished_key_and_rotation(op: MockOIDCProvider):
    with httpx.Client() as client:
        old_keys = jwks(client, op)
        assert [k.key_id for k in old_keys.keys] == [op.current_kid()]

        op.sign_with_unpublished_key(True)
        _, tokens = login(client, op)
        assert jwt.get_unverified_header(tokens["id_token"])["kid"] == op.current_kid()
        with pytest.raises(jwt.InvalidSignatureError):
            verify(tokens["id_token"], old_keys, op)
        op.sign_with_unpublished_key(False)
        _, tokens = login(client, op)
        verify(tokens["id_token"], old_keys, op)
        before_rotation = tokens["id_token"]

        new_kid = op.rotate_keys()
        new_keys = jwks(client, op)
        assert [k.key_id for k in new_keys.keys] == [new_kid] != [k.key_id for k in old_keys.keys]
        _, tokens = login(client, op)
        assert jwt.get_unverified_header(tokens["id_token"])["kid"] == new_kid
        verify(tokens["id_token"], new_keys, op)
        with pytest.raises(jwt.InvalidSignatureError):  # the old key, whatever the kid says
            jwt.decode(tokens["id_token"], old_keys.keys[0], algorithms=["RS256"], audience=CLIENT_ID)
        with pytest.raises(KeyError):  # tokens from before the rotation: their kid is no longer published
            verify(before_rotation, new_keys, op)


def test_refresh_grant_expiry_and_request_log(op: MockOIDCProvider):
    op.login_as("carol", "sub-carol")
    op.access_ttl = 1
    with httpx.Client() as client:
        _, tokens = login(client, op)
        op.login_as("dave", "sub-dave")  # later codes are dave's; carol's refresh token stays carol's
        bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
        assert client.get(f"{op.issuer}/userinfo", headers=bearer).status_code == 200
        time.sleep(1.2)
        expired = client.get(f"{op.issuer}/userinfo", headers=bearer)
        assert expired.status_code == 401 and expired.json()["error"] == "invalid_token"

        op.access_ttl = 60
        resp = client.post(f"{op.issuer}/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
                           auth=(CLIENT_ID, CLIENT_SECRET))
        refreshed = resp.json()
        assert resp.status_code == 200 and refreshed["expires_in"] == 60
        id_claims = verify(refreshed["id_token"], jwks(client, op), op)
        assert (id_claims["sub"], id_claims["preferred_username"]) == ("sub-carol", "carol") and "nonce" not in id_claims
        info = client.get(f"{op.issuer}/userinfo", headers={"Authorization": f"Bearer {refreshed['access_token']}"})
        assert info.json()["sub"] == "sub-carol"
        bad = client.post(f"{op.issuer}/token", data={"grant_type": "refresh_token", "refresh_token": "made-up"},
                          auth=(CLIENT_ID, CLIENT_SECRET))
        assert bad.status_code == 400 and bad.json()["error"] == "invalid_grant"

    log = op.requests()
    assert log.count(("POST", "/token", "refresh_token")) == 2
    assert log.count(("POST", "/token", "authorization_code")) == 1
    assert log.count(("GET", "/jwks", None)) == 1
    assert log.count(("GET", "/userinfo", None)) == 3
    assert log[0] == ("GET", "/authorize", None)
    op.clear_requests()
    assert op.requests() == []
