"""Tenant authenticators: Agave v2, Tapis v3 and any OpenID Connect provider.

All three build on oauthenticator's ``OAuthenticator`` (state cookie, PKCE, encrypted
auth state). On top of it they add what a TACC-style hub needs:

* a token's issue time and absolute expiry recorded once, when the tenant issues it
  (:mod:`deployer_hub.tokenlife`), and the token refreshed while it still has
  ``refresh_margin`` left: on page and API requests, and in the background for users
  whose server runs;
* one refresh in flight per user (:mod:`deployer_hub.singleflight`): tenants that rotate
  refresh tokens accept each one once;
* usernames never merged: a name the hub would have to change is refused, and each hub
  name is bound to one account of the tenant (:mod:`deployer_hub.identities`);
* the user's tokens written as files the notebook's libraries read; a failure to write
  them is logged with the path, shown to the user, and retried, never a failed login;
* the user's POSIX identity from TAS at login (in the background) and at spawn, never on
  the page path, with a clear refusal when TAS is down or its record is unusable;
* every failure of the tenant's services a clear page (:mod:`deployer_hub.errors`).
"""

from __future__ import annotations

import asyncio
import copy
import html
import json
import ssl
import time
import urllib.request
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from oauthenticator.oauth2 import OAuthenticator, OAuthLoginHandler, OAuthLogoutHandler, _deserialize_state
from tornado import web
from tornado.httpclient import HTTPClientError, HTTPRequest
from traitlets import Bool, Float, Integer, List, Unicode, default

from . import groups, identities, oidc, paths, tenants, tokenfiles, tokenlife
from .errors import ReplyError, UserFacingError, describe, is_refusal, is_transient
from .settings import IMAGE_GID, IMAGE_UID
from .singleflight import SingleFlight
from .tas import DEFAULT_MIN_ID, TASClient, TASError, TASMissingIds
from .tenants import Flavour

__all__ = ["AgaveOAuthenticator", "TapisOAuthenticator", "TenantOIDCAuthenticator", "UserFacingError", "Identity", "page_notice"]


TOKENS_UNAVAILABLE = ("Your API tokens could not be placed in your notebook right now (~/.agave is not up to date). "
                      "The hub keeps trying; if this persists, please contact support.")


@dataclass(frozen=True)
class Identity:
    """Who a user's notebook runs as. None means: the image's own user."""

    uid: int | None = None
    gid: int | None = None
    home_directory: str | None = None
    #: The user's own id from notebook_uid_range, and their directories not yet re-owned to it (the spawner does, once).
    reown: bool = False


def page_notice(user: Any) -> str:
    """``JupyterHub.template_vars["announcement"]``: what this user must know now (HTML, escaped)."""
    authenticator = getattr(user, "authenticator", None)
    notice = getattr(authenticator, "notice_for", None)
    return notice(user.name) if user is not None and notice else ""


class TenantOAuthenticator(OAuthenticator):
    """Common base of the tenant authenticators. Not used directly."""

    flavour: Flavour

    tenant_id = Unicode(config=True, help="Tenant id of this hub (e.g. designsafe); token files are kept per tenant.")
    tenant_base_url = Unicode(
        config=True,
        help="Base URL of the tenant's OAuth server. Empty: the tenant registry's URL for tenant_id.",
    )
    tenant_ca_bundle = Unicode(
        "",
        config=True,
        help="PEM file of extra CA certificates trusted (besides the system's) for every call to the tenant and TAS.",
    )
    tenant_timeout = Float(20.0, config=True, help="Seconds to wait for each call to the tenant (token, userinfo, keys).")
    refresh_margin = Integer(
        300,
        config=True,
        help="Refresh an access token when it has fewer than this many seconds left, so the notebook never holds an expired one.",
    )
    refresh_wait_timeout = Float(30.0, config=True, help="Seconds a request waits for another request's refresh of the same user.")
    keep_fresh_interval = Float(
        60.0,
        config=True,
        help="Seconds between checks of the tokens of users whose server runs (refreshed then if within refresh_margin). 0: off.",
    )
    keep_fresh_concurrency = Integer(
        8, config=True,
        help="Users whose tokens the keeper checks and refreshes at once (one slow tenant answer holds one of them, not the round).",
    )
    username_case_insensitive = Bool(
        False,
        config=True,
        help="The tenant treats usernames case-insensitively: fold ASCII upper case (Alice is alice). "
        "Off: a username not already lower case is refused, never merged with another account.",
    )
    identity_db = Unicode(
        "jupyterhub_identities.sqlite",
        config=True,
        help="SQLite file binding hub usernames to tenant accounts and keeping the last TAS identity (relative: to the hub's directory).",
    )
    token_root = Unicode(
        "",
        config=True,
        help="Directory on the shared store holding per-user token files ({token_root}/{tenant_id}/{username}/). Empty: no files.",
    )
    notebook_ca_bundle = Unicode(
        "",
        config=True,
        help="Path, inside notebooks, of the CA bundle trusting the tenant; written into the token files as 'verify'. Empty: verify: true.",
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
    tas_min_id = Integer(DEFAULT_MIN_ID, config=True, help="Smallest uid/gid accepted from TAS (0 is never accepted).")
    notebook_uid = Integer(None, allow_none=True, config=True, help="uid for notebooks when TAS is not used (None: the image's user).")
    notebook_gid = Integer(None, allow_none=True, config=True, help="gid for notebooks when TAS is not used (None: the image's group).")
    notebook_uid_range = List(
        Integer(), config=True,
        help="[first, last]: without TAS, each user runs as their own uid, with a gid of the same number, given from this "
        "range at their first login or start and kept in the identity database (empty: notebook_uid/gid for everyone).",
    )
    token_file_uid = Integer(IMAGE_UID, config=True, help="Owner of token files when the notebook uid is the image's own (not known here).")
    token_file_gid = Integer(IMAGE_GID, config=True, help="Group of token files when the notebook gid is the image's own.")
    groups_claim = Unicode(
        "", config=True,
        help="The key of the tenant's user profile (OIDC: the claim) listing the user's groups; with manage_groups, they "
        "become the user's JupyterHub groups at each login (admin_groups, profiles and projects by group).",
    )

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

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._flights = SingleFlight(wait_timeout=self.refresh_wait_timeout)
        self._store: identities.IdentityStore | None = None
        self._token_problems: dict[str, float] = {}  # hub name -> since when its token files could not be written
        self._pending_lookups: dict[str, dict] = {}  # hub name -> newest auth state, while TAS is asked in the background
        self._tasks: set[asyncio.Task] = set()
        self._keeper: asyncio.Task | None = None
        bundle = self.tenant_ca_bundle or self.http_request_kwargs.get("ca_certs")
        self._ssl_context: ssl.SSLContext | None = None
        if bundle:
            # The system's CAs *and* the tenant's: tornado's ca_certs would replace the system's.
            self._ssl_context = ssl.create_default_context()
            self._ssl_context.load_verify_locations(cafile=bundle)
            kwargs = {k: v for k, v in self.http_request_kwargs.items() if k != "ca_certs"}
            self.http_request_kwargs = {**kwargs, "ssl_options": self._ssl_context}
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass  # not in the hub (e.g. a config check): started by the first request instead
        else:
            self._start_keeper()

    # --- the identity store -----------------------------------------------------------

    @property
    def store(self) -> identities.IdentityStore:
        if self._store is None:
            self._store = identities.IdentityStore(self.identity_db)
        return self._store

    # --- calls to the tenant ----------------------------------------------------------

    async def _fetch_json(self, url: str, **kwargs: Any) -> Any:
        """One call to the tenant with the tenant's CA and a bounded time; the answer as JSON.

        Raises HTTPClientError, OSError (refused, DNS, TLS) or ReplyError; logs nothing (callers do, once)."""
        options = {"connect_timeout": self.tenant_timeout, "request_timeout": self.tenant_timeout, **self.http_request_kwargs, **kwargs}
        response = await self.http_client.fetch(HTTPRequest(url, **options))
        try:
            return json.loads(response.body or b"null")
        except ValueError:
            raise ReplyError("the answer is not JSON") from None

    def _failure(self, exc: BaseException, what: str, url: str = "") -> UserFacingError:
        """The page for a failed call to the tenant; the cause logged once."""
        if isinstance(exc, UserFacingError):
            return exc
        status, message, detail = describe(exc, self.login_service)
        self.log.error("%s failed%s: %s", what, f" ({_without_query(url)})" if url else "", detail)
        return UserFacingError(status, message)

    async def get_token_info(self, handler: Any, params: dict) -> dict:
        """POST to the token endpoint; the reply checked and its lifetime stamped once."""
        try:
            reply = await self._fetch_json(self.token_url, method="POST", headers=self.build_token_info_request_headers(),
                                           body=urlencode(params).encode())
        except HTTPClientError as exc:
            if is_refusal(exc):
                self.log.warning("%s refused a token request (HTTP %s, grant %s)", self.login_service, exc.code, params.get("grant_type"))
                raise UserFacingError(403, f"{self.login_service} refused the login (HTTP {exc.code}). If this persists, "
                                           "the hub's OAuth client may be misconfigured.") from exc
            raise
        token_info = self._token_reply(reply)
        return tokenlife.stamp(token_info)

    def _token_reply(self, reply: Any) -> dict:
        """The token reply as an RFC 6749 dict (Agave and OIDC send one already)."""
        if not isinstance(reply, dict):
            raise ReplyError("the token reply is not a JSON object")
        if not isinstance(reply.get("access_token"), str) or not reply["access_token"]:
            raise ReplyError("the token reply has no access token")
        if reply.get("refresh_token") is not None and not isinstance(reply["refresh_token"], str):
            raise ReplyError("the refresh token is not text")
        reply.setdefault("token_type", "Bearer")
        return reply

    async def token_to_user(self, token_info: dict) -> dict:
        """The user's profile from the userinfo endpoint (a JSON object, else ReplyError)."""
        token_type = str(token_info.get("token_type") or "Bearer")
        profile = await self._fetch_json(self.userdata_url, method="GET",
                                         headers=self.build_userdata_request_headers(token_info["access_token"], token_type))
        if not isinstance(profile, dict):
            raise ReplyError("the user profile is not a JSON object")
        return profile

    async def authenticate(self, handler: Any, data: Any = None, **kwargs: Any) -> dict:
        """Login: code -> tokens -> profile -> hub name; every failure a clear page."""
        try:
            token_info = await self.get_token_info(handler, self.build_access_tokens_request_params(handler, data))
            await self.check_token_reply(handler, token_info)
            return await self._token_to_auth_model(token_info)
        except web.HTTPError as exc:
            if isinstance(exc, UserFacingError):
                raise
            raise self._failure(exc, "Login") from None
        except Exception as exc:
            raise self._failure(exc, "Login") from None

    async def check_token_reply(self, handler: Any, token_info: dict) -> None:
        """Hook for flavour-specific checks of a login's token reply (the OIDC ID token)."""

    # --- groups, and calls with the user's own token ------------------------------------

    def profile_claims(self, user_info: dict) -> dict:
        """The part of the profile reply that describes the user (flavour-specific)."""
        return user_info

    async def get_user_groups(self, auth_state: dict) -> set[str]:
        if not self.groups_claim:
            return set()
        user_info = (auth_state or {}).get(self.user_auth_state_key)
        claims = self.profile_claims(user_info) if isinstance(user_info, dict) else {}
        return groups.from_claim(claims.get(self.groups_claim) if isinstance(claims, dict) else None, self.log, self.groups_claim)

    async def fetch_with_token(self, url: str, access_token: str) -> Any:
        """GET a tenant API as the user (project lists): the tenant's CAs and timeout; the answer as JSON."""
        headers = {"Authorization": f"Bearer {access_token}", **self.build_userdata_request_headers(access_token, "Bearer")}
        return await self._fetch_json(url, method="GET", headers=headers)

    # --- usernames --------------------------------------------------------------------

    def claimed_username(self, user_info: dict) -> str:
        """The tenant's own spelling of the username in its profile reply (flavour-specific)."""
        raise NotImplementedError

    def subject(self, user_info: dict, hub_name: str) -> tuple[str, str]:
        """(issuer, subject) of the account: what a hub name is bound to."""
        return self.tenant_base_url.rstrip("/"), hub_name

    def user_info_to_username(self, user_info: dict) -> str:
        raw = self.claimed_username(user_info)
        try:
            return paths.canonical_username(raw, case_insensitive=self.username_case_insensitive)
        except paths.NotCanonical:
            self.log.warning("Refusing login: %s", paths.NotCanonical(f"username {raw!r} is not in the hub's canonical form"))
            raise UserFacingError(
                403, f"Your {self.login_service} username {raw!r} cannot be used on this hub as it is: hub usernames are lower case "
                "and without spaces or special characters, and this hub does not treat differently written names as the same "
                "account. Please contact support.") from None
        except paths.UnsafeName:
            self.log.warning("Refusing login of %r: not a safe username", raw)
            raise UserFacingError(403, "Your username cannot be used on this hub (only a-z, 0-9 and . _ @ + - are allowed). "
                                       "Please contact support.") from None

    def normalize_username(self, username: str) -> str:
        """No normalisation that could merge accounts: ASCII case only, and only when declared."""
        return username.lower() if self.username_case_insensitive and username.isascii() else username

    def validate_username(self, username: str) -> bool:
        try:
            paths.safe_component(username)
        except paths.UnsafeName as exc:
            self.log.warning("Refusing username: %s", exc)
            return False
        return super().validate_username(username)

    def build_auth_state_dict(self, token_info: dict, user_info: dict) -> dict:
        state = super().build_auth_state_dict(token_info, user_info)
        issued_at, expires_at = tokenlife.times(token_info)
        # The tenant's own spelling of the name: TAS and the tenant's APIs know the user by it.
        state["tenant_username"] = self.claimed_username(user_info)
        state["issued_at"], state["expires_at"] = issued_at, expires_at
        return state

    async def update_auth_model(self, auth_model: dict) -> dict:
        """At login: bind the name to its account, then deliver the tokens (TAS in the background)."""
        name, state = auth_model["name"], auth_model["auth_state"]
        issuer, subject = self.subject(state.get(self.user_auth_state_key) or {}, name)
        try:
            self.store.bind(name, issuer, subject)
        except identities.AccountConflict as exc:
            self.log.warning("Refusing login: %s", exc)
            raise UserFacingError(403, f"The username {name!r} on this hub already belongs to another {self.login_service} account, "
                                       "so you cannot be logged in as it. Please contact support.") from None
        state["issuer"], state["subject"] = issuer, subject
        self._deliver_tokens(name, state)
        if self.uses_tas and self.token_root:
            self._lookup_in_background(name, _tenant_name(state, name), state)
        return auth_model

    # --- refresh ------------------------------------------------------------------------

    def _expiring(self, auth_state: dict) -> bool:
        expires_at = auth_state.get("expires_at")
        return isinstance(expires_at, (int, float)) and expires_at - time.time() < self.refresh_margin

    async def refresh_user(self, user: Any, handler: Any = None, **kwargs: Any) -> Any:
        """True (still good), an updated auth model (refreshed), or False (a new login is needed).

        Refreshes while the token still has ``refresh_margin`` left; otherwise asks the tenant
        whether the token still works (revocation) and refreshes if not. A tenant that cannot
        be asked right now does not log anyone out."""
        self._start_keeper()
        auth_state = await user.get_auth_state()
        if not auth_state or not auth_state.get("access_token"):
            return False
        if self._expiring(auth_state):
            return await self._refresh(user.name, auth_state)
        try:
            await self.token_to_user({"access_token": auth_state["access_token"], "token_type": "Bearer"})
        except Exception as exc:
            if isinstance(exc, HTTPClientError) and 400 <= exc.code < 500:
                self.log.info("The access token of %s no longer works (HTTP %s); refreshing it", user.name, exc.code)
                return await self._refresh(user.name, auth_state)
            self.log.warning("Could not check the token of %s with %s (%s); keeping the session", user.name, self.login_service,
                             describe(exc, self.login_service)[2])
            return True
        if user.name in self._token_problems:
            self._deliver_tokens(user.name, auth_state)  # retry what failed before
        return True

    async def _refresh(self, name: str, auth_state: dict) -> Any:
        refresh_token = auth_state.get("refresh_token")
        if not refresh_token:
            expired = (auth_state.get("expires_at") or 0) <= time.time()
            return False if expired else True

        async def work() -> Any:
            params = self.build_refresh_token_request_params(refresh_token)
            try:
                token_info = await self.get_token_info(None, params)
            except Exception as exc:
                if is_refusal(exc):
                    self.log.info("%s refused the refresh token of %s; a new login is needed", self.login_service, name)
                    return False
                if is_transient(exc):
                    self.log.warning("Refreshing the token of %s failed (%s); trying again later", name, describe(exc, self.login_service)[2])
                    return (auth_state.get("expires_at") or 0) > time.time()  # keep a session whose token still works
                self.log.warning("Refreshing the token of %s failed: %s; a new login is needed", name, describe(exc, self.login_service)[2])
                return False
            if not token_info.get("refresh_token"):  # servers may keep the refresh token unchanged
                token_info["refresh_token"] = refresh_token
            try:
                state = await self._refreshed_state(auth_state, token_info)
            except Exception as exc:
                self.log.warning("The refreshed token of %s was refused: %s; a new login is needed", name, exc)
                return False
            self.log.info("Refreshed the access token of %s (valid until %s)", name, state.get("expires_at"))
            if name in self._pending_lookups:
                self._pending_lookups[name] = state
            self._deliver_tokens(name, state)
            return {"name": name, "auth_state": state}

        try:
            result = await self._flights.run(name, refresh_token, work)
        except asyncio.TimeoutError:
            self.log.warning("Waited %.0f s for another refresh of %s; keeping the session", self.refresh_wait_timeout, name)
            return True
        return copy.deepcopy(result) if isinstance(result, dict) else result

    async def _refreshed_state(self, old: dict, token_info: dict) -> dict:
        """The new auth state after a refresh: new tokens and times, the same account."""
        issued_at, expires_at = tokenlife.times(token_info)
        state = dict(old)
        state.update(
            access_token=token_info["access_token"],
            refresh_token=token_info.get("refresh_token"),
            id_token=token_info.get("id_token") or old.get("id_token"),
            token_response=token_info,
            issued_at=issued_at,
            expires_at=expires_at,
        )
        return state

    # --- keeping running notebooks' tokens fresh ----------------------------------------

    def _start_keeper(self) -> None:
        if self._keeper is None and self.keep_fresh_interval > 0 and self.token_root:
            self._keeper = asyncio.get_running_loop().create_task(self._keep_fresh())

    async def _keep_fresh(self) -> None:
        """Refresh the tokens of users whose server runs, so a notebook left alone keeps working tokens:
        only users with a running server, a few at a time (a slow tenant holds a few refreshes, not the round)."""
        while True:
            await asyncio.sleep(self.keep_fresh_interval)
            users = getattr(self.parent, "users", None)
            active = [u for u in (list(users.values()) if users is not None else []) if getattr(u, "active", False)]
            limit = asyncio.Semaphore(max(1, self.keep_fresh_concurrency))
            await asyncio.gather(*(self._keep_user_fresh(user, limit) for user in active))

    async def _keep_user_fresh(self, user: Any, limit: asyncio.Semaphore) -> None:
        async with limit:
            try:
                state = await user.get_auth_state()
                if not state or not self._expiring(state):
                    return
                result = await self._refresh(user.name, state)
                if isinstance(result, dict):
                    await user.save_auth_state(result["auth_state"])
                elif result is False:
                    self.log.warning("The tokens in the notebook of %s will expire: %s refused the refresh; the user must log in again",
                                     user.name, self.login_service)
            except Exception:
                self.log.exception("Keeping the tokens of %s fresh failed", getattr(user, "name", "?"))

    # --- token files ----------------------------------------------------------------------

    def token_files(self, username: str, auth_state: dict) -> dict[str, bytes]:
        client = (self.client_id, self.client_secret) if self.share_client_secret else None
        verify: bool | str = self.notebook_ca_bundle or True
        return tokenfiles.render(self.flavour, self.tenant_id, self.tenant_base_url, username, auth_state, client, verify=verify)

    def write_token_files(self, username: str, auth_state: dict, identity: Identity) -> None:
        uid = identity.uid if identity.uid is not None else self.token_file_uid
        gid = identity.gid if identity.gid is not None else self.token_file_gid
        directory = tokenfiles.user_dir(self.token_root, self.tenant_id, username)
        tokenfiles.write(directory, self.token_files(username, auth_state), uid, gid)
        self.log.info("Token files of %s written to %s", username, directory)

    def _deliver_tokens(self, name: str, auth_state: dict, identity: Identity | None = None) -> bool:
        """Write the token files if the owner is known; a failure is logged, shown and retried later."""
        if not self.token_root:
            return True
        identity = identity or self.known_identity(name)
        if identity is None:
            return False  # TAS not asked yet: written when it answers, and at spawn
        try:
            self.write_token_files(name, auth_state, identity)
        except (OSError, paths.UnsafeName) as exc:
            first = name not in self._token_problems
            self._token_problems.setdefault(name, time.time())
            path = getattr(exc, "filename", None) or f"{self.token_root}/{self.tenant_id}/{name}"
            (self.log.error if first else self.log.debug)(
                "Token files of %s could not be written to %s: %s; retrying at the next refresh and at spawn", name, path,
                getattr(exc, "strerror", None) or exc)
            return False
        if self._token_problems.pop(name, None) is not None:
            self.log.info("Token files of %s are in place again", name)
        return True

    def notice_for(self, name: str) -> str:
        """What the pages tell this user now (escaped HTML), e.g. that their tokens are not in the notebook."""
        return html.escape(TOKENS_UNAVAILABLE) if name in self._token_problems else ""

    # --- identity and spawning --------------------------------------------------------

    @property
    def uses_tas(self) -> bool:
        return self.use_tas_uid or self.use_tas_gid

    def _tas(self) -> TASClient:
        return TASClient(self.tas_url, self.tas_role_account, self.tas_role_password, timeout=self.tas_timeout,
                         ssl_context=self._ssl_context, min_id=self.tas_min_id)

    def own_identity(self, name: str) -> Identity:
        """Without TAS: the user's own id from notebook_uid_range (raises identities.NoIdLeft), else the configured ids."""
        if len(self.notebook_uid_range) == 2 and self.notebook_uid is None and self.notebook_gid is None:
            uid, reowned = self.store.user_id(name, *self.notebook_uid_range)
            return Identity(uid, uid, reown=not reowned)
        return Identity(self.notebook_uid, self.notebook_gid)

    def identity_reowned(self, name: str) -> None:
        """Called by the spawner once the user's directories belong to their own id."""
        self.store.reowned(name)

    def known_identity(self, name: str) -> Identity | None:
        """The identity to own token files now, without asking TAS (None: not known yet)."""
        if not self.uses_tas:
            try:
                return self.own_identity(name)
            except identities.NoIdLeft as exc:
                self.log.error("No uid for %s: %s (raise the end of notebook_uid_range)", name, exc)
                return None
        posix = self.store.posix(name)
        if posix is None:
            return None
        return Identity(posix.uid if self.use_tas_uid else self.notebook_uid, posix.gid if self.use_tas_gid else self.notebook_gid,
                        posix.home_directory)

    async def resolve_identity(self, tenant_username: str, hub_name: str) -> Identity:
        """TAS uid/gid/home when TAS is on, else the user's own or the configured ids. Raises TASError, NoIdLeft."""
        if not self.uses_tas:
            return self.own_identity(hub_name)
        tas_user = await self._tas().lookup(tenant_username)
        uid = tas_user.uid if self.use_tas_uid else self.notebook_uid
        gid = tas_user.gid if self.use_tas_gid else self.notebook_gid
        missing = [name for name, flag, value in (("uid", self.use_tas_uid, tas_user.uid), ("gid", self.use_tas_gid, tas_user.gid)) if flag and value is None]
        if missing:
            raise TASMissingIds(
                f"TAS has no {' or '.join(missing)} for {tenant_username!r}",
                f"TAS, the TACC Accounting System, has no {' or '.join(missing)} for your account {tenant_username!r}, so your server "
                "cannot start with your identity. Please contact support.",
            )
        self.store.set_posix(hub_name, identities.Posix(tas_user.uid, tas_user.gid, tas_user.home_directory))
        return Identity(uid, gid, tas_user.home_directory)

    def _lookup_in_background(self, name: str, tenant_username: str, auth_state: dict) -> None:
        """Ask TAS after the login page is done (bounded by tas_timeout), then write the token files."""
        self._pending_lookups[name] = auth_state

        async def lookup() -> None:
            try:
                identity = await self.resolve_identity(tenant_username, name)
            except TASError as exc:
                self.log.warning("TAS lookup of %s after login failed: %s (asked again at spawn)", name, exc)
                return
            finally:
                state = self._pending_lookups.pop(name, auth_state)
            self._deliver_tokens(name, state, identity)

        task = asyncio.get_running_loop().create_task(lookup())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def pre_spawn_start(self, user: Any, spawner: Any) -> None:
        self._start_keeper()
        auth_state = await user.get_auth_state()
        try:
            identity = await self.resolve_identity(_tenant_name(auth_state, user.name), user.name)
        except TASError as exc:
            self.log.error("Not starting %s's server: %s", user.name, exc)
            raise UserFacingError(503, exc.user_message) from None
        except identities.NoIdLeft as exc:
            self.log.error("Not starting %s's server: %s (raise the end of notebook_uid_range)", user.name, exc)
            raise UserFacingError(503, "Your server cannot start: this hub has no user id left to give you. Please contact support.") from None
        if auth_state:
            self._deliver_tokens(user.name, auth_state, identity)
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


def _without_query(url: str) -> str:
    return urlunsplit(urlsplit(url)._replace(query="", fragment=""))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


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

    def profile_claims(self, user_info: dict) -> dict:
        result = user_info.get("result")
        return result if isinstance(result, dict) else {}

    def claimed_username(self, user_info: dict) -> str:
        result = user_info.get("result")
        if not isinstance(result, dict):
            raise ReplyError("the user profile has no result object")
        username = _text(result.get("username"))
        if username is None:
            raise ReplyError("the user profile has no username")
        return username


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

    def _token_reply(self, reply: Any) -> dict:
        result = reply.get("result") if isinstance(reply, dict) else None
        if not isinstance(result, dict):
            raise ReplyError("the token reply has no result object")
        access, refresh = result.get("access_token"), result.get("refresh_token") or {}
        if not isinstance(access, dict) or not _text(access.get("access_token")):
            raise ReplyError("the token reply has no access token")
        if not isinstance(refresh, dict):
            raise ReplyError("the refresh token is not an object")
        return {
            "access_token": access["access_token"],
            "token_type": "Bearer",
            "expires_in": access.get("expires_in"),
            "expires_at_iso": access.get("expires_at"),
            "refresh_token": _text(refresh.get("refresh_token")),
            "refresh_expires_at_iso": refresh.get("expires_at"),
        }

    def build_userdata_request_headers(self, access_token: str, token_type: str) -> dict:
        return {"Accept": "application/json", "User-Agent": "JupyterHub", "X-Tapis-Token": access_token}


class _NonceLoginHandler(OAuthLoginHandler):
    """The login redirect with an OpenID Connect ``nonce`` derived from this login's state."""

    def authorize_redirect(self, *args: Any, **kwargs: Any) -> None:
        extra = dict(kwargs.get("extra_params") or {})
        state_id = _deserialize_state(extra.get("state", "")).get("state_id", "")
        extra["nonce"] = oidc.nonce_for(self.settings["cookie_secret"], state_id)
        kwargs["extra_params"] = extra
        return super().authorize_redirect(*args, **kwargs)


class _RevokingLogoutHandler(OAuthLogoutHandler):
    """Logout also revokes the user's refresh token at the provider (RFC 7009), where it offers that."""

    async def handle_logout(self) -> None:
        await super().handle_logout()
        user = self.current_user
        if user is not None:
            await self.authenticator.revoke_tokens(user)


#: Where a login's validated ID-token claims travel inside the token reply to the checks after userinfo.
_ID_CLAIMS = "deployer_id_claims"


class TenantOIDCAuthenticator(TenantOAuthenticator):
    """Any standard OpenID Connect provider, configured from its discovery document.

    ``tenant_base_url`` is the provider's issuer; the endpoints come from
    ``{issuer}/.well-known/openid-configuration``. The ID token is validated at login and
    after every refresh (:mod:`deployer_hub.oidc`); accounts are keyed on issuer + ``sub``,
    and the username comes from ``username_claim`` (default ``preferred_username``).
    """

    flavour = Flavour.OIDC
    login_handler = _NonceLoginHandler
    logout_handler = _RevokingLogoutHandler

    discovery_timeout = Float(10.0, config=True, help="Seconds to wait for the provider's discovery document.")
    id_token_leeway = Float(30.0, config=True, help="Clock skew, in seconds, allowed when checking an ID token's exp and iat.")
    revoke_on_logout = Bool(True, config=True, help="At logout, revoke the user's refresh token at the provider's revocation_endpoint.")

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
    _keyset: oidc.KeySet | None = None

    @property
    def issuer(self) -> str:
        return self.tenant_base_url.rstrip("/")

    def _discovered(self, key: str) -> str:
        if self._discovery is None:
            url = self.issuer + tenants.OIDC_DISCOVERY_PATH
            try:
                with urllib.request.urlopen(url, timeout=self.discovery_timeout, context=self._ssl_context) as response:  # noqa: S310 - configured URL
                    document = json.load(response)
            except (OSError, ValueError) as exc:
                # Not cached: the next login asks again. The user gets a page, the log the cause.
                cause = getattr(exc, "reason", None) or exc
                raise self._failure(cause if isinstance(cause, BaseException) else exc, "Reading the OpenID Connect discovery document", url) from None
            if not isinstance(document, dict) or str(document.get("issuer", "")).rstrip("/") != self.issuer:
                found = document.get("issuer") if isinstance(document, dict) else None
                self.log.error("The discovery document at %s names issuer %r, not %r", url, found, self.issuer)
                raise UserFacingError(502, f"{self.login_service} is not configured as this hub expects (its discovery document names "
                                           "another issuer). Please contact support.")
            self._discovery = document
        value = self._discovery.get(key)
        if not value:
            raise RuntimeError(f"the OpenID Connect provider {self.tenant_base_url} publishes no {key}")
        return value

    @property
    def keyset(self) -> oidc.KeySet:
        if self._keyset is None:
            jwks_uri = self._discovered("jwks_uri")
            self._keyset = oidc.KeySet(lambda: self._fetch_json(jwks_uri))
        return self._keyset

    async def _id_claims(self, token_info: dict, *, nonce: str | None, subject: str | None) -> dict:
        try:
            return await oidc.validate(token_info.get("id_token"), self.keyset, issuer=self.issuer, client_id=self.client_id,
                                       nonce=nonce, leeway=self.id_token_leeway, subject=subject)
        except oidc.IDTokenError as exc:
            self.log.warning("ID token from %s refused: the %s check failed (%s)", self.issuer, exc.check, exc.detail)
            raise UserFacingError(403, f"The sign-in from {self.login_service} could not be verified (the identity token failed "
                                       f"the '{exc.check}' check). Please try again; if this persists, contact support.") from None

    async def check_token_reply(self, handler: Any, token_info: dict) -> None:
        state_id = _deserialize_state(handler.get_state_cookie()).get("state_id", "") if handler is not None else ""
        nonce = oidc.nonce_for(handler.settings["cookie_secret"], state_id) if handler is not None else None
        claims = await self._id_claims(token_info, nonce=nonce, subject=None)
        token_info[_ID_CLAIMS] = {"iss": claims["iss"], "sub": claims["sub"]}

    async def token_to_user(self, token_info: dict) -> dict:
        profile = await super().token_to_user(token_info)
        claims = token_info.get(_ID_CLAIMS)
        if claims and profile.get("sub") != claims["sub"]:
            self.log.warning("ID token from %s refused: the sub check failed (userinfo's sub differs from the ID token's)", self.issuer)
            raise UserFacingError(403, f"The sign-in from {self.login_service} could not be verified (the identity token failed "
                                       "the 'sub' check). Please try again; if this persists, contact support.")
        return profile

    def claimed_username(self, user_info: dict) -> str:
        claim = self.username_claim if isinstance(self.username_claim, str) else "preferred_username"
        value = _text(user_info.get(claim))
        if value is None:
            self.log.warning("Login refused: %s sent no usable %r claim (oidc_username_claim)", self.issuer, claim)
            raise UserFacingError(403, f"{self.login_service} did not send your username in the '{claim}' claim, which this hub "
                                       "uses as the username (oidc_username_claim). Please contact the hub's operators.")
        return value

    def subject(self, user_info: dict, hub_name: str) -> tuple[str, str]:
        sub = _text(user_info.get("sub"))
        if sub is None:
            raise ReplyError("the user profile has no sub")
        return self.issuer, sub

    def user_info_to_username(self, user_info: dict) -> str:
        """The hub name bound to this issuer + sub if there is one (a renamed user keeps their account)."""
        _, sub = self.subject(user_info, "")
        bound = self.store.name_for(self.issuer, sub)
        if bound is not None:
            return bound
        return super().user_info_to_username(user_info)

    def build_auth_state_dict(self, token_info: dict, user_info: dict) -> dict:
        state = super().build_auth_state_dict(token_info, user_info)
        state["token_response"] = {k: v for k, v in token_info.items() if k != _ID_CLAIMS}
        return state

    async def revoke_tokens(self, user: Any) -> None:
        """Revoke the refresh token at logout (the access token in a running notebook lives until it expires)."""
        endpoint = (self._discovery or {}).get("revocation_endpoint") if self.revoke_on_logout else None
        state = await user.get_auth_state() if endpoint else None
        if not state or not state.get("refresh_token"):
            return
        body = urlencode({"token": state["refresh_token"], "token_type_hint": "refresh_token", "client_id": self.client_id,
                          **({} if self.basic_auth else {"client_secret": self.client_secret})})
        try:
            await self._fetch_json(endpoint, method="POST", headers=self.build_token_info_request_headers(), body=body.encode())
        except ReplyError:
            pass  # RFC 7009: an empty 200 is the normal answer
        except Exception as exc:
            self.log.warning("Revoking the refresh token of %s at logout failed: %s", user.name, describe(exc, self.login_service)[2])
            return
        self.log.info("Revoked the refresh token of %s at logout", user.name)
        await user.save_auth_state({**state, "refresh_token": None})

    async def _refreshed_state(self, old: dict, token_info: dict) -> dict:
        """A refreshed ID token (if any) must be valid and for the same subject (OIDC Core 12.2)."""
        if token_info.get("id_token"):
            await self._id_claims(token_info, nonce=None, subject=old.get("subject"))
        return await super()._refreshed_state(old, token_info)
