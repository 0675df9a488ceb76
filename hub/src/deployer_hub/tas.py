"""Client for TAS, the TACC Accounting System: a user's POSIX uid, gid and home directory.

``GET {tas}/users/username/{username}`` with the hub's role account (HTTP Basic).
Every request is bounded in time. Failures are typed so the hub can tell the user
why their server cannot start, instead of falling back to running it as root.
"""

from __future__ import annotations

import base64
import json
import ssl
from dataclasses import dataclass
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from . import paths

#: The smallest uid/gid accepted from TAS unless configured otherwise: system accounts
#: (0 is root) never run a notebook.
DEFAULT_MIN_ID = 1000


class TASError(Exception):
    """TAS could not give an identity. ``user_message`` is safe to show to the user."""

    def __init__(self, message: str, user_message: str):
        super().__init__(message)
        self.user_message = user_message


class TASUnavailable(TASError):
    pass


class TASUnknownUser(TASError):
    pass


class TASMissingIds(TASError):
    pass


class TASBadRecord(TASError):
    """TAS answered, but a value in the user's record cannot be used (uid 0, a float, a hostile home)."""


@dataclass(frozen=True)
class TASUser:
    username: str
    uid: int | None
    gid: int | None
    home_directory: str | None


class TASClient:
    def __init__(self, base_url: str, role_account: str, role_password: str, *, timeout: float = 10.0,
                 ssl_context: ssl.SSLContext | None = None, http_client: AsyncHTTPClient | None = None,
                 min_id: int = DEFAULT_MIN_ID):
        self.base_url = base_url.rstrip("/")
        self._auth = "Basic " + base64.b64encode(f"{role_account}:{role_password}".encode()).decode()
        self.timeout = timeout
        self.ssl_context = ssl_context
        self.min_id = max(1, min_id)  # 0 is never a notebook's uid, whatever is configured
        self.http = http_client or AsyncHTTPClient()

    def __repr__(self) -> str:  # never show the role password
        return f"TASClient({self.base_url!r})"

    async def lookup(self, username: str) -> TASUser:
        url = f"{self.base_url}/users/username/{quote(username, safe='')}"
        request = HTTPRequest(
            url,
            headers={"Authorization": self._auth, "Accept": "application/json", "User-Agent": "deployer-hub"},
            connect_timeout=self.timeout,
            request_timeout=self.timeout,
            ssl_options=self.ssl_context,
        )
        try:
            response = await self.http.fetch(request)
        except HTTPClientError as exc:
            if exc.code == 404:
                raise TASUnknownUser(f"TAS has no user {username!r}", f"Your account {username!r} was not found in TAS, the TACC Accounting System. Please contact support.") from None
            if exc.code in (401, 403):
                raise TASError(f"TAS refused the hub's role account (HTTP {exc.code}); check tas_role_account/tas_role_pass",
                               "The hub could not query TAS for your account. Please contact support.") from None
            # 599 is tornado's code for timeouts and connection failures
            what = "did not answer in time or could not be reached" if exc.code == 599 else f"answered HTTP {exc.code}"
            raise TASUnavailable(f"TAS at {self.base_url} {what} ({exc})", "TAS, the TACC Accounting System, is unavailable right now, so your server cannot start with your identity. Please try again in a few minutes.") from None
        except OSError as exc:
            raise TASUnavailable(f"TAS at {self.base_url} could not be reached: {exc}", "TAS, the TACC Accounting System, is unavailable right now, so your server cannot start with your identity. Please try again in a few minutes.") from None
        try:
            result = json.loads(response.body)["result"]
            if not isinstance(result, dict):
                raise TypeError("result is not an object")
        except (ValueError, KeyError, TypeError):
            raise TASUnavailable(f"TAS gave an unreadable answer for {username!r}", "TAS, the TACC Accounting System, gave an unexpected answer. Please try again later or contact support.") from None
        return TASUser(username, self._id(result, "uid", username), self._id(result, "gid", username), _home(result, username))

    def _id(self, record: dict, key: str, username: str) -> int | None:
        """An integer id >= min_id, or None when TAS has none. Booleans, floats and 0 are refused."""
        value = record.get(key)
        if value is None or value == "":
            return None
        number: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and value.isascii() and value.isdigit():
            number = int(value)
        if number is None or number < self.min_id:
            raise TASBadRecord(
                f"TAS gave {key} {value!r} for {username!r}, which is not an integer >= {self.min_id}",
                f"TAS, the TACC Accounting System, gave your account a {key} that this hub does not accept, so your server "
                "cannot start with your identity. Please contact support.",
            )
        return number


def _home(record: dict, username: str) -> str | None:
    """The home directory as TAS spells it (case kept), checked to be a safe relative path."""
    value = record.get("homeDirectory")
    if value is None or value == "":
        return None
    try:
        return paths.safe_relative_path(value, "TAS home directory")
    except paths.UnsafeName:
        raise TASBadRecord(
            f"TAS gave an unusable homeDirectory {value!r} for {username!r}",
            "TAS, the TACC Accounting System, gave your account a home directory this hub cannot use. Please contact support.",
        ) from None
