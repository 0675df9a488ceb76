"""Registering the hub's OAuth client with its tenant (``deployer oauth-client create``).

Agave v2: ``POST {base}/clients/v2`` with the service account as HTTP Basic and form
fields ``clientName``, ``callbackUrl``; the reply's ``result.consumerKey/consumerSecret``.
Tapis v3: a token for the service account (``POST /v3/oauth2/tokens``, password grant),
then ``POST /v3/oauth2/clients`` with ``X-Tapis-Token``; the reply's ``result.client_id/client_key``.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from deployer_hub import tenants
from deployer_hub.tenants import Flavour

from deployer.errors import DeployerError

TIMEOUT = httpx.Timeout(20.0, connect=10.0)


class RegistrationError(DeployerError):
    exit_code = 1


@dataclass(frozen=True)
class OAuthClient:
    client_id: str
    client_secret: str

    def __repr__(self) -> str:  # keep the secret out of tracebacks and logs
        return f"OAuthClient(client_id={self.client_id!r}, client_secret='***')"


def register(tenant: tenants.Tenant, name: str, callback_url: str, account: str, password: str, *, verify: bool | str = True) -> OAuthClient:
    if tenant.flavour is Flavour.AGAVE:
        return _register_agave(tenant, name, callback_url, account, password, verify)
    if tenant.flavour is Flavour.TAPIS:
        return _register_tapis(tenant, name, callback_url, account, password, verify)
    raise RegistrationError(f"tenant_type {tenant.flavour.value} has no client registration API; register the client in the provider's console")


def _post(url: str, what: str, *, verify: bool | str, **kwargs) -> dict:
    try:
        response = httpx.post(url, timeout=TIMEOUT, verify=verify, **kwargs)
    except httpx.HTTPError as exc:
        raise RegistrationError(f"{what}: could not reach {url}: {exc}") from None
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code >= 400:
        detail = (body.get("message") or body.get("error_description") or (body.get("fault") or {}).get("message")) if isinstance(body, dict) else None
        if response.status_code in (401, 403):
            hint = "check the service account name and password"
        else:
            hint = detail or response.reason_phrase
        raise RegistrationError(f"{what}: {url} answered HTTP {response.status_code}: {hint}")
    if not isinstance(body, dict):
        raise RegistrationError(f"{what}: {url} gave an answer that is not a JSON object")
    return body


def _register_agave(tenant: tenants.Tenant, name: str, callback_url: str, account: str, password: str, verify: bool | str) -> OAuthClient:
    body = _post(
        tenant.url("clients"),
        "registering the OAuth client",
        verify=verify,
        auth=(account, password),
        data={"clientName": name, "callbackUrl": callback_url, "description": "JupyterHub deployed by Deployer"},
    )
    result = body.get("result") or {}
    if not result.get("consumerKey") or not result.get("consumerSecret"):
        raise RegistrationError("registering the OAuth client: the reply has no consumerKey/consumerSecret")
    return OAuthClient(result["consumerKey"], result["consumerSecret"])


def _register_tapis(tenant: tenants.Tenant, name: str, callback_url: str, account: str, password: str, verify: bool | str) -> OAuthClient:
    token_reply = _post(
        tenant.url("token"),
        "getting a Tapis token for the service account",
        verify=verify,
        json={"username": account, "password": password, "grant_type": "password"},
    )
    token = ((token_reply.get("result") or {}).get("access_token") or {}).get("access_token")
    if not token:
        raise RegistrationError("getting a Tapis token for the service account: the reply has no access token")
    body = _post(
        tenant.url("clients"),
        "registering the OAuth client",
        verify=verify,
        headers={"X-Tapis-Token": token},
        json={"client_id": name, "callback_url": callback_url, "display_name": name, "description": "JupyterHub deployed by Deployer"},
    )
    result = body.get("result") or {}
    if not result.get("client_id") or not result.get("client_key"):
        raise RegistrationError("registering the OAuth client: the reply has no client_id/client_key")
    return OAuthClient(result["client_id"], result["client_key"])
