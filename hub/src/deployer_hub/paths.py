"""Turning untrusted names (usernames, tenant ids) into path components that cannot escape.

Usernames come from a remote OAuth server and end up in host paths (token
directories, per-user mounts). Only a conservative ASCII alphabet is accepted,
after Unicode NFKC normalisation, so look-alike characters, separators, NUL and
dot-segments can never reach a path.
"""

from __future__ import annotations

import posixpath
import re
import unicodedata

_SAFE = re.compile(r"^[a-z0-9][a-z0-9._@+-]{0,127}$")


class UnsafeName(ValueError):
    """A name that cannot be used as a single path component."""


def normalize(name: str) -> str:
    """The canonical form of a username: NFKC, stripped, lower case."""
    return unicodedata.normalize("NFKC", name).strip().lower()


def safe_component(name: str, what: str = "username") -> str:
    """``name`` if it is a safe single path component, else raise :class:`UnsafeName`."""
    if not isinstance(name, str) or not _SAFE.match(name) or name in (".", "..") or ".." in name:
        raise UnsafeName(f"{what} {name!r} cannot be used in a path: only a-z, 0-9 and . _ @ + - are allowed")
    return name


def join_under(root: str, *parts: str) -> str:
    """Join ``parts`` below ``root`` and make sure the result stays below it."""
    root = posixpath.normpath(root)
    path = posixpath.normpath(posixpath.join(root, *parts))
    if path != root and not path.startswith(root.rstrip("/") + "/"):
        raise UnsafeName(f"{path!r} is outside {root!r}")
    return path
