"""Docker object names that fit Docker's limits, stay unique and stay stable.

Swarm service names (and so the notebook's DNS name) are at most 63 characters; a user named
``firstname.lastname@utexas.edu`` escapes to more than that behind the deployment's prefix. A
name over the limit keeps as much of itself as fits and ends in 8 hex digits of the SHA-256 of
the whole name, so two long names never meet and the same user always gets the same name.
Standard library only: the CLI uses it to validate what a deployment's names produce.
"""

from __future__ import annotations

import hashlib

SERVICE_NAME_MAX = 63  # swarm service names, DNS labels
OBJECT_NAME_MAX = 64  # swarm configs and secrets


def fit(name: str, limit: int = SERVICE_NAME_MAX) -> str:
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: limit - len(digest) - 1].rstrip('-')}-{digest}"
