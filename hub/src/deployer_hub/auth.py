"""Tenant authenticators: Agave v2, Tapis v3 and any OpenID Connect provider.

All three build on oauthenticator's ``OAuthenticator`` (state cookie, PKCE, encrypted
auth state). On top of it they add what a TACC-style hub needs:

* access tokens refreshed *before* they expire (``refresh_margin``), not only after a
  request failed;
* the user's tokens written as files the notebook's libraries read, after login and
  after every refresh (:mod:`deployer_hub.tokenfiles`);
* the user's POSIX identity from TAS at spawn time, with a clear refusal (shown on the
  spawn page) when TAS is down or has no uid/gid, never a fallback to root;
* usernames normalised and restricted to characters that are safe in paths.
"""

from __future__ import annotations

import json
import time
import urllib.request
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlencode

from oauthenticator.oauth2 import OAuthenticator
from tornado import web
from tornado.httpclient import HTTPClientError
from traitlets import Bool, Float, Integer, Unicode, default

from . import paths, tenants, tokenfiles
from .tas import TASClient, TASError, TASMissingIds
from .tenants import Flavour


class UserFacingError(web.HTTPError):
    """An error whose message JupyterHub shows to the user (login or spawn page)."""

    def __init__(self, status: int, message: str):
        super().__init__(status, "%s", message)
        self.jupyterhub_message = message


#: The user image's own user and group (deployer/jupyteruser): the owner of what the hub
#: creates for a notebook whose uid/gid is neither configured nor given by TAS.
IMAGE_UID, IMAGE_GID = 1000, 100


@dataclass(frozen=True)
class Identity:
    """Who a user's notebook runs as. None means: the image's own user."""

    uid: int | None = None
    gid: int | None = None
    home_directory: str | None = None


class TenantOAuthenticator(OAuthenticator):
    """Common base of the tenant authenticators. Not used directly."""

    flavour: Flavour

    tenant_id = Unicode(config=True, help="Tenant id of this hub (e.g. designsafe); token files are kept per tenant.")
    tenant_base_url = Unicode(
        config=True,
        help="Base URL of the tenant's OAuth server. Empty: the tenant registry's URL for tenant_id.",
    )
    refresh_margin = Integer(
        300,
        config=True,
        help="Refresh an access token when it has fewer than this many seconds left, so the notebook never holds an expired one.",
    )
    token_root = Unicode(
        "",
        config=True,
        help="Directory on the shared store holding per-user token files ({token_root}/{tenant_id}/{username}/). Empty: no files.",
    )
    share_client_secret = Bool(
        False,
        config=True,
        help="Write the hub's OAuth client key and secret into the users' token files so their libraries can refresh tokens "
        "themselves (TACC's historic behaviour). Off by default: every user could then act as the hub's OAuth client.",
    )
    use_tas_uid = Bool(False, config=True, help="Run each notebook with the user's uid from TAS.")
    use_tas_gid = Bool(False, config=True, help="Run each notebook with the user's gid from TAS.")
    tas_url = Unicode(tenants.DEFAULT_TAS_BASE_URL, config=True, help="Base URL of the TAS API.")
    tas_role_account = Unicode("", config=True, help="TAS role account used by the hub.")
    tas_role_password = Unicode("", config=True, help="Password of the TAS role account (load it from a secret file).")
    tas_timeout = Float(10.0, config=True, help="Seconds to wait for TAS before refusing the spawn.")
    notebook_uid = Integer(None, allow_none=True, config=True, help="uid for notebooks when TAS is not used (None: the image's user).")
    notebook_gid = Integer(None, allow_none=True, config=True, help="gid for notebooks when TAS is not used (None: the image's group).")
    token_file_uid = Integer(IMAGE_UID, config=True, help="Owner of token files when the notebook uid is the image's own (not known here).")
    token_file_gid = Integer(IMAGE_GID, config=True, help="Group of token files when the notebook gid is the image's own.")

    @default("enable_auth_state")
    def _enable_auth_state_default(self) -> bool:
        return True  # tokens must be kept (encrypted) to refresh them and to write token files

    @default("tenant_base_url")
    def _tenant_base_url_default(self) -> str:
        tenant = tenants.lookup(self.tenant_id, self.flavour) if self.tenant_id else None
        if tenant is None:
            raise ValueError(f"{type(self).__name__}.tenant_base_url is required: {self.tenant_id!r} is not a standard {self.flavour.value} tenant")
        return tenant.base_url

    @default("login_service")
    def _login_service_default(self) -> str:
        return self.tenant_id or "your tenant"

    # --- usernames --------------------------------------------------------------------

    def normalize_username(self, username: str) -> str:
        return paths.normalize(super().normalize_username(username))

    def validate_username(self, username: str) -> bool:
        try:
            paths.safe_component(username)
        except paths.UnsafeName as exc:
            self.log.warning("Refusing username: %s", exc)
            return False
        return super().validate_username(username)

    # --- tokens -----------------------------------------------------------------------

    async def get_token_info(self, handler: Any, params: dict) -> dict:
        try:
            return await super().get_token_info(handler, params)
        except HTTPClientError as exc:
            raise self._token_error(exc) from None

    def _token_error(self, exc: HTTPClientError) -> web.HTTPError:
        if exc.code in (400, 401, 403):
            return UserFacingError(403, f"{self.login_service} refused the login (HTTP {exc.code}). If this persists, the hub's OAuth client may be misconfigured.")
        return UserFacingError(502, f"{self.login_service} could not be reached to complete the login ({exc}). Please try again.")

    def build_auth_state_dict(self, token_info: dict, user_info: dict) -> dict:
        state = super().build_auth_state_dict(token_info, user_info)
        # The tenant's own spelling of the name: TAS and the tenant's APIs know the user by it.
        state["tenant_username"] = self.user_info_to_username(user_info)
        state["expires_at"] = _expires_at(token_info)
        state["issued_at"] = int(time.time())
        return state

    def _expiring(self, auth_state: dict) -> bool:
        expires_at = auth_state.get("expires_at")
        return expires_at is not None and expires_at - time.time() < self.refresh_margin

    async def refresh_user(self, user: Any, handler: Any = None, **kwargs: Any) -> Any:
        """Refresh before expiry; a refused refresh token means a new login (False)."""
        auth_state = await user.get_auth_state() if self.enable_auth_state else None
        if auth_state and auth_state.get("refresh_token") and self._expiring(auth_state):
            self.log.info("Access token of %s expires soon; refreshing it", user.name)
            try:
                token_info = await self.get_token_info(handler, self.build_refresh_token_request_params(auth_state["refresh_token"]))
            except Exception as exc:  # revoked or expired refresh token, or the server is down
                self.log.info("Refreshing the token of %s failed (%s); a new login is needed", user.name, exc)
                return False
            if not token_info.get("refresh_token"):  # servers may keep the refresh token unchanged
                token_info["refresh_token"] = auth_state["refresh_token"]
            try:
                return await self._token_to_auth_model(token_info)
            except Exception as exc:
                self.log.warning("A fresh token of %s did not work (%s); a new login is needed", user.name, exc)
                return False
        return await super().refresh_user(user, handler, **kwargs)

    async def update_auth_model(self, auth_model: dict) -> dict:
        """After every login and refresh: refuse unsafe names, keep the token files in step."""
        try:
            paths.safe_component(auth_model["name"])
        except paths.UnsafeName:
            self.log.warning("Refusing login of %r: not a safe username", auth_model["name"])
            raise UserFacingError(403, "Your username cannot be used on this hub (only a-z, 0-9 and . _ @ + - are allowed). Please contact support.") from None
        if self.token_root:
            try:
                # Refreshes reuse the identity of the last lookup: TAS is asked at login and at
                # every spawn, not on every token refresh (a slow TAS would stall every page).
                identity = self._identities.get(auth_model["name"]) or await self.resolve_identity(
                    _tenant_name(auth_model["auth_state"], auth_model["name"]), auth_model["name"]
                )
            except TASError as exc:
                # Login still works; the spawn will retry TAS and show the user why it cannot start.
                self.log.warning("Token files of %s not written at login: %s", auth_model["name"], exc)
            else:
                self.write_token_files(auth_model["name"], auth_model["auth_state"], identity)
        return auth_model

    def token_files(self, username: str, auth_state: dict) -> dict[str, bytes]:
        client = (self.client_id, self.client_secret) if self.share_client_secret else None
        return tokenfiles.render(self.flavour, self.tenant_id, self.tenant_base_url, username, auth_state, client)

    def write_token_files(self, username: str, auth_state: dict, identity: Identity) -> None:
        uid = identity.uid if identity.uid is not None else self.token_file_uid
        gid = identity.gid if identity.gid is not None else self.token_file_gid
        directory = tokenfiles.user_dir(self.token_root, self.tenant_id, username)
        tokenfiles.write(directory, self.token_files(username, auth_state), uid, gid)
        self.log.info("Token files of %s written to %s", username, directory)

    # --- identity and spawning --------------------------------------------------------

    _identities: dict[str, Identity]

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._identities = {}  # hub name -> identity of the last successful TAS lookup

    @property
    def uses_tas(self) -> bool:
        return self.use_tas_uid or self.use_tas_gid

    def _tas(self) -> TASClient:
        ca = self.http_request_kwargs.get("ca_certs")
        return TASClient(self.tas_url, self.tas_role_account, self.tas_role_password, timeout=self.tas_timeout, ca_certs=ca)

    async def resolve_identity(self, tenant_username: str, hub_name: str) -> Identity:
        """TAS uid/gid/home when TAS is on, else the configured ids. Raises TASError."""
        if not self.uses_tas:
            return Identity(self.notebook_uid, self.notebook_gid)
        username = tenant_username
        tas_user = await self._tas().lookup(username)
        uid = tas_user.uid if self.use_tas_uid else self.notebook_uid
        gid = tas_user.gid if self.use_tas_gid else self.notebook_gid
        missing = [name for name, flag, value in (("uid", self.use_tas_uid, tas_user.uid), ("gid", self.use_tas_gid, tas_user.gid)) if flag and value is None]
        if missing:
            raise TASMissingIds(
                f"TAS has no {' or '.join(missing)} for {username!r}",
                f"TAS, the TACC Accounting System, has no {' or '.join(missing)} for your account {username!r}, so your server "
                "cannot start with your identity. Please contact support.",
            )
        identity = Identity(uid, gid, tas_user.home_directory)
        self._identities[hub_name] = identity
        return identity

    async def pre_spawn_start(self, user: Any, spawner: Any) -> None:
        auth_state = await user.get_auth_state()
        try:
            identity = await self.resolve_identity(_tenant_name(auth_state, user.name), user.name)
        except TASError as exc:
            self.log.error("Not starting %s's server: %s", user.name, exc)
            raise UserFacingError(503, exc.user_message) from None
        if self.token_root and auth_state:
            self.write_token_files(user.name, auth_state, identity)
        apply = getattr(spawner, "apply_identity", None)
        if apply is not None:  # the Deployer spawner runs the container as this identity
            apply(identity)
        env = dict(spawner.environment)
        if identity.uid is not None:
            env["NB_UID"] = str(identity.uid)
        if identity.gid is not None:
            env["NB_GID"] = str(identity.gid)
        if identity.home_directory:
            env["TAS_HOMEDIRECTORY"] = identity.home_directory
        spawner.environment = env
        spawner.log.debug("Identity of %s: %s", user.name, asdict(identity))


def _tenant_name(auth_state: dict | None, hub_name: str) -> str:
    return (auth_state or {}).get("tenant_username") or hub_name


def _expires_at(token_info: dict) -> int | None:
    """Absolute expiry (epoch seconds) from ``expires_at`` or ``expires_in``."""
    if isinstance(token_info.get("expires_at"), (int, float)):
        return int(token_info["expires_at"])
    if token_info.get("expires_in") is not None:
        return int(time.time()) + int(token_info["expires_in"])
    return None


class AgaveOAuthenticator(TenantOAuthenticator):
    """Agave v2 tenants (WSO2 gateway): ``/authorize``, ``/token``, ``/profiles/v2/me``."""

    flavour = Flavour.AGAVE

    @default("authorize_url")
    def _authorize_url_default(self) -> str:
        return tenants.endpoint_url(self.flavour, self.tenant_base_url, "authorize")

    @default("token_url")
    def _token_url_default(self) -> str:
        return tenants.endpoint_url(self.flavour, self.tenant_base_url, "token")

    @default("userdata_url")
    def _userdata_url_default(self) -> str:
        return tenants.endpoint_url(self.flavour, self.tenant_base_url, "userinfo")

    @default("scope")
    def _scope_default(self) -> list[str]:
        return ["PRODUCTION"]

    @default("username_claim")
    def _username_claim_default(self):
        return lambda info: (info.get("result") or {}).get("username")


class TapisOAuthenticator(AgaveOAuthenticator):
    """Tapis v3 tenants: client credentials as HTTP Basic, tokens in a ``result`` envelope,
    the user's token sent as ``X-Tapis-Token``."""

    flavour = Flavour.TAPIS

    @default("basic_auth")
    def _basic_auth_default(self) -> bool:
        return True  # Tapis takes client_id:client_key only as HTTP Basic

    @default("scope")
    def _scope_default(self) -> list[str]:
        return []

    async def get_token_info(self, handler: Any, params: dict) -> dict:
        try:
            reply = await self.httpfetch(
                self.token_url,
                "fetching a Tapis token",
                method="POST",
                headers=self.build_token_info_request_headers(),
                body=urlencode(params).encode(),
                validate_cert=self.validate_server_cert,
            )
        except HTTPClientError as exc:
            raise self._token_error(exc) from None
        result = (reply or {}).get("result") or {}
        access = result.get("access_token") or {}
        refresh = result.get("refresh_token") or {}
        if not access.get("access_token"):
            raise UserFacingError(502, f"{self.login_service} answered without an access token. Please try again.")
        return {
            "access_token": access["access_token"],
            "token_type": "Bearer",
            "expires_in": access.get("expires_in"),
            "expires_at_iso": access.get("expires_at"),
            "refresh_token": refresh.get("refresh_token"),
            "refresh_expires_at_iso": refresh.get("expires_at"),
        }

    def build_userdata_request_headers(self, access_token: str, token_type: str) -> dict:
        return {"Accept": "application/json", "User-Agent": "JupyterHub", "X-Tapis-Token": access_token}


class TenantOIDCAuthenticator(TenantOAuthenticator):
    """Any standard OpenID Connect provider, configured from its discovery document.

    ``tenant_base_url`` is the provider's issuer; the endpoints come from
    ``{issuer}/.well-known/openid-configuration``, fetched once at start-up.
    """

    flavour = Flavour.OIDC

    discovery_timeout = Float(10.0, config=True, help="Seconds to wait for the provider's discovery document.")

    @default("tenant_base_url")
    def _tenant_base_url_default(self) -> str:
        raise ValueError("TenantOIDCAuthenticator.tenant_base_url (the provider's issuer URL) is required")

    @default("username_claim")
    def _username_claim_default(self) -> str:
        return "preferred_username"

    @default("scope")
    def _scope_default(self) -> list[str]:
        return ["openid", "profile", "email", "offline_access"]

    @default("authorize_url")
    def _authorize_url_default(self) -> str:
        return self._discovered("authorization_endpoint")

    @default("token_url")
    def _token_url_default(self) -> str:
        return self._discovered("token_endpoint")

    @default("userdata_url")
    def _userdata_url_default(self) -> str:
        return self._discovered("userinfo_endpoint")

    _discovery: dict | None = None

    def _discovered(self, key: str) -> str:
        if self._discovery is None:
            issuer = self.tenant_base_url.rstrip("/")
            url = issuer + tenants.OIDC_DISCOVERY_PATH
            try:
                with urllib.request.urlopen(url, timeout=self.discovery_timeout) as response:  # noqa: S310 - configured https URL
                    document = json.load(response)
            except (OSError, ValueError) as exc:
                raise RuntimeError(f"could not read the OpenID Connect discovery document at {url}: {exc}") from None
            if str(document.get("issuer", "")).rstrip("/") != issuer:
                raise RuntimeError(f"the discovery document at {url} names issuer {document.get('issuer')!r}, not {issuer!r}")
            self._discovery = document
        value = self._discovery.get(key)
        if not value:
            raise RuntimeError(f"the OpenID Connect provider {self.tenant_base_url} publishes no {key}")
        return value
