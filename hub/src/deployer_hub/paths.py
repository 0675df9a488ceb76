"""Turning untrusted names (usernames, tenant ids, TAS home directories) into path components
that cannot escape, and deciding when two spellings are the same account.

Usernames come from a remote OAuth server and end up in host paths (token
directories, per-user mounts) and in the hub's user table. Only a conservative ASCII
alphabet is accepted. A name is never silently changed into another one: ``Alice``,
`` alice``, a full-width ``ａｌｉｃｅ`` or a Kelvin-sign ``K`` would otherwise all become
``alice`` and share one server, one storage area and one set of tokens.
"""

from __future__ import annotations

import posixpath
import re
import unicodedata

_SAFE = re.compile(r"^[a-z0-9][a-z0-9._@+-]{0,127}$")
_SAFE_ANY_CASE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")


class UnsafeName(ValueError):
    """A name that cannot be used as a single path component."""


class NotCanonical(UnsafeName):
    """A name the hub would have to change (case, width, spaces) to use: refused, never merged."""


def normalize(name: str) -> str:
    """NFKC, stripped, lower case: what a careless normaliser would turn ``name`` into.

    Used to *detect* names that only differ by such changes, never to accept them."""
    return unicodedata.normalize("NFKC", name).strip().lower()


def safe_component(name: str, what: str = "username") -> str:
    """``name`` if it is a safe single path component, else raise :class:`UnsafeName`."""
    if not isinstance(name, str) or not _SAFE.fullmatch(name) or name in (".", "..") or ".." in name:
        raise UnsafeName(f"{what} {name!r} cannot be used in a path: only a-z, 0-9 and . _ @ + - are allowed")
    return name


def canonical_username(raw: str, *, case_insensitive: bool = False) -> str:
    """The hub name for a tenant's ``raw`` username, or raise.

    A name already in the hub's form (lower-case ASCII letters, digits, ``. _ @ + -``) is
    used unchanged. With ``case_insensitive`` (the operator declares that the tenant treats
    ``Alice`` and ``alice`` as one account) ASCII upper case is folded. Anything else that a
    normaliser would change (spaces, width, compatibility characters, non-ASCII case) raises
    :class:`NotCanonical`; a name no normalisation makes safe raises :class:`UnsafeName`.
    """
    if not isinstance(raw, str):
        raise UnsafeName(f"username {raw!r} is not text")
    candidate = raw.lower() if case_insensitive and raw.isascii() else raw
    try:
        return safe_component(candidate)
    except UnsafeName:
        if isinstance(raw, str) and raw != normalize(raw) and _is_safe(normalize(raw)):
            raise NotCanonical(f"username {raw!r} is not in canonical form (it would become {normalize(raw)!r})") from None
        raise


def _is_safe(name: str) -> bool:
    try:
        safe_component(name)
    except UnsafeName:
        return False
    return True


def is_safe_keeping_case(part: object) -> bool:
    """One path component that cannot escape, any ASCII case (a TAS home directory's parts, project ids)."""
    return isinstance(part, str) and bool(_SAFE_ANY_CASE.fullmatch(part)) and ".." not in part


def safe_relative_path(value: str, what: str) -> str:
    """A relative path of safe components, case kept (e.g. TAS's ``04/12345/JDoe``), or raise."""
    if not isinstance(value, str):
        raise UnsafeName(f"{what} {value!r} is not text")
    parts = [p for p in value.strip("/").split("/") if p]
    if not parts:
        raise UnsafeName(f"{what} is empty")
    for part in parts:
        if not is_safe_keeping_case(part):
            raise UnsafeName(f"{what} {value!r} cannot be used in a path: each part may only hold A-Z, a-z, 0-9 and . _ @ + -")
    return "/".join(parts)


def join_under(root: str, *parts: str) -> str:
    """Join ``parts`` below ``root`` and make sure the result stays below it."""
    root = posixpath.normpath(root)
    path = posixpath.normpath(posixpath.join(root, *parts))
    if path != root and not path.startswith(root.rstrip("/") + "/"):
        raise UnsafeName(f"{path!r} is outside {root!r}")
    return path
