"""A second, independent OpenID Connect provider for tests: the npm package ``oauth2-mock-server`` run by node
on loopback, with a control channel the test drives while it runs.

Usage::

    from oidc_mock.harness import MockOIDCProvider, complete_mock_login

    with MockOIDCProvider() as op:                      # or MockOIDCProvider(https_cert=..., https_key=...)
        httpx.get(op.discovery_url).json()
        op.login_as("alice", "sub-alice", {"email": "alice@example.org"})
        location = complete_mock_login(client, authorize_url)   # the hub's callback URL with code and state
        op.id_token_claims(set={"aud": "someone-else"})         # the next ID tokens are for another client
        op.reset()

The provider (``server.mjs`` beside this file) listens on 127.0.0.1 only, on a port the OS picks, as does its
control listener (plain HTTP, a random token in a header). Every control call returns once the change is in
effect. ``npm ci`` runs once per ``package-lock.json`` (shared with tests/oidc: ``ensure_node_modules``).

What the provider is, natively (oauth2-mock-server 8.2.3) and as set up here:

* **No login page**: ``GET /authorize`` redirects straight back to ``redirect_uri`` with ``code`` and ``state``.
  Only ``response_type=code``; any ``redirect_uri`` and ``client_id`` are accepted (nothing is registered).
  The code belongs to whoever ``login_as`` named last (default: username and sub ``johndoe``, the library's).
* **No client authentication**: the library checks no client secret at all (discovery says
  ``token_endpoint_auth_methods_supported: ["none"]``); client_secret_basic, client_secret_post or nothing are
  all accepted. The client id is the Basic auth user name (form-decoded here) or ``client_id`` in the body,
  falling back to the ``client_id`` of the authorization request; it becomes the ID token's ``aud``.
* **Codes** (added here; the library accepts any string as a code): a code must have been issued by
  /authorize, is single-use, lives 600 s, and is bound to the client_id and redirect_uri of its authorization
  request (a token request naming others is refused). Refusals are ``400 {"error": "invalid_grant"}``, except
  that a spent code sent WITH a ``code_verifier`` is refused by the library itself first, as ``400
  invalid_request`` ("code_challenge required"), as is a ``code_verifier`` for a code issued without a challenge.
* **nonce**: native; the ``nonce`` of /authorize comes back in the ID token of that code's exchange (not in
  ID tokens from the refresh grant).
* **PKCE**: native for ``plain`` and ``S256`` when a ``code_verifier`` is sent (a wrong one: ``400
  invalid_request``, the library's wording); added here: a code issued with a ``code_challenge`` needs a
  ``code_verifier`` (``invalid_grant`` otherwise).
* **Refresh tokens**: every code exchange and refresh returns a new random ``refresh_token`` and a new ID
  token. The library accepts any refresh token; here only ones it issued, which never expire and stay valid
  after use (no rotation). Discovery does not list ``refresh_token`` in ``grant_types_supported``, though the
  grant works.
* **Access tokens** are RS256 JWTs (iss, sub, scope, amr, exp); ``expires_in`` and ``exp`` follow
  ``access_ttl``. ``GET /userinfo`` (GET only, as in the library) answers ``401 invalid_token`` for an unknown
  or expired bearer token (added: the library answers ``{"sub": "johndoe"}`` to anyone).
* **Keys**: one RS256 key at a time (kid: 80 hex characters); ``/jwks`` publishes exactly it.
* Also served by the library, untouched: ``/revoke``, ``/introspect`` (always active), ``/endsession``, and the
  ``password`` and ``client_credentials`` grants (sub as the library makes it).
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

from oidc.harness import OIDCProviderError, ensure_node_modules
from oidc.node_server import NodeBacked, NodeServer

if TYPE_CHECKING:
    import httpx

__all__ = ["MockOIDCProvider", "MockOIDCProviderError", "MockOIDCLoginError", "complete_mock_login", "MOCK_OIDC_DIR"]

#: The folder holding package.json, package-lock.json and server.mjs.
MOCK_OIDC_DIR = Path(__file__).resolve().parent
STARTUP_TIMEOUT = 30.0
CONTROL_TIMEOUT = 15.0



class MockOIDCProviderError(OIDCProviderError):
    """The provider could not be installed, started, stopped or controlled; the message carries node's output."""


class MockOIDCLoginError(RuntimeError):
    """/authorize did not redirect back to the client."""


class MockOIDCProvider(NodeBacked):
    """One ``oauth2-mock-server`` process on 127.0.0.1 (HTTP, or HTTPS with ``https_cert``/``https_key``, PEM
    files, e.g. a server certificate for 127.0.0.1 signed by a private CA), plus its control listener."""

    def __init__(
        self,
        https_cert: Path | None = None,
        https_key: Path | None = None,
        *,
        access_ttl: int = 3600,
        startup_timeout: float = STARTUP_TIMEOUT,
    ) -> None:
        if (https_cert is None) != (https_key is None):
            raise ValueError("https_cert and https_key go together")
        self.https_cert = Path(https_cert).resolve() if https_cert is not None else None
        self.https_key = Path(https_key).resolve() if https_key is not None else None
        self._access_ttl = self._check_ttl(access_ttl)
        self.startup_timeout = startup_timeout
        #: ``http(s)://127.0.0.1:<port>``: the ``issuer`` of the discovery document, without a trailing slash.
        self.issuer: str = ""
        self.discovery_url: str = ""
        self._control: tuple[str, int] | None = None
        self._control_token = ""
        # stdin held open: server.mjs exits when it closes, so node dies with us even after a SIGKILL
        self._node = NodeServer(MOCK_OIDC_DIR / "server.mjs", "mock OIDC provider", error=MockOIDCProviderError, hold_stdin=True)

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> "MockOIDCProvider":
        if self.running:
            return self
        try:
            ensure_node_modules(MOCK_OIDC_DIR)
        except OIDCProviderError as e:
            raise MockOIDCProviderError(str(e)) from e
        self._control_token = secrets.token_urlsafe(24)
        env = dict(os.environ)
        env.update(
            MOCK_OIDC_ACCESS_TTL=str(self._access_ttl),
            MOCK_OIDC_CONTROL_TOKEN=self._control_token,
            MOCK_OIDC_HTTPS_CERT=str(self.https_cert or ""),
            MOCK_OIDC_HTTPS_KEY=str(self.https_key or ""),
            NO_COLOR="1",
        )
        self.issuer = self.discovery_url = ""
        self._control = None
        issuer, control = self._node.start(env, self.startup_timeout)[:2]
        parts = urlsplit(control)
        self._control = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.issuer = issuer
        self.discovery_url = self.issuer + "/.well-known/openid-configuration"
        return self

    # -- introspection (stop, running, output, the context manager: NodeBacked) -------------------------

    @property
    def jwks_url(self) -> str:
        """The library's JWKS endpoint (also the discovery document's ``jwks_uri``)."""
        return self.issuer + "/jwks"

    # -- control ---------------------------------------------------------------------------------------

    def _call(self, command: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        if not self.running or self._control is None:
            raise MockOIDCProviderError(f"{command}: the mock OIDC provider is not running")
        data = json.dumps(body or {}).encode()
        conn = http.client.HTTPConnection(*self._control, timeout=CONTROL_TIMEOUT)
        try:
            conn.request(
                "POST",
                "/" + command,
                body=data,
                headers={"Content-Type": "application/json", "X-Control-Token": self._control_token},
            )
            resp = conn.getresponse()
            text = resp.read().decode("utf-8", "replace")
        except OSError as e:
            raise MockOIDCProviderError(f"{command}: control request failed: {e}\n{self.output}") from e
        finally:
            conn.close()
        try:
            reply = json.loads(text)
        except ValueError:
            reply = {"error": text}
        if resp.status != 200:
            raise MockOIDCProviderError(f"{command}: {resp.status} {reply.get('error', text)}")
        return reply

    def login_as(self, username: str | None, sub: str, extra: dict[str, Any] | None = None) -> None:
        """Authorization codes issued from now on (until the next ``login_as``) belong to this user: the ID
        token's and userinfo's ``sub``, ``preferred_username`` in both (``None``: no such claim in either), and
        ``extra`` claims added to both. Refresh tokens keep the user of their code. ``reset()`` keeps this."""
        self._call("login_as", {"username": username, "sub": sub, "extra": extra or {}})

    def id_token_claims(self, set: dict[str, Any] | None = None, remove: list[str] | None = None) -> None:  # noqa: A002
        """Overrides for ID tokens issued from now on, REPLACING earlier ones (no arguments: none): claims in
        ``set`` are set (after the provider's own and ``login_as``'s), then those in ``remove`` are dropped."""
        self._call("id_token_claims", {"set": set or {}, "remove": list(remove or [])})

    def userinfo_claims(self, set: dict[str, Any] | None = None, remove: list[str] | None = None) -> None:  # noqa: A002
        """The same as :meth:`id_token_claims` for /userinfo replies."""
        self._call("userinfo_claims", {"set": set or {}, "remove": list(remove or [])})

    def sign_with_unpublished_key(self, on: bool) -> None:
        """While on, ID tokens (only they) are signed by a fresh RSA key that is not in the JWKS, with the same
        header (``kid`` of the published key, ``alg`` RS256): a bad signature."""
        self._call("sign_with_unpublished_key", {"on": bool(on)})

    def rotate_keys(self) -> str:
        """A new RS256 signing key with a new ``kid`` becomes the only key in the JWKS and signs everything from
        now on; the old one is no longer published. Returns the new kid."""
        return self._call("rotate_keys")["kid"]

    def current_kid(self) -> str:
        """The ``kid`` of the published (and, unless ``sign_with_unpublished_key``, signing) key."""
        return self._call("kid")["kid"]

    def reset(self) -> None:
        """All overrides off: ID token and userinfo claims, unpublished-key signing. Keys, ``login_as``,
        ``access_ttl``, the request log and issued codes and tokens stay as they are."""
        self._call("reset")

    def requests(self) -> list[tuple[str, str, str | None]]:
        """``(method, path, grant_type)`` of every request the provider received (not the control channel), in
        order; ``grant_type`` only for POST /token (None elsewhere). Recorded when the request arrives."""
        return [tuple(r) for r in self._call("requests")["requests"]]  # type: ignore[misc]

    def clear_requests(self) -> None:
        self._call("clear_requests")

    @property
    def access_ttl(self) -> int:
        """Lifetime in seconds of access tokens issued from now on (their ``exp`` and ``expires_in``; /userinfo
        refuses them after it). Settable while running."""
        return self._access_ttl

    @access_ttl.setter
    def access_ttl(self, seconds: int) -> None:
        seconds = self._check_ttl(seconds)
        if self.running:
            self._call("access_ttl", {"seconds": seconds})
        self._access_ttl = seconds

    @staticmethod
    def _check_ttl(seconds: int) -> int:
        if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds <= 0:
            raise ValueError(f"access_ttl: a positive number of seconds, not {seconds!r}")
        return seconds


# -- the browser side ----------------------------------------------------------------------------------


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or ""), parts.port or {"http": 80, "https": 443}.get(parts.scheme)


def complete_mock_login(client: "httpx.Client", authorize_url: str) -> str:
    """Follow the provider's /authorize (it has no login page: it redirects straight back) and return the
    redirect Location leaving the provider (the client's callback URL with code and state, or with ``error``)
    WITHOUT following it. Raises MockOIDCLoginError when the provider answers anything but a redirect (e.g.
    ``400 invalid_request`` without a redirect_uri)."""
    provider = _origin(authorize_url)
    url = authorize_url
    for _ in range(5):
        resp = client.get(url, follow_redirects=False)
        if not resp.is_redirect:
            raise MockOIDCLoginError(f"GET {url} answered {resp.status_code}, not a redirect:\n{resp.text[:2000]}")
        location = urljoin(str(resp.url), resp.headers["location"])
        if _origin(location) != provider:
            return location
        url = location
    raise MockOIDCLoginError(f"no redirect away from the provider after 5 steps (last: {url})")
