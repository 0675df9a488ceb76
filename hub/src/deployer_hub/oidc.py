"""OpenID Connect ID tokens, validated as OpenID Connect Core 3.1.3.7 requires.

* signature against the provider's JWKS (fetched with the tenant CA bundle; refetched at once
  when a token names a key id not seen yet, so a key rotation at the provider just works; a key
  id still missing after that is looked for again only after ``min_refetch`` seconds, so junk
  key ids cannot make the hub hammer the provider);
* ``iss`` equal to the configured issuer, ``aud`` containing our client id (and ``azp`` equal to
  it when there are several audiences), ``exp`` and ``iat`` with a small clock skew;
* ``nonce`` bound to the login request: an HMAC of the login's state id, which lives in the
  browser's signed state cookie, so an ID token minted for another login does not fit;
* after a refresh, ``sub`` must stay the one bound at login (Core 12.2).

Each failure raises :class:`IDTokenError` naming the check that failed.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from typing import Any

import jwt

#: Signature algorithms accepted for ID tokens: asymmetric only (never "none", never HS* keyed by a shared secret).
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


class IDTokenError(Exception):
    """The ID token failed ``check`` (signature, iss, aud, azp, exp, iat, nonce, sub, ...)."""

    def __init__(self, check: str, detail: str):
        super().__init__(f"{check}: {detail}")
        self.check = check
        self.detail = detail


def nonce_for(secret: bytes | str, state_id: str) -> str:
    """The nonce of the login whose state id is ``state_id`` (keyed by the hub's cookie secret)."""
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, b"deployer-oidc-nonce:" + state_id.encode(), hashlib.sha256).hexdigest()


class KeySet:
    """The provider's signing keys, fetched from ``jwks_uri`` when needed."""

    def __init__(self, fetch: Callable[[], Awaitable[Any]], *, min_refetch: float = 10.0):
        self._fetch = fetch
        self.min_refetch = min_refetch
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")
        self._missed: set[str | None] = set()  # key ids not in the set fetched last

    async def _load(self) -> None:
        document = await self._fetch()
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise IDTokenError("signature", "the provider's JWKS is not a key set")
        keys: dict[str | None, jwt.PyJWK] = {}
        for data in document["keys"]:
            if not isinstance(data, dict) or data.get("use", "sig") != "sig":
                continue
            try:
                key = jwt.PyJWK(data)
            except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
                continue  # a key type this hub does not use; others may still fit
            keys[data.get("kid")] = key
        self._keys = keys
        self._fetched_at = time.monotonic()
        self._missed = set()

    async def key(self, kid: str | None) -> jwt.PyJWK:
        if kid not in self._keys and (kid not in self._missed or time.monotonic() - self._fetched_at >= self.min_refetch):
            await self._load()  # first use, or a key id not seen yet: the provider may have rotated
        if kid in self._keys:
            return self._keys[kid]
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        self._missed.add(kid)
        raise IDTokenError("signature", f"no key with id {kid!r} in the provider's JWKS")


async def validate(id_token: Any, keys: KeySet, *, issuer: str, client_id: str, nonce: str | None,
                   leeway: float = 30.0, subject: str | None = None) -> dict[str, Any]:
    """The claims of a valid ID token, else :class:`IDTokenError`.

    ``nonce``: the login's nonce (None after a refresh, where Core 12.2 does not require one);
    ``subject``: the ``sub`` bound at login (after a refresh), or None."""
    if not isinstance(id_token, str) or not id_token:
        raise IDTokenError("id_token", "the token response has no ID token")
    try:
        header = jwt.get_unverified_header(id_token)
    except jwt.DecodeError as exc:
        raise IDTokenError("format", str(exc)) from None
    algorithm = header.get("alg")
    if algorithm not in ALGORITHMS:
        raise IDTokenError("alg", f"signature algorithm {algorithm!r} is not accepted")
    key = await keys.key(header.get("kid"))
    try:
        claims = jwt.decode(
            id_token, key.key, algorithms=[algorithm], audience=client_id, issuer=issuer, leeway=leeway,
            options={"require": ["iss", "sub", "aud", "exp", "iat"]},
        )
    except jwt.InvalidSignatureError:
        raise IDTokenError("signature", "the signature does not match the provider's key") from None
    except jwt.InvalidIssuerError:
        raise IDTokenError("iss", "the token was issued by another issuer") from None
    except jwt.InvalidAudienceError:
        raise IDTokenError("aud", f"the token is not for client {client_id!r}") from None
    except jwt.ExpiredSignatureError:
        raise IDTokenError("exp", "the token has expired") from None
    except (jwt.ImmatureSignatureError, jwt.InvalidIssuedAtError):
        raise IDTokenError("iat", "the token is issued in the future") from None
    except jwt.MissingRequiredClaimError as exc:
        raise IDTokenError(exc.claim, f"the token has no {exc.claim!r} claim") from None
    except jwt.InvalidTokenError as exc:
        raise IDTokenError("format", str(exc)) from None
    except (jwt.PyJWTError, ValueError, TypeError) as exc:  # e.g. an algorithm that does not fit the key
        raise IDTokenError("signature", str(exc)) from None
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    if len(audiences) > 1 and claims.get("azp") != client_id:
        raise IDTokenError("azp", "several audiences and the authorized party is not this hub")
    if not isinstance(claims["sub"], str) or not claims["sub"]:
        raise IDTokenError("sub", "the subject is empty")
    if nonce is not None:
        got = claims.get("nonce")
        if not isinstance(got, str) or not hmac.compare_digest(got.encode(), nonce.encode()):
            raise IDTokenError("nonce", "the token was not issued for this login request")
    if subject is not None and claims["sub"] != subject:
        raise IDTokenError("sub", "the refreshed token is for another subject")
    return claims
