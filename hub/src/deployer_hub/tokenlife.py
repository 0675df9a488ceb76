"""When a tenant's token was issued and when it expires: recorded once, when it arrives.

The token reply is untrusted input: ``expires_in`` may be a number, a numeric string, or
garbage; Tapis adds an absolute ``expires_at``; JWT access tokens carry ``iat``/``exp``.
The absolute times are computed once from the reply and stored with it, so re-reading a
stored reply later never slides the expiry forward.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
from typing import Any

#: Key under which the times are kept inside the stored token reply.
STAMP = "deployer_lifetime"


class TokenReplyError(ValueError):
    """The token reply cannot be used; the message names the field (never a token)."""


def seconds(value: Any, field: str) -> int | None:
    """A non-negative whole number of seconds, or None when absent. Booleans are not numbers."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise TokenReplyError(f"{field} is not a number")
    if isinstance(value, (int, float)):
        number = value
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise TokenReplyError(f"{field} is not a number") from None
    else:
        raise TokenReplyError(f"{field} is not a number")
    if number != number or number < 0 or number > 10**10:  # NaN, negative, absurd
        raise TokenReplyError(f"{field} is out of range")
    return int(number)


def _iso(value: Any) -> int | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return int(parsed.timestamp())


def jwt_claims(token: Any) -> dict[str, Any]:
    """The payload of a JWT without checking it (only to read times the tenant put there), or {}."""
    if not isinstance(token, str) or token.count(".") != 2:
        return {}
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, UnicodeDecodeError):
        return {}
    return claims if isinstance(claims, dict) else {}


def stamp(token_info: dict[str, Any], received_at: float | None = None) -> dict[str, Any]:
    """``token_info`` with its issue time and absolute expiry recorded (in place, and returned).

    Expiry: the tenant's absolute ``expires_at`` (Tapis) or the access JWT's ``exp`` if given,
    else arrival + ``expires_in``. Issue time: the JWT's ``iat``, else expiry - ``expires_in``
    when the tenant gave both, else arrival. A reply stamped before keeps its stamp.
    """
    if isinstance(token_info.get(STAMP), dict):
        return token_info
    now = int(received_at if received_at is not None else time.time())
    expires_in = seconds(token_info.get("expires_in"), "expires_in")
    claims = jwt_claims(token_info.get("access_token"))
    exp = claims.get("exp") if isinstance(claims.get("exp"), int) and not isinstance(claims.get("exp"), bool) else None
    iat = claims.get("iat") if isinstance(claims.get("iat"), int) and not isinstance(claims.get("iat"), bool) else None
    absolute = _iso(token_info.get("expires_at_iso")) or exp
    if absolute is not None:
        expires_at: int | None = absolute
    elif expires_in is not None:
        expires_at = now + expires_in
    else:
        expires_at = None
    if iat is not None:
        issued_at = iat
    elif absolute is not None and expires_in is not None:
        issued_at = min(now, absolute - expires_in)
    else:
        issued_at = now
    token_info[STAMP] = {"issued_at": issued_at, "expires_at": expires_at}
    return token_info


def times(token_info: dict[str, Any]) -> tuple[int, int | None]:
    """(issued_at, expires_at) of a stamped reply."""
    life = token_info.get(STAMP) or {}
    return int(life.get("issued_at") or time.time()), life.get("expires_at")
