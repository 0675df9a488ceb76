"""The user's groups from the tenant's profile or claims: untrusted input, kept only when it is a list
of plain names.

A tenant that sends a number, a nested object or thousands of entries gets no groups for that login
(logged), never an error page: groups only widen what a user may use (admin_groups, profiles and
projects limited to groups), so having none is the safe side. Standard library only.
"""

from __future__ import annotations

import logging
from typing import Any

MAX_GROUPS = 500
MAX_NAME = 128


def from_claim(value: Any, log: logging.Logger | logging.LoggerAdapter, claim: str) -> set[str]:
    if value is None:
        return set()
    if not isinstance(value, list):
        log.warning("The tenant's %r claim is not a list (%s): no groups", claim, type(value).__name__)
        return set()
    if len(value) > MAX_GROUPS:
        log.warning("The tenant's %r claim lists %d groups (more than %d): no groups", claim, len(value), MAX_GROUPS)
        return set()
    kept = {g for g in value if isinstance(g, str) and 0 < len(g) <= MAX_NAME and g.isprintable() and g == g.strip()}
    if len(kept) != len(set(map(str, value))):
        log.warning("Ignored %d malformed entries of the tenant's %r claim", len(value) - len(kept), claim)
    return kept
