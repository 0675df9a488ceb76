"""A real third-party OpenID Connect provider for tests: panva's ``oidc-provider`` run by node on loopback.

Usage::

    from oidc.harness import OIDCProvider, complete_oidc_login, pkce_pair

    with OIDCProvider("hub", "hub-secret", ["http://127.0.0.1:8000/hub/oauth_callback"]) as op:
        httpx.get(op.discovery_url).json()
        ...
        location = complete_oidc_login(client, authorize_url, "alice")  # password "secret"

The provider (``provider.mjs`` beside this file) listens on 127.0.0.1 only, on a port the OS picks, and never
reaches the network. ``npm ci`` is run here once when ``node_modules`` is missing or was installed from another
``package-lock.json``.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import secrets
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

from oidc.node_server import NodeBacked, NodeServer

if TYPE_CHECKING:
    import httpx

__all__ = [
    "OIDCProvider", "OIDCProviderError", "OIDCLoginError", "complete_oidc_login", "pkce_pair", "OIDC_DIR", "ensure_node_modules",
]

#: The folder holding package.json, package-lock.json and provider.mjs.
OIDC_DIR = Path(__file__).resolve().parent
NODE_MODULES = OIDC_DIR / "node_modules"
#: Written into node_modules after a successful install: the hash of the lockfile it was installed from.
STAMP = NODE_MODULES / ".deployer-lock-sha256"
INSTALL_TIMEOUT = 600.0
STARTUP_TIMEOUT = 30.0




class OIDCProviderError(RuntimeError):
    """The provider could not be installed, started or stopped; the message carries node's/npm's output."""


class OIDCLoginError(RuntimeError):
    """The provider's login or consent pages did not lead back to the client."""


def _lock_hash(directory: Path = OIDC_DIR) -> str:
    h = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        h.update(name.encode() + b"\0" + (directory / name).read_bytes() + b"\0")
    return h.hexdigest()


def ensure_node_modules(directory: Path = OIDC_DIR) -> None:
    """``npm ci`` in ``directory`` (default tests/oidc) unless its node_modules was already installed from this
    very lockfile.

    Serialised with a file lock (one per directory) so parallel test processes install once. Shared by the
    second provider harness, tests/oidc_mock."""
    directory = Path(directory).resolve()
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise OIDCProviderError("the OIDC test provider needs node (>= 20) and npm on PATH")
    want = _lock_hash(directory)
    stamp = directory / "node_modules" / STAMP.name
    lock_path = Path(tempfile.gettempdir()) / f"deployer-oidc-npm-{hashlib.sha256(bytes(directory)).hexdigest()[:16]}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.is_file() and stamp.read_text().strip() == want:
            return
        try:
            proc = subprocess.run(
                ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=directory,
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as e:
            raise OIDCProviderError(f"npm ci in {directory} took longer than {INSTALL_TIMEOUT:.0f} s") from e
        if proc.returncode != 0:
            raise OIDCProviderError(
                f"npm ci in {directory} failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}".rstrip()
            )
        stamp.write_text(want + "\n")


class OIDCProvider(NodeBacked):
    """One ``oidc-provider`` process with one confidential client.

    The client may authenticate at the token endpoint with client_secret_basic or client_secret_post, has the
    grants authorization_code and refresh_token (a refresh token comes with every code exchange), the scopes
    ``openid profile email offline_access``, and PKCE S256 is accepted (required only with ``require_pkce``).
    Any login id is an account whose password is ``secret``.
    """

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        redirect_uris: list[str],
        access_ttl: int = 3600,
        *,
        require_pkce: bool = False,
        startup_timeout: float = STARTUP_TIMEOUT,
    ) -> None:
        if not redirect_uris or any("," in uri for uri in redirect_uris):
            raise ValueError("redirect_uris: at least one, and none containing a comma")
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uris = list(redirect_uris)
        self.access_ttl = int(access_ttl)
        self.require_pkce = require_pkce
        self.startup_timeout = startup_timeout
        self.issuer: str = ""
        self.discovery_url: str = ""
        self._node = NodeServer(OIDC_DIR / "provider.mjs", "OIDC test provider", error=OIDCProviderError)

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> "OIDCProvider":
        if self.running:
            return self
        ensure_node_modules()
        env = dict(os.environ)
        env.update(
            OIDC_PORT="0",  # node binds 127.0.0.1:0 and reports the port it got: no race for a "free" port
            OIDC_CLIENT_ID=self.client_id,
            OIDC_CLIENT_SECRET=self.client_secret,
            OIDC_REDIRECT_URIS=",".join(self.redirect_uris),
            OIDC_ACCESS_TTL=str(self.access_ttl),
            OIDC_REQUIRE_PKCE="1" if self.require_pkce else "0",
            NO_COLOR="1",
        )
        (self.issuer,) = self._node.start(env, self.startup_timeout)[:1]
        self.discovery_url = self.issuer + "/.well-known/openid-configuration"
        return self

    # -- introspection (stop, running, output, the context manager: NodeBacked) -------------------------


# -- the browser side ----------------------------------------------------------------------------------


def pkce_pair() -> tuple[str, str]:
    """A fresh PKCE ``(code_verifier, code_challenge)`` for ``code_challenge_method=S256``."""
    verifier = secrets.token_urlsafe(48)  # 64 characters of [A-Za-z0-9_-]: within RFC 7636's 43..128
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()
    return verifier, challenge


class _Forms(HTMLParser):
    """Every <form> of a page: its action, method and inputs (name, type, value)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[dict] = []
        self._current: dict | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: (v or "") for k, v in attrs}
        if tag == "form":
            self._current = {"action": a.get("action", ""), "method": a.get("method", "get").lower(), "inputs": []}
            self.forms.append(self._current)
        elif tag == "input" and self._current is not None and a.get("name"):
            self._current["inputs"].append((a["name"], a.get("type", "text").lower(), a.get("value", "")))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or ""), port


def complete_oidc_login(client: "httpx.Client", authorize_url: str, username: str, password: str = "secret") -> str:
    """Drive the provider's login and consent pages over plain HTTP with httpx (follow redirects within the
    provider only, parse the forms), and return the final redirect Location to the client's redirect_uri (with
    code and state) WITHOUT following it.

    ``client`` keeps the provider's cookies: pass the same client to log in again without the login form (the
    provider's session) or to reach the same hub. Raises OIDCLoginError when the password is refused, when the
    provider answers with an error page, or when no redirect away from the provider comes within a few steps.
    A provider error that is sent to the redirect_uri (``?error=access_denied&...``) is returned like a code.
    """
    provider = _origin(authorize_url)
    method, url, data = "GET", authorize_url, None
    for _ in range(12):
        resp = client.request(method, url, data=data, follow_redirects=False)
        if resp.is_redirect:
            location = urljoin(str(resp.url), resp.headers["location"])
            if _origin(location) != provider:
                return location
            method, url, data = "GET", location, None
            continue
        page = resp.text
        if resp.status_code == 401 and 'name="password"' in page:
            raise OIDCLoginError(f"the provider refused the login {username!r} with that password")
        if resp.status_code != 200:
            raise OIDCLoginError(f"{method} {url} answered {resp.status_code}:\n{page[:2000]}")
        parser = _Forms()
        parser.feed(page)
        forms = [f for f in parser.forms if f["method"] == "post"]
        if not forms:
            raise OIDCLoginError(f"{url} has no form to submit:\n{page[:2000]}")
        form = forms[0]
        fields = {name: value for name, kind, value in form["inputs"] if kind == "hidden"}
        if any(kind == "password" for _, kind, _ in form["inputs"]):
            fields["login"] = username
            fields["password"] = password
        action = urljoin(str(resp.url), form["action"] or str(resp.url))
        if _origin(action) != provider:
            raise OIDCLoginError(f"{url} posts to {action}, outside the provider (form_post is not supported)")
        method, url, data = "POST", action, fields
    raise OIDCLoginError(f"no redirect away from the provider after 12 steps (last: {method} {url})")
