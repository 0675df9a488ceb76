"""Failures of the tenant's services turned into one clear page for the user and one log line.

The tenant (OAuth server, userinfo, JWKS) and TAS are remote and untrusted: they may refuse,
hang, be unreachable, present a certificate the hub does not trust, or answer with something
that is not what their contract says. Each of these becomes a :class:`UserFacingError` whose
text says which service failed and what to try; no token and no raw reply is ever echoed.
"""

from __future__ import annotations

import socket
import ssl

from tornado import web
from tornado.httpclient import HTTPClientError

from .tokenlife import TokenReplyError


class UserFacingError(web.HTTPError):
    """An error whose message JupyterHub shows to the user (login or spawn page), escaped.

    Not logged again by tornado: the code raising it logs the cause once, with details."""

    def __init__(self, status: int, message: str):
        super().__init__(status)
        self.jupyterhub_message = message
        self.reason = {403: "Forbidden", 502: "Bad Gateway", 503: "Service Unavailable"}.get(status)

    def __str__(self) -> str:
        return f"HTTP {self.status_code}: {self.jupyterhub_message}"


class ReplyError(TokenReplyError):
    """A tenant's answer that does not follow its contract (not JSON, not an object, a field missing)."""


def is_refusal(exc: BaseException) -> bool:
    """The tenant answered and said no (400/401/403): a new login is needed, retrying will not help.
    Also when the refusal was already turned into the user's page (raised ``from`` it)."""
    if isinstance(exc, UserFacingError) and exc.__cause__ is not None:
        exc = exc.__cause__
    return isinstance(exc, HTTPClientError) and exc.code in (400, 401, 403)


def is_transient(exc: BaseException) -> bool:
    """The tenant could not be asked (down, slow, unreachable, 5xx): try again later."""
    if isinstance(exc, HTTPClientError):
        return exc.code == 599 or exc.code >= 500
    return isinstance(exc, OSError)  # refused connections, DNS, TLS (ssl.SSLError is an OSError)


def describe(exc: BaseException, service: str) -> tuple[int, str, str]:
    """(HTTP status, message for the user, detail for the log) for a failed call to ``service``."""
    if isinstance(exc, HTTPClientError):
        if exc.code == 599:
            return 503, f"{service} did not answer in time. Please try again in a few minutes.", f"timed out ({exc})"
        if exc.code in (400, 401, 403):
            return 403, (f"{service} refused the request (HTTP {exc.code}). Please try logging in again; if this persists, "
                         "the hub's OAuth client may be misconfigured: contact support."), f"HTTP {exc.code}"
        return 503, f"{service} answered with an error (HTTP {exc.code}). Please try again in a few minutes.", f"HTTP {exc.code}"
    if isinstance(exc, ssl.SSLError):  # incl. SSLCertVerificationError
        reason = getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or "TLS handshake failed"
        return 502, (f"The hub could not make a trusted connection to {service} ({reason}). If the tenant uses a private "
                     "certificate authority, the hub's operators must configure it (tenant_ca_bundle)."), f"TLS: {exc}"
    if isinstance(exc, socket.gaierror):
        return 503, f"The hub could not look up the address of {service} (DNS). Please try again in a few minutes.", f"DNS: {exc}"
    if isinstance(exc, ConnectionRefusedError):
        return 503, f"{service} could not be reached (connection refused). Please try again in a few minutes.", f"refused: {exc}"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return 503, f"{service} did not answer in time. Please try again in a few minutes.", f"timed out: {exc}"
    if isinstance(exc, OSError):
        return 503, f"{service} could not be reached. Please try again in a few minutes.", f"{type(exc).__name__}: {exc}"
    if isinstance(exc, TokenReplyError):
        return 502, (f"{service} gave an answer the hub cannot use ({exc}). Please try again later; if this persists, "
                     "contact support."), f"unusable answer: {exc}"
    if isinstance(exc, (ValueError, TypeError, KeyError, AttributeError)):
        return 502, (f"{service} gave an answer the hub cannot read. Please try again later; if this persists, contact support."), \
            f"unreadable answer: {type(exc).__name__}: {exc}"
    return 500, f"Something went wrong while talking to {service}. Please try again; if this persists, contact support.", repr(exc)
