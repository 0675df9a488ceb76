"""A simulator of a TACC tenant's remote services, for tests.

It serves on 127.0.0.1 what a hub talks to and what a test machine cannot reach:

* an Agave v2 tenant behind the WSO2 gateway (``{url}/agave``): ``/authorize``, ``/token``
  (also under ``/oauth2/``), ``/profiles/v2/me`` and ``/clients/v2``;
* a Tapis v3 tenant (``{url}/tapis``): ``/v3/oauth2/authorize``, ``/tokens``, ``/userinfo``, ``/clients``;
* TAS, the TACC Accounting System (``{url}/tas/api/v1``): ``/users/username/{username}``;
* a projects API (``{url}/projects/v2/mine``): the projects of the bearer token's user, per the
  contract in ``deployer_hub.projects`` (``{"projects": [{"id": ..., "name": ...}]}``).

It holds callers to the services' documented contracts (client authentication, registered
redirect URIs, single-use expiring codes, PKCE, refresh-token rotation, error bodies), so
code that passes against it has met the same rules as against the real services. Tests
steer it with the control methods: add users and clients, expire or revoke tokens, take
TAS or the projects API down or make them slow.
"""

from __future__ import annotations

import asyncio
import ssl
import base64
import datetime as dt
import hashlib
import html
import json
import secrets
import string
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode, urljoin, urlsplit, urlunsplit

import jwt
import tornado.httpserver
import tornado.netutil
import tornado.web

if TYPE_CHECKING:
    import httpx

AGAVE = "agave"
TAPIS = "tapis"
AGAVE_VERSION = "2.2.27"
TAPIS_VERSION = "dev"
TAS_MODES = ("up", "down", "slow")
#: ok: the contract; slow: answers after ``projects_delay`` seconds; garbage: 200 with a body that is not JSON; 500: a server error
PROJECTS_MODES = ("ok", "slow", "garbage", "500")
#: The OAuth parameters the login form carries from the authorize request to its submission.
OAUTH_PARAMS = ("client_id", "redirect_uri", "response_type", "scope", "state", "code_challenge", "code_challenge_method")


# --- records -------------------------------------------------------------------------------


@dataclass
class _User:
    username: str
    password: str
    uid: int | None
    gid: int | None
    home_directory: str | None
    email: str
    first_name: str
    last_name: str
    tas_id: int
    created: float
    groups: list[str] = field(default_factory=list)  # in the Agave profile and the Tapis userinfo, under "groups"


@dataclass
class _Client:
    client_id: str
    secret: str
    callback_url: str
    flavours: frozenset[str]  # which server accepts it: a client belongs to one tenant flavour
    name: str
    description: str = ""
    owner: str | None = None
    tier: str = "Unlimited"
    created: float = field(default_factory=time.time)


@dataclass
class _Code:
    flavour: str
    client_id: str
    username: str
    redirect_uri: str
    challenge: str | None
    challenge_method: str
    expires_at: float
    used: bool = False


@dataclass
class _Token:
    value: str
    flavour: str
    kind: str  # "access" or "refresh"
    username: str
    client_id: str | None  # None: a Tapis password grant made without a client
    jti: str
    expires_at: int
    issued_at: int = 0
    state: str = "active"  # "active", "rotated" (refresh token used once) or "revoked"
    pair: str | None = None  # for a refresh token: the access token issued with it


class _GrantError(Exception):
    """A token request the server refuses with HTTP 400; ``error`` is the RFC 6749 error code."""

    def __init__(self, description: str, error: str = "invalid_grant"):
        super().__init__(description)
        self.description = description
        self.error = error


class _Duplicate(Exception):
    pass


# --- the tenant's data and rules (no HTTP) ---------------------------------------------------


class _Tenant:
    """Users, clients, codes and tokens, and the rules over them.

    Thread-safe: the server's loop thread and the test thread both use it.
    """

    def __init__(self, tenant_id: str, access_ttl: int, refresh_ttl: int):
        self.tenant_id = tenant_id
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl
        self.code_ttl = 60.0
        self.tapis_issuer = ""  # known once the server has a port
        self.jwt_key = secrets.token_bytes(32)
        self.lock = threading.RLock()
        self.users: dict[str, _User] = {}
        self.clients: dict[str, _Client] = {}
        self.role_accounts: dict[str, str] = {}
        self.codes: dict[str, _Code] = {}
        self.tokens: dict[str, _Token] = {}
        self.issued: Counter[str] = Counter()
        self.refresh_grants: Counter[str] = Counter()  # refresh grants that issued new tokens, per user
        self.refused_refreshes: Counter[str] = Counter()  # refresh tokens presented again after rotation, per user
        self.expired_uses: Counter[str] = Counter()  # requests that presented an expired access token, per user
        self.projects: dict[str, list[dict[str, Any]]] = {}  # username -> the projects API's entries for them
        self._next_tas_id = 100001

    # users, clients, role accounts

    def add_user(self, username: str, password: str, **details: Any) -> None:
        with self.lock:
            old = self.users.get(username)  # re-adding keeps the TAS id: same person, new details
            tas_id = old.tas_id if old else self._take_tas_id()
            self.users[username] = _User(
                username=username,
                password=password,
                uid=details.get("uid"),
                gid=details.get("gid"),
                home_directory=details.get("home_directory"),
                email=details.get("email") or f"{username}@example.org",
                first_name=details.get("first_name") or username.capitalize(),
                last_name=details.get("last_name") or "Simulated",
                tas_id=tas_id,
                created=old.created if old else time.time(),
                groups=list(details.get("groups") or []),
            )

    def _take_tas_id(self) -> int:
        self._next_tas_id += 1
        return self._next_tas_id - 1

    def add_client(self, client: _Client) -> None:
        with self.lock:
            self.clients[client.client_id] = client

    def check_password(self, username: str, password: str) -> _User | None:
        with self.lock:
            user = self.users.get(username)
        return user if user and secrets.compare_digest(user.password.encode(), password.encode()) else None

    def client_for(self, flavour: str, client_id: str) -> _Client | None:
        with self.lock:
            client = self.clients.get(client_id)
        return client if client and flavour in client.flavours else None

    def authenticate_client(self, flavour: str, client_id: str, secret: str) -> _Client | None:
        client = self.client_for(flavour, client_id)
        return client if client and secrets.compare_digest(client.secret.encode(), secret.encode()) else None

    def register_agave_client(self, owner: str, name: str, callback_url: str, description: str, tier: str) -> _Client:
        with self.lock:
            if any(c.owner == owner and c.name == name and AGAVE in c.flavours for c in self.clients.values()):
                raise _Duplicate(name)
            client = _Client(_random_key(28), _random_key(28), callback_url, frozenset({AGAVE}), name, description, owner, tier)
            self.clients[client.client_id] = client
        return client

    def register_tapis_client(self, owner: str, client_id: str, callback_url: str, display_name: str, description: str) -> _Client:
        with self.lock:
            if client_id in self.clients:
                raise _Duplicate(client_id)
            client = _Client(client_id, _random_key(40), callback_url, frozenset({TAPIS}), display_name, description, owner)
            self.clients[client_id] = client
        return client

    def tas_role_ok(self, username: str, password: str) -> bool:
        with self.lock:
            expected = self.role_accounts.get(username)
        return expected is not None and secrets.compare_digest(expected.encode(), password.encode())

    def tas_user(self, username: str) -> _User | None:
        with self.lock:
            return self.users.get(username)

    # codes

    def new_code(self, flavour: str, client: _Client, user: _User, redirect_uri: str, challenge: str | None, method: str) -> str:
        code = secrets.token_hex(16)
        with self.lock:
            self.codes[code] = _Code(flavour, client.client_id, user.username, redirect_uri, challenge, method, time.time() + self.code_ttl)
        return code

    def redeem_code(self, flavour: str, client: _Client, code: str, redirect_uri: str | None, verifier: str | None) -> str:
        """The username the code was issued for. Any attempt by its client uses the code up."""
        if not code:
            raise _GrantError("Missing parameter: code", "invalid_request")
        with self.lock:
            record = self.codes.get(code)
            if record is None or record.flavour != flavour or record.client_id != client.client_id:
                raise _GrantError("Invalid authorization code")
            if record.used:
                raise _GrantError("Authorization code has already been used")
            record.used = True
        if record.expires_at <= time.time():
            raise _GrantError("Authorization code has expired")
        if redirect_uri != record.redirect_uri:
            raise _GrantError("redirect_uri does not match the one used in the authorization request")
        if not _pkce_ok(record.challenge, record.challenge_method, verifier):
            raise _GrantError("PKCE validation failed: code_verifier does not match the code_challenge")
        return record.username

    # tokens

    def issue(self, flavour: str, username: str, client_id: str | None) -> tuple[_Token, _Token]:
        with self.lock:
            access = self._mint(flavour, "access", username, client_id, self.access_ttl)
            refresh = self._mint(flavour, "refresh", username, client_id, self.refresh_ttl)
            refresh.pair = access.value
            self.issued[username] += 1
        return access, refresh

    def _mint(self, flavour: str, kind: str, username: str, client_id: str | None, ttl: int) -> _Token:
        jti = str(uuid.uuid4())
        expires_at = int(time.time()) + ttl
        if flavour == AGAVE:
            value = secrets.token_hex(16)  # WSO2 tokens are opaque
        else:
            claims = {
                "jti": jti,
                "iss": self.tapis_issuer,
                "sub": f"{username}@{self.tenant_id}",
                "tapis/tenant_id": self.tenant_id,
                "tapis/token_type": kind,
                "tapis/delegation": False,
                "tapis/username": username,
                "tapis/account_type": "user",
                "exp": expires_at,
            }
            value = jwt.encode(claims, self.jwt_key, algorithm="HS256")
        token = _Token(value, flavour, kind, username, client_id, jti, expires_at, issued_at=expires_at - ttl)
        self.tokens[value] = token
        return token

    def password_grant(self, flavour: str, username: str, password: str, client_id: str | None) -> tuple[_Token, _Token]:
        if not username or password is None:
            raise _GrantError("Missing parameter: username and password are required", "invalid_request")
        user = self.check_password(username, password)
        if user is None:
            raise _GrantError("Invalid username/password combination")
        return self.issue(flavour, user.username, client_id)

    def refresh(self, flavour: str, value: str, client_id: str | None) -> tuple[_Token, _Token]:
        """New tokens for a refresh token, which is rotated: it cannot be used again."""
        if not value:
            raise _GrantError("Missing parameter: refresh_token", "invalid_request")
        with self.lock:
            token = self.tokens.get(value)
            if token is None or token.flavour != flavour or token.kind != "refresh" or not self._signature_ok(token):
                raise _GrantError("Invalid refresh token")
            if token.client_id != client_id:
                raise _GrantError("Refresh token was issued to another client")
            if token.state != "active":
                if token.state == "rotated":
                    self.refused_refreshes[token.username] += 1
                raise _GrantError(f"Refresh token is {'revoked' if token.state == 'revoked' else 'no longer valid (already used)'}")
            if token.expires_at <= time.time():
                raise _GrantError("Refresh token has expired")
            token.state = "rotated"
            self.refresh_grants[token.username] += 1
            if flavour == AGAVE and token.pair in self.tokens:
                self.tokens[token.pair].state = "revoked"  # WSO2 retires the old access token on refresh
            return self.issue(flavour, token.username, client_id)

    def access_user(self, flavour: str, value: str) -> _User | None:
        """The user of a live access token of this flavour, or None."""
        with self.lock:
            token = self.tokens.get(value)
            if token is None or token.flavour != flavour or token.kind != "access" or token.state != "active":
                return None
            if token.expires_at <= time.time():
                self.expired_uses[token.username] += 1
                return None
            if not self._signature_ok(token):
                return None
            return self.users.get(token.username)

    def _signature_ok(self, token: _Token) -> bool:
        """Tapis tokens are real JWTs: check them as a Tapis service would (signature, exp, issuer)."""
        if token.flavour != TAPIS:
            return True
        try:
            jwt.decode(token.value, self.jwt_key, algorithms=["HS256"], issuer=self.tapis_issuer)
        except jwt.InvalidTokenError:
            return False
        return True

    def expire_access(self, username: str | None) -> None:
        past = int(time.time()) - 1
        with self.lock:
            for token in self.tokens.values():
                if token.kind == "access" and username in (None, token.username):
                    token.expires_at = min(token.expires_at, past)

    def revoke_refresh(self, username: str | None) -> None:
        with self.lock:
            for token in self.tokens.values():
                if token.kind == "refresh" and username in (None, token.username):
                    token.state = "revoked"


def _pkce_ok(challenge: str | None, method: str, verifier: str | None) -> bool:
    if challenge is None:
        return True  # no PKCE in the authorization request: a verifier, if any, is ignored
    if not verifier:
        return False
    if method == "S256":
        computed = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    else:
        computed = verifier
    return secrets.compare_digest(computed.encode(), challenge.encode())


def _random_key(length: int) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).isoformat()


def _with_query(url: str, **params: str | None) -> str:
    """``url`` with ``params`` (None values left out) appended to its query."""
    parts = urlsplit(url)
    extra = urlencode({k: v for k, v in params.items() if v is not None})
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit(parts._replace(query=query))


# --- HTTP handlers ----------------------------------------------------------------------------


class _Handler(tornado.web.RequestHandler):
    """Base: logs every request for tests and parses credentials and bodies."""

    #: Name under which tests may replace this handler's answers (``TenantSimulator.mangle``).
    kind = ""

    def initialize(self, sim: TenantSimulator, flavour: str = "") -> None:
        self.sim = sim
        self.tenant = sim._tenant
        self.flavour = flavour

    def prepare(self) -> None:
        # Logged before answering, so a test that has its response also sees the entry.
        self.sim.requests.append((self.request.method or "", self.request.path))

    def reply(self, status: int, body: dict[str, Any], **headers: str) -> None:
        mangle = self.sim.mangles.get(self.kind)
        if mangle is not None and status < 300:
            body = mangle(body)  # a test makes the service break its contract (any JSON value, or raw text)
            self.set_status(status)
            for name, value in headers.items():
                self.set_header(name.replace("_", "-"), value)
            self.set_header("Content-Type", "application/json")
            self.finish(body if isinstance(body, (str, bytes)) else json.dumps(body))
            return
        self.set_status(status)
        for name, value in headers.items():
            self.set_header(name.replace("_", "-"), value)
        self.finish(body)

    def basic_auth(self) -> tuple[str, str] | None:
        scheme, _, value = self.request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (ValueError, UnicodeDecodeError):  # binascii.Error is a ValueError
            return None
        username, sep, password = decoded.partition(":")
        return (username, password) if sep else None

    def form(self) -> dict[str, str]:
        return {k: v[-1].decode("utf-8", "replace") for k, v in self.request.body_arguments.items()}

    def json_body(self) -> dict[str, Any] | None:
        try:
            body = json.loads(self.request.body or b"null")
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    def is_json(self) -> bool:
        return self.request.headers.get("Content-Type", "").split(";")[0].strip().lower() == "application/json"

    def json_or_form(self) -> dict[str, str]:
        if self.is_json():
            return {k: v for k, v in (self.json_body() or {}).items() if isinstance(v, str)}
        return self.form()


class _NotFound(_Handler):
    def prepare(self) -> None:
        super().prepare()
        raise tornado.web.HTTPError(404)


class _AuthorizeHandler(_Handler):
    """The authorization endpoint of both flavours: login form, then a redirect with a code."""

    def get(self) -> None:
        self.authorize({k: self.get_query_argument(k) for k in self.request.query_arguments}, None)

    def post(self) -> None:
        form = self.form()
        self.authorize(form, (form.get("username", ""), form.get("password", "")))

    def authorize(self, params: dict[str, str], login: tuple[str, str] | None) -> None:
        client = self.tenant.client_for(self.flavour, params.get("client_id", ""))
        if client is None:
            return self.error_page("Unknown client_id: no such application is registered with this tenant.")
        redirect_uri = params.get("redirect_uri", "")
        if not redirect_uri or redirect_uri != client.callback_url:
            # Never redirect to a URI the client did not register: show the error here instead.
            return self.error_page("redirect_uri does not match the callback URL registered for this client.")
        state = params.get("state")
        if params.get("response_type") != "code":
            return self.redirect(_with_query(redirect_uri, error="unsupported_response_type", state=state))
        challenge = params.get("code_challenge") or None
        method = params.get("code_challenge_method") or "plain"  # RFC 7636: plain when not given
        if challenge and method not in ("S256", "plain"):
            return self.redirect(_with_query(redirect_uri, error="invalid_request", error_description="unsupported code_challenge_method", state=state))
        if login is None:
            return self.login_page(200, params, client)
        user = self.tenant.check_password(*login)
        if user is None:
            return self.login_page(401, params, client, error="Invalid username or password.", username=login[0])
        code = self.tenant.new_code(self.flavour, client, user, redirect_uri, challenge, method)
        self.redirect(_with_query(redirect_uri, code=code, state=state))

    def error_page(self, message: str) -> None:
        self.set_status(400)
        self.finish(_page("Authorization error", f'<p class="error" role="alert">{html.escape(message)}</p>'))

    def login_page(self, status: int, params: dict[str, str], client: _Client, *, error: str = "", username: str = "") -> None:
        hidden = "".join(
            f'<input type="hidden" name="{name}" value="{html.escape(params[name])}">' for name in OAUTH_PARAMS if params.get(name) is not None
        )
        alert = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
        body = (
            f"<h1>Sign in to {html.escape(self.tenant.tenant_id)}</h1>{alert}"
            f"<p>The application {html.escape(client.name)} asks to act on your behalf.</p>"
            f'<form method="post" action="{html.escape(self.request.path)}">{hidden}'
            f'<label>Username <input type="text" name="username" autocomplete="username" value="{html.escape(username)}"></label>'
            '<label>Password <input type="password" name="password" autocomplete="current-password"></label>'
            '<button type="submit">Sign in</button></form>'
        )
        self.set_status(status)
        self.finish(_page("Sign in", body))


def _page(title: str, body: str) -> str:
    return f'<!doctype html><html><head><meta charset="utf-8"><title>{title}</title></head><body>{body}</body></html>'


_NO_STORE = {"Cache_Control": "no-store", "Pragma": "no-cache"}  # RFC 6749 5.1: token replies are not cached


class _AgaveTokenHandler(_Handler):
    """WSO2's token endpoint: client credentials in the body or as HTTP Basic, RFC 6749 errors."""

    kind = "agave_token"

    def post(self) -> None:
        params = self.form()  # WSO2 takes only form bodies
        client = self.client(params)
        if client is None:
            return self.reply(401, {"error": "invalid_client", "error_description": "Client Authentication failed."},
                              WWW_Authenticate='Basic realm="WSO2 API Manager"')
        try:
            access, refresh = self.grant(params, client)
        except _GrantError as exc:
            return self.reply(400, {"error": exc.error, "error_description": exc.description}, **_NO_STORE)
        body = {"access_token": access.value, "refresh_token": refresh.value, "token_type": "bearer",
                "expires_in": self.tenant.access_ttl, "scope": "default"}
        self.reply(200, body, **_NO_STORE)

    def client(self, params: dict[str, str]) -> _Client | None:
        basic = self.basic_auth()
        if basic and params.get("client_id") not in (None, basic[0]):
            return None  # two different clients in one request
        client_id, secret = basic or (params.get("client_id"), params.get("client_secret"))
        if not client_id or secret is None:
            return None
        return self.tenant.authenticate_client(AGAVE, client_id, secret)

    def grant(self, params: dict[str, str], client: _Client) -> tuple[_Token, _Token]:
        grant_type = params.get("grant_type")
        if grant_type == "authorization_code":
            username = self.tenant.redeem_code(AGAVE, client, params.get("code", ""), params.get("redirect_uri"), params.get("code_verifier"))
            return self.tenant.issue(AGAVE, username, client.client_id)
        if grant_type == "refresh_token":
            return self.tenant.refresh(AGAVE, params.get("refresh_token", ""), client.client_id)
        if grant_type == "password":
            return self.tenant.password_grant(AGAVE, params.get("username", ""), params.get("password"), client.client_id)
        if not grant_type:
            raise _GrantError("Missing parameter: grant_type", "invalid_request")
        raise _GrantError(f"Unsupported grant_type value: {grant_type}", "unsupported_grant_type")


class _AgaveProfileHandler(_Handler):
    """``/profiles/v2/me``: the token's user, behind the gateway's bearer-token check."""

    kind = "agave_profile"

    def get(self) -> None:
        scheme, _, value = self.request.headers.get("Authorization", "").partition(" ")
        user = self.tenant.access_user(AGAVE, value.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            fault = {"code": 900901, "message": "Invalid Credentials",
                     "description": "Access failure for API: /profiles/v2, version: v2 status: (900901) - Invalid Credentials. "
                                    "Make sure you have given the correct access token"}
            return self.reply(401, {"fault": fault}, WWW_Authenticate='OAuth2 realm="WSO2 API Manager", error="invalid_token"')
        self.reply(200, _agave_ok("User details retrieved successfully.", {
            "username": user.username,
            "email": user.email,
            "first_name": user.first_name,
            "last_name": user.last_name,
            "full_name": f"{user.first_name} {user.last_name}",
            "uid": user.uid,
            "mobile_phone": "",
            "phone": "",
            "status": "Active",
            "create_time": time.strftime("%Y%m%d%H%M%SZ", time.gmtime(user.created)),  # LDAP generalized time
            "groups": user.groups,
        }))


def _agave_ok(message: str, result: Any) -> dict[str, Any]:
    return {"status": "success", "message": message, "version": AGAVE_VERSION, "result": result}


def _agave_error(message: str) -> dict[str, Any]:
    return {"status": "error", "message": message, "version": AGAVE_VERSION, "result": None}


class _AgaveClientsHandler(_Handler):
    """``/clients/v2``: a user (the service account) registers an OAuth client with its password."""

    def post(self) -> None:
        basic = self.basic_auth()
        user = self.tenant.check_password(*basic) if basic else None
        if user is None:
            return self.reply(401, _agave_error("Invalid username/password combination"), WWW_Authenticate='Basic realm="Agave"')
        params = self.json_or_form()
        name = params.get("clientName", "").strip()
        if not name:
            return self.reply(400, _agave_error("Please specify a valid name for this client. (clientName)"))
        try:
            client = self.tenant.register_agave_client(
                user.username, name, params.get("callbackUrl", ""), params.get("description", ""), params.get("tier") or "Unlimited"
            )
        except _Duplicate:
            return self.reply(400, _agave_error(f"An application with the name {name} already exists."))
        base = f"{self.sim.agave_base_url}"
        links = {
            "self": {"href": f"{base}/clients/v2/{quote(name)}"},
            "subscriber": {"href": f"{base}/profiles/v2/{quote(user.username)}"},
            "subscriptions": {"href": f"{base}/clients/v2/{quote(name)}/subscriptions/"},
        }
        self.reply(201, _agave_ok("Client created successfully.", {
            "name": client.name,
            "description": client.description,
            "consumerKey": client.client_id,
            "consumerSecret": client.secret,
            "callbackUrl": client.callback_url,
            "tier": client.tier,
            "_links": links,
        }))


def _tapis_ok(message: str, result: Any) -> dict[str, Any]:
    return {"status": "success", "message": message, "result": result, "version": TAPIS_VERSION, "metadata": {}}


def _tapis_error(message: str) -> dict[str, Any]:
    return {"status": "error", "message": message, "result": None, "version": TAPIS_VERSION, "metadata": {}}


class _TapisHandler(_Handler):
    def tapis_user(self) -> tuple[_User | None, str]:
        """The user of the ``X-Tapis-Token`` header (Tapis ignores ``Authorization``), or None and why."""
        value = self.request.headers.get("X-Tapis-Token", "").strip()
        if not value:
            return None, "No Tapis access token found in the request."
        user = self.tenant.access_user(TAPIS, value)
        return user, "" if user else "Invalid Tapis token"


class _TapisTokenHandler(_TapisHandler):
    """``/v3/oauth2/tokens``: JSON or form; clients authenticate only with HTTP Basic."""

    kind = "tapis_token"

    def post(self) -> None:
        params = self.json_or_form()
        grant_type = params.get("grant_type")
        basic = self.basic_auth()
        client = self.tenant.authenticate_client(TAPIS, *basic) if basic else None
        # The code and refresh grants need a client; a password grant may come without one, but not with a bad one.
        if (grant_type in ("authorization_code", "refresh_token") or basic) and client is None:
            return self.reply(401, _tapis_error("Invalid client credentials"))
        client_id = client.client_id if client else None
        try:
            if grant_type == "authorization_code":
                assert client is not None
                username = self.tenant.redeem_code(TAPIS, client, params.get("code", ""), params.get("redirect_uri"), params.get("code_verifier"))
                access, refresh = self.tenant.issue(TAPIS, username, client_id)
            elif grant_type == "refresh_token":
                access, refresh = self.tenant.refresh(TAPIS, params.get("refresh_token", ""), client_id)
            elif grant_type == "password":
                access, refresh = self.tenant.password_grant(TAPIS, params.get("username", ""), params.get("password"), client_id)
            else:
                raise _GrantError(f"Invalid grant_type: {grant_type!r}" if grant_type else "Missing required field: grant_type")
        except _GrantError as exc:
            return self.reply(400, _tapis_error(exc.description), **_NO_STORE)
        self.reply(200, _tapis_ok("Token created successfully.", {
            "access_token": self.describe(access, "access_token", self.tenant.access_ttl),
            "refresh_token": self.describe(refresh, "refresh_token", self.tenant.refresh_ttl),
        }), **_NO_STORE)

    @staticmethod
    def describe(token: _Token, key: str, ttl: int) -> dict[str, Any]:
        return {key: token.value, "expires_at": _iso(token.expires_at), "expires_in": ttl, "jti": token.jti}


class _TapisUserinfoHandler(_TapisHandler):
    kind = "tapis_userinfo"

    def get(self) -> None:
        user, why = self.tapis_user()
        if user is None:
            return self.reply(401, _tapis_error(why))
        self.reply(200, _tapis_ok("User profile retrieved successfully.", {
            "username": user.username,
            "given_name": user.first_name,
            "last_name": user.last_name,
            "email": user.email,
            "mobile_phone": "",
            "groups": user.groups,
        }))


class _TapisClientsHandler(_TapisHandler):
    """``/v3/oauth2/clients``: a user registers an OAuth client with their own token."""

    def post(self) -> None:
        user, why = self.tapis_user()
        if user is None:
            return self.reply(401, _tapis_error(why))
        body = self.json_body() if self.is_json() else None
        if body is None:
            return self.reply(400, _tapis_error("Invalid request body: a JSON object is required"))
        fields = {k: body.get(k) for k in ("client_id", "callback_url", "display_name", "description")}
        if any(v is not None and not isinstance(v, str) for v in fields.values()):
            return self.reply(400, _tapis_error("Invalid request body: client_id, callback_url, display_name and description are strings"))
        client_id = fields["client_id"] or _random_key(16)  # Tapis generates an id when none is given
        try:
            client = self.tenant.register_tapis_client(
                user.username, client_id, fields["callback_url"] or "", fields["display_name"] or client_id, fields["description"] or ""
            )
        except _Duplicate:
            return self.reply(400, _tapis_error(f"A client with client_id {client_id} already exists in tenant {self.tenant.tenant_id}."))
        self.reply(200, _tapis_ok("Client created successfully.", {
            "client_id": client.client_id,
            "client_key": client.secret,
            "callback_url": client.callback_url,
            "display_name": client.name,
            "description": client.description,
            "tenant_id": self.tenant.tenant_id,
            "username": user.username,
            "create_time": _iso(client.created),
            "last_update_time": _iso(client.created),
        }))


class _TASHandler(_Handler):
    """Every TAS request: down answers 503, slow waits (without blocking the other services)."""

    async def prepare(self) -> None:
        super().prepare()
        if self.sim.tas_mode == "down":
            self.set_status(503)
            self.finish(_page("503 Service Unavailable", "<h1>Service Unavailable</h1>"))  # what the proxy in front shows
            return
        if self.sim.tas_mode == "slow":
            await asyncio.sleep(self.sim.tas_delay)
        basic = self.basic_auth()
        if not (basic and self.tenant.tas_role_ok(*basic)):
            self.reply(401, {"status": "error", "message": "Unauthorized", "result": None}, WWW_Authenticate='Basic realm="TAS"')


class _TASUserHandler(_TASHandler):
    kind = "tas_user"

    def get(self, username: str) -> None:
        user = self.tenant.tas_user(username)
        if user is None:
            return self.reply(404, {"status": "error", "message": "User not found", "result": None})
        self.reply(200, {"status": "success", "message": None, "result": {**self._record(user), **self.sim.tas_overrides.get(username, {})}})

    @staticmethod
    def _record(user: _User) -> dict[str, Any]:
        return {
            "id": user.tas_id,
            "username": user.username,
            "firstName": user.first_name,
            "lastName": user.last_name,
            "email": user.email,
            "uid": user.uid,
            "gid": user.gid,
            "homeDirectory": user.home_directory,
            "source": "Standard",
        }


class _TASNotFound(_TASHandler):
    def get(self, *args: str) -> None:
        raise tornado.web.HTTPError(404)

    post = put = delete = get


class _ProjectsHandler(_Handler):
    """``/projects/v2/mine``: the bearer token's user's projects (an access token of either flavour),
    behind the same gateway check as the Agave profile. ``projects_mode`` makes it misbehave."""

    kind = "projects"

    async def get(self) -> None:
        scheme, _, value = self.request.headers.get("Authorization", "").partition(" ")
        token = value.strip() if scheme.lower() == "bearer" else ""
        user = (self.tenant.access_user(AGAVE, token) or self.tenant.access_user(TAPIS, token)) if token else None
        if user is None:
            fault = {"code": 900901, "message": "Invalid Credentials",
                     "description": "Access failure for API: /projects/v2, version: v2 status: (900901) - Invalid Credentials. "
                                    "Make sure you have given the correct access token"}
            return self.reply(401, {"fault": fault}, WWW_Authenticate='OAuth2 realm="WSO2 API Manager", error="invalid_token"')
        mode = self.sim.projects_mode
        if mode == "slow":
            await asyncio.sleep(self.sim.projects_delay)
        if mode == "500":
            self.set_status(500)
            return self.finish(_page("500 Internal Server Error", "<h1>Internal Server Error</h1>"))
        if mode == "garbage":
            self.set_header("Content-Type", "application/json")  # says JSON, is not
            return self.finish("<html><body>Projects are being migrated, come back later\x00</body></html>")
        with self.tenant.lock:
            entries = [dict(e) if isinstance(e, dict) else e for e in self.tenant.projects.get(user.username, [])]
        self.reply(200, {"projects": entries})


def _application(sim: TenantSimulator) -> tornado.web.Application:
    s = {"sim": sim}
    agave, tapis = {**s, "flavour": AGAVE}, {**s, "flavour": TAPIS}
    routes = [
        (r"/agave/(?:oauth2/)?authorize", _AuthorizeHandler, agave),
        (r"/agave/(?:oauth2/)?token", _AgaveTokenHandler, agave),
        (r"/agave/profiles/v2/me", _AgaveProfileHandler, agave),
        (r"/agave/clients/v2/?", _AgaveClientsHandler, agave),
        (r"/tapis/v3/oauth2/authorize", _AuthorizeHandler, tapis),
        (r"/tapis/v3/oauth2/tokens", _TapisTokenHandler, tapis),
        (r"/tapis/v3/oauth2/userinfo", _TapisUserinfoHandler, tapis),
        (r"/tapis/v3/oauth2/clients", _TapisClientsHandler, tapis),
        (r"/tas/api/v1/users/username/([^/]+)", _TASUserHandler, s),
        (r"/tas/.*", _TASNotFound, s),
        (r"/projects/v2/mine", _ProjectsHandler, s),
    ]
    return tornado.web.Application(routes, default_handler_class=_NotFound, default_handler_args=s, log_function=lambda handler: None)


# --- the simulator ----------------------------------------------------------------------------


class TenantSimulator:
    """Agave v2, Tapis v3 and TAS of one tenant, served from a background thread.

    ``with TenantSimulator().start() as sim:`` (or ``with TenantSimulator() as sim:``) stops it afterwards.
    """

    def __init__(self, *, tenant_id: str = "sim", access_token_ttl: int = 14400, refresh_token_ttl: int = 86400 * 30,
                 host: str = "127.0.0.1", ssl_context: "ssl.SSLContext | None" = None):
        # host/ssl_context: the swarm tier serves HTTPS on the Docker gateway address, so that
        # both the browser on this machine and the hub in its container reach the same URL.
        self._host = host
        self._ssl = ssl_context
        self._tenant = _Tenant(tenant_id, access_token_ttl, refresh_token_ttl)
        self.tenant_id = tenant_id
        self.requests: list[tuple[str, str]] = []
        self.tas_delay: float = 2.0
        #: handler kind -> function of the normal answer body returning what is sent instead (any JSON value or raw text)
        self.mangles: dict[str, Any] = {}
        #: TAS username -> fields replacing those of its TAS record (e.g. {"uid": 0})
        self.tas_overrides: dict[str, dict[str, Any]] = {}
        self._tas_mode = "up"
        self._projects_mode = "ok"
        self.projects_delay: float = 2.0
        self._url: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: tornado.httpserver.HTTPServer | None = None

    # URLs

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("the simulator is not started")
        return self._url

    @property
    def agave_base_url(self) -> str:
        return f"{self.url}/agave"

    @property
    def tapis_base_url(self) -> str:
        return f"{self.url}/tapis"

    @property
    def tas_base_url(self) -> str:
        return f"{self.url}/tas/api/v1"

    @property
    def projects_url(self) -> str:
        """The projects API (``project_mounts.api_url``): GET with ``Authorization: Bearer <access token>``."""
        return f"{self.url}/projects/v2/mine"

    # knobs

    @property
    def tas_mode(self) -> str:
        return self._tas_mode

    @tas_mode.setter
    def tas_mode(self, mode: str) -> None:
        if mode not in TAS_MODES:
            raise ValueError(f"tas_mode must be one of {TAS_MODES}, not {mode!r}")
        self._tas_mode = mode

    @property
    def projects_mode(self) -> str:
        return self._projects_mode

    @projects_mode.setter
    def projects_mode(self, mode: str) -> None:
        if mode not in PROJECTS_MODES:
            raise ValueError(f"projects_mode must be one of {PROJECTS_MODES}, not {mode!r}")
        self._projects_mode = mode

    @property
    def code_ttl(self) -> float:
        """Seconds an authorization code stays valid (60, as the servers do); tests may lower it."""
        return self._tenant.code_ttl

    @code_ttl.setter
    def code_ttl(self, seconds: float) -> None:
        self._tenant.code_ttl = seconds

    @property
    def jwt_key(self) -> bytes:
        """The HS256 key of the Tapis JWTs, for tests that decode them."""
        return self._tenant.jwt_key

    # control methods (thread-safe)

    def add_user(self, username: str, password: str, *, uid: int | None = None, gid: int | None = None,
                 home_directory: str | None = None, email: str | None = None,
                 first_name: str | None = None, last_name: str | None = None, groups: list[str] | None = None) -> None:
        """A tenant user, also known to TAS. Adding a username again replaces its details (its projects stay)."""
        self._tenant.add_user(username, password, uid=uid, gid=gid, home_directory=home_directory, email=email,
                              first_name=first_name, last_name=last_name, groups=groups)

    def set_groups(self, username: str, groups: Any) -> None:
        """The groups of a user (the Agave profile's and the Tapis userinfo's ``groups``) from the next request on,
        sent as given (a hostile tenant's claim may be anything)."""
        with self._tenant.lock:
            self._tenant.users[username].groups = groups

    def set_projects(self, username: str, projects: list[dict[str, Any]]) -> None:
        """The entries the projects API lists for ``username`` from the next request on, as given
        (``[{"id": "PRJ-1", "name": "..."}]``; tests may put anything there, the API sends it as is)."""
        with self._tenant.lock:
            self._tenant.projects[username] = [dict(entry) if isinstance(entry, dict) else entry for entry in projects]

    def add_client(self, client_id: str, client_secret: str, callback_url: str) -> None:
        """An OAuth client both the Agave and the Tapis server accept."""
        self._tenant.add_client(_Client(client_id, client_secret, callback_url, frozenset({AGAVE, TAPIS}), client_id))

    def add_tas_role_account(self, username: str, password: str) -> None:
        with self._tenant.lock:
            self._tenant.role_accounts[username] = password

    def expire_access_tokens(self, username: str | None = None) -> None:
        self._tenant.expire_access(username)

    def revoke_refresh_tokens(self, username: str | None = None) -> None:
        self._tenant.revoke_refresh(username)

    @property
    def access_ttl(self) -> int:
        """Lifetime of access tokens issued from now on, in seconds."""
        return self._tenant.access_ttl

    @access_ttl.setter
    def access_ttl(self, seconds: int) -> None:
        self._tenant.access_ttl = seconds

    def refresh_grants(self, username: str) -> int:
        """Refresh grants that issued new tokens to ``username``."""
        with self._tenant.lock:
            return self._tenant.refresh_grants[username]

    def refused_refreshes(self, username: str) -> int:
        """Times a rotated (already used) refresh token of ``username`` was presented again."""
        with self._tenant.lock:
            return self._tenant.refused_refreshes[username]

    def expired_uses(self, username: str) -> int:
        """Requests that presented an expired access token of ``username``."""
        with self._tenant.lock:
            return self._tenant.expired_uses[username]

    def token_times(self, value: str) -> tuple[int, int] | None:
        """(issued_at, expires_at) of a token as the tenant recorded it, or None."""
        with self._tenant.lock:
            token = self._tenant.tokens.get(value)
            return (token.issued_at, token.expires_at) if token else None

    def tokens_issued(self, username: str) -> int:
        """Access tokens issued to ``username`` so far (logins, password grants and refreshes)."""
        with self._tenant.lock:
            return self._tenant.issued[username]

    # lifecycle

    def start(self) -> TenantSimulator:
        if self._thread is not None:
            return self
        sockets = tornado.netutil.bind_sockets(0, self._host)
        scheme = "https" if self._ssl else "http"
        self._url = f"{scheme}://{self._host}:{sockets[0].getsockname()[1]}"
        self._tenant.tapis_issuer = f"{self.tapis_base_url}/v3/tokens"
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(sockets, ready, failure), name="tenant-simulator", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure or not ready.is_set():
            self._thread = None
            raise RuntimeError("the tenant simulator did not start") from (failure[0] if failure else None)
        return self

    def _run(self, sockets: list, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)

        async def serve() -> None:  # HTTPServer must be set up on the loop that runs it
            self._server = tornado.httpserver.HTTPServer(_application(self), ssl_options=self._ssl)
            self._server.add_sockets(sockets)

        try:
            loop.run_until_complete(serve())
        except BaseException as exc:  # reported to start() in the test thread
            failure.append(exc)
            ready.set()
            loop.close()
            return
        ready.set()
        loop.run_forever()
        loop.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.stop()
            try:
                await asyncio.wait_for(self._server.close_all_connections(), 2)
            except asyncio.TimeoutError:
                pass
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:  # e.g. a slow TAS answer still waiting
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=5)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> TenantSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- browser-less login ---------------------------------------------------------------------


class LoginError(Exception):
    """The login did not end in a redirect to the client; ``response`` is the last answer."""

    def __init__(self, message: str, response: httpx.Response):
        super().__init__(message)
        self.response = response


class _FormParser(HTMLParser):
    """The first form of a page: its action and hidden inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.found = False
        self.done = False
        self.action = ""
        self.hidden: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "form" and not self.found:
            self.found, self.action = True, values.get("action", "")
        elif tag == "input" and self.found and not self.done and values.get("type") == "hidden" and values.get("name"):
            self.hidden[values["name"]] = values.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form" and self.found:
            self.done = True


def _same_origin(a: str, b: str) -> bool:
    return urlsplit(a)[:2] == urlsplit(b)[:2]


def complete_login(client: httpx.Client, authorize_url: str, username: str, password: str) -> str:
    """GET the authorize URL (following redirects within the simulator), submit the login form, and return the
    redirect Location (the client's callback URL with code and state) WITHOUT following it.

    Raises LoginError when there is no form (e.g. a 400 error page) or the login is refused.
    """
    url = authorize_url
    for _ in range(10):
        response = client.get(url, follow_redirects=False)
        location = response.headers.get("location")
        if not (response.is_redirect and location and _same_origin(urljoin(url, location), authorize_url)):
            break
        url = urljoin(url, location)
    parser = _FormParser()
    parser.feed(response.text)
    if response.status_code != 200 or not parser.found:
        raise LoginError(f"no login form at {url}: HTTP {response.status_code}", response)
    data = {**parser.hidden, "username": username, "password": password}
    answer = client.post(urljoin(str(response.url), parser.action), data=data, follow_redirects=False)
    if not (answer.is_redirect and answer.headers.get("location")):
        raise LoginError(f"login refused: HTTP {answer.status_code}", answer)
    return answer.headers["location"]
