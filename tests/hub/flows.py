"""Driving a hub the way a browser does: login through the tenant simulator, then look around."""

from __future__ import annotations

import textwrap

import httpx

from hub.harness import HubProcess
from sim.tenant import TenantSimulator, complete_login

CLIENT_ID = "hub-client"
CLIENT_SECRET = "S3CR3T-client-xyzzy"
TAS_ROLE = ("jhub-role", "S3CR3T-tas-plugh")


def tas_config(sim: "TenantSimulator", *, timeout: float = 2, extra: str = "") -> str:
    """Hub config lines: the Agave authenticator with uid and gid from the simulator's TAS."""
    return f"""
c.AgaveOAuthenticator.use_tas_uid = True
c.AgaveOAuthenticator.use_tas_gid = True
c.AgaveOAuthenticator.tas_url = "{sim.tas_base_url}"
c.AgaveOAuthenticator.tas_role_account = "{TAS_ROLE[0]}"
c.AgaveOAuthenticator.tas_role_password = "{TAS_ROLE[1]}"
c.AgaveOAuthenticator.tas_timeout = {timeout}
""" + extra


def oidc_config(hub: HubProcess, issuer: str, client_id: str, client_secret: str, extra: str = "") -> str:
    """Hub config lines: the OpenID Connect authenticator against the provider at ``issuer``."""
    return textwrap.dedent(f"""
        c.JupyterHub.authenticator_class = "tenant-oidc"
        c.TenantOIDCAuthenticator.tenant_id = "example"
        c.TenantOIDCAuthenticator.tenant_base_url = "{issuer}"
        c.TenantOIDCAuthenticator.client_id = "{client_id}"
        c.TenantOIDCAuthenticator.client_secret = "{client_secret}"
        c.TenantOIDCAuthenticator.oauth_callback_url = "{hub.url}/hub/oauth_callback"
        c.TenantOIDCAuthenticator.allow_all = True
        c.TenantOIDCAuthenticator.token_root = "{hub.workdir / 'tokens'}"
        c.Authenticator.auth_refresh_age = 1
        """) + textwrap.dedent(extra)


def begin_login(browser: httpx.Client) -> str:
    response = browser.get("/hub/oauth_login")
    assert response.status_code == 302, response.text
    return response.headers["location"]


def login(hub: HubProcess, username: str, password: str) -> tuple[httpx.Client, httpx.Response]:
    browser = hub.browser()
    authorize = begin_login(browser)
    with httpx.Client(timeout=30) as idp:
        callback = complete_login(idp, authorize, username, password)
    return browser, browser.get(callback)


def logged_in(browser: httpx.Client) -> bool:
    response = browser.get("/hub/home")
    return response.status_code == 200


def auth_state(hub: HubProcess, name: str) -> dict:
    response = hub.api("GET", f"/users/{name}")
    assert response.status_code == 200, response.text
    return response.json()["auth_state"]


