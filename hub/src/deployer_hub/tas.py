"""Client for TAS, the TACC Accounting System: a user's POSIX uid, gid and home directory.

``GET {tas}/users/username/{username}`` with the hub's role account (HTTP Basic).
Every request is bounded in time. Failures are typed so the hub can tell the user
why their server cannot start, instead of falling back to running it as root.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest


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


@dataclass(frozen=True)
class TASUser:
    username: str
    uid: int | None
    gid: int | None
    home_directory: str | None


class TASClient:
    def __init__(self, base_url: str, role_account: str, role_password: str, *, timeout: float = 10.0,
                 ca_certs: str | None = None, http_client: AsyncHTTPClient | None = None):
        self.base_url = base_url.rstrip("/")
        self._auth = "Basic " + base64.b64encode(f"{role_account}:{role_password}".encode()).decode()
        self.timeout = timeout
        self.ca_certs = ca_certs
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
            ca_certs=self.ca_certs,
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
            user = TASUser(username, _int_or_none(result.get("uid")), _int_or_none(result.get("gid")), result.get("homeDirectory") or None)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise TASUnavailable(f"TAS gave an unreadable answer for {username!r}", "TAS, the TACC Accounting System, gave an unexpected answer. Please try again later or contact support.") from None
        return user


def _int_or_none(value: object) -> int | None:
    if value is None or value == "":
        return None
    return int(value)  # type: ignore[arg-type]
