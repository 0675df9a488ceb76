"""OpenID Connect done fully, against a second, independent provider (npm oauth2-mock-server, whose
claims and keys a test can set): the ID token is validated (signature with key rotation, iss, aud,
exp, nonce, sub), accounts are keyed on issuer + sub, a missing username claim is a clear page, and
a provider behind a private CA works when the hub is given that CA."""

from __future__ import annotations

import ssl
import time
from pathlib import Path

import httpx
import pytest

from hub.flows import oidc_config
from hub.harness import HubProcess
from oidc_mock.harness import MockOIDCProvider, complete_mock_login
from sim.tls import server_tls

pytestmark = pytest.mark.hub

CLIENT_ID = "hub-oidc-client"
CLIENT_SECRET = "oidc-S3CR3T-frobozz"


def hub_config(hub: HubProcess, provider: MockOIDCProvider, extra: str = "") -> str:
    return oidc_config(hub, provider.issuer, CLIENT_ID, CLIENT_SECRET, "c.TenantOIDCAuthenticator.keep_fresh_interval = 0\n" + extra)


@pytest.fixture(scope="module")
def provider():
    with MockOIDCProvider(access_ttl=600) as op:
        yield op


@pytest.fixture
def hub(tmp_path: Path, provider: MockOIDCProvider):
    provider.reset()
    hub = HubProcess(tmp_path, "")
    hub.config = hub_config(hub, provider)
    with hub:
        yield hub
    provider.reset()


def mock_login(hub: HubProcess, verify: bool | ssl.SSLContext = True) -> tuple[httpx.Client, httpx.Response]:
    browser = hub.browser()
    authorize = browser.get("/hub/oauth_login").headers["location"]
    with httpx.Client(timeout=30, verify=verify) as idp:
        callback = complete_mock_login(idp, authorize)
    return browser, browser.get(callback)


def test_good_login_is_keyed_on_issuer_and_sub(hub: HubProcess, provider: MockOIDCProvider) -> None:
    provider.login_as("dana", "sub-dana")
    browser, response = mock_login(hub)
    assert response.status_code == 302, response.text[-500:]
    assert browser.get("/hub/home").status_code == 200
    state = hub.api("GET", "/users/dana").json()["auth_state"]
    assert (state["issuer"], state["subject"]) == (provider.issuer, "sub-dana")
    assert CLIENT_SECRET not in hub.log_text()
    provider.clear_requests()
    browser.get("/hub/logout")
    assert ("POST", "/revoke") in [(m, p) for m, p, _ in provider.requests()]  # the refresh token is revoked at logout
    assert hub.api("GET", "/users/dana").json()["auth_state"]["refresh_token"] is None


REFUSALS = {
    "iss": {"set": {"iss": "https://evil.example"}},
    "aud": {"set": {"aud": "someone-else"}},
    "exp": {"set": {"exp": 1_000_000_000, "iat": 999_999_000}},
    "nonce": {"set": {"nonce": "not-this-login"}},
    "nonce missing": {"remove": ["nonce"]},
    "sub": {"set": {"sub": "sub-somebody-else"}},  # the ID token's sub differs from userinfo's
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_id_tokens_failing_a_check_are_refused_with_a_clear_page(case: str, hub: HubProcess, provider: MockOIDCProvider) -> None:
    provider.login_as("erin", "sub-erin")
    provider.id_token_claims(**REFUSALS[case])
    browser, response = mock_login(hub)
    check = case.split()[0]
    assert response.status_code == 403, response.text[-500:]
    assert f"failed the &#39;{check}&#39; check" in response.text or f"failed the '{check}' check" in response.text
    assert browser.get("/hub/home").status_code == 302  # not logged in
    assert f"the {check} check failed" in hub.log_text()  # the log says which check


def test_a_bad_signature_is_refused(hub: HubProcess, provider: MockOIDCProvider) -> None:
    provider.login_as("frank", "sub-frank")
    provider.sign_with_unpublished_key(True)
    browser, response = mock_login(hub)
    assert response.status_code == 403 and "signature" in response.text
    assert "the signature check failed" in hub.log_text()


def test_a_key_rotation_at_the_provider_is_followed(hub: HubProcess, provider: MockOIDCProvider) -> None:
    provider.login_as("gina", "sub-gina")
    assert mock_login(hub)[1].status_code == 302
    provider.clear_requests()
    provider.rotate_keys()
    provider.login_as("hank", "sub-hank")
    browser, response = mock_login(hub)
    assert response.status_code == 302, response.text[-500:]
    assert any(path.endswith("/jwks") for _, path, _ in provider.requests())  # fetched again for the new key id


def test_a_missing_username_claim_names_the_claim(hub: HubProcess, provider: MockOIDCProvider) -> None:
    provider.login_as(None, "sub-nameless")
    browser, response = mock_login(hub)
    assert response.status_code == 403
    assert "did not send your username in the &#39;preferred_username&#39; claim" in response.text
    assert "Traceback" not in hub.log_text()


def test_the_configured_username_claim_is_used(tmp_path: Path, provider: MockOIDCProvider) -> None:
    provider.reset()
    hub = HubProcess(tmp_path, "")
    hub.config = hub_config(hub, provider, 'c.TenantOIDCAuthenticator.username_claim = "uname"\n')
    with hub:
        provider.login_as("ignored", "sub-ivy", {"uname": "ivy"})
        assert mock_login(hub)[1].status_code == 302
        assert hub.api("GET", "/users/ivy").status_code == 200
        provider.login_as("jack", "sub-jack")  # no "uname" claim at all
        response = mock_login(hub)[1]
        assert response.status_code == 403 and "&#39;uname&#39; claim" in response.text


def test_a_username_bound_to_another_sub_is_refused_and_a_renamed_sub_keeps_its_account(hub: HubProcess, provider: MockOIDCProvider) -> None:
    provider.login_as("carol", "sub-carol-1")
    assert mock_login(hub)[1].status_code == 302
    provider.login_as("carol", "sub-carol-2")  # another person whose preferred_username is also carol
    browser, response = mock_login(hub)
    assert response.status_code == 403 and "already belongs to another" in response.text
    assert browser.get("/hub/home").status_code == 302
    provider.login_as("carol-renamed", "sub-carol-1")  # the first carol, renamed at the provider
    browser, response = mock_login(hub)
    assert response.status_code == 302
    assert browser.get("/hub/api/user").json()["name"] == "carol"
    assert sorted(u["name"] for u in hub.api("GET", "/users").json()) == ["carol"]


def test_refreshed_id_tokens_are_validated_too(tmp_path: Path, provider: MockOIDCProvider) -> None:
    provider.reset()
    hub = HubProcess(tmp_path, "")
    hub.config = hub_config(hub, provider, "c.TenantOIDCAuthenticator.refresh_margin = 10**6\n")
    with hub:
        provider.login_as("kim", "sub-kim")
        browser, _ = mock_login(hub)
        first = hub.api("GET", "/users/kim").json()["auth_state"]["access_token"]
        time.sleep(1.2)
        assert browser.get("/hub/home").status_code == 200
        assert hub.api("GET", "/users/kim").json()["auth_state"]["access_token"] != first  # refreshed, ID token accepted
        provider.id_token_claims(set={"iss": "https://evil.example"})
        time.sleep(1.2)
        assert browser.get("/hub/home").status_code == 302  # a refreshed ID token from another issuer ends the session
        assert "the iss check failed" in hub.log_text()


def test_a_provider_behind_a_private_ca_works_over_https(tmp_path: Path) -> None:
    ca_pem, _, directory = server_tls("127.0.0.1", tmp_path / "tls")
    ca_file = tmp_path / "tenant-ca.pem"
    ca_file.write_text(ca_pem)
    with MockOIDCProvider(https_cert=directory / "cert.pem", https_key=directory / "key.pem") as provider:
        assert provider.issuer.startswith("https://")
        hub = HubProcess(tmp_path / "hub", "")
        (tmp_path / "hub").mkdir()
        hub.config = hub_config(hub, provider, f'c.TenantOIDCAuthenticator.tenant_ca_bundle = "{ca_file}"\n')
        with hub:
            provider.login_as("lena", "sub-lena")
            browser, response = mock_login(hub, verify=ssl.create_default_context(cafile=str(ca_file)))
            assert response.status_code == 302, response.text[-500:]
            assert browser.get("/hub/home").status_code == 200
            paths = [path for _, path, _ in provider.requests()]
            # discovery, token, userinfo and JWKS all went through TLS with the private CA
            assert any(p.endswith("/.well-known/openid-configuration") for p in paths)
            assert any(p.endswith("/token") for p in paths) and any(p.endswith("/jwks") for p in paths)
            assert any(p.endswith("/userinfo") for p in paths)
            browser.get("/hub/logout")
            assert any(p.endswith("/revoke") for _, p, _ in provider.requests())  # revocation over the private CA too


def test_a_provider_down_at_the_first_login_is_a_clear_page(tmp_path: Path) -> None:
    provider = MockOIDCProvider().start()
    hub = HubProcess(tmp_path, "")
    hub.config = hub_config(hub, provider, "c.TenantOIDCAuthenticator.discovery_timeout = 3\n")
    with hub:
        issuer = provider.issuer
        provider.stop()  # down before anyone logged in: discovery has not happened yet
        response = hub.browser().get("/hub/oauth_login")
        assert response.status_code == 503, response.text[-300:]
        assert "could not be reached" in response.text
        assert "Traceback" not in hub.log_text() and "discovery document failed" in hub.log_text()
        assert issuer in hub.log_text()


def test_groups_from_a_real_providers_claim_make_an_admin(tmp_path: Path, provider: MockOIDCProvider) -> None:
    """tenant_groups_claim with an OpenID Connect provider (its userinfo's claim), admin_groups as the hub's
    configuration sets them: the admin panel for a member, 403 for a user whose claim is not a list."""
    provider.reset()
    extra = ("from deployer_hub.hubconfig import ADMIN_ROLE, ADMIN_SCOPES\n"
             "c.TenantOIDCAuthenticator.groups_claim = 'groups'\nc.TenantOIDCAuthenticator.manage_groups = True\n"
             "c.JupyterHub.load_roles.append({'name': ADMIN_ROLE, 'scopes': ADMIN_SCOPES, 'groups': ['hub-admins']})\n")
    hub = HubProcess(tmp_path, "")
    hub.config = hub_config(hub, provider, extra)
    with hub:
        provider.login_as("gina", "sub-gina", extra={"groups": ["hub-admins", "physics"]})
        browser, response = mock_login(hub)
        assert response.status_code == 302, response.text[-500:]
        assert sorted(hub.api("GET", "/users/gina").json()["groups"]) == ["hub-admins", "physics"]
        assert browser.get("/hub/admin").status_code == 200
        provider.login_as("hal", "sub-hal", extra={"groups": "hub-admins"})  # a string, not a list: no groups
        browser, response = mock_login(hub)
        assert response.status_code == 302
        assert hub.api("GET", "/users/hal").json()["groups"] == [] and browser.get("/hub/admin").status_code == 403
    provider.reset()
