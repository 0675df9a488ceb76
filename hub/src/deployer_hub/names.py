"""Docker object names that fit Docker's limits, stay unique and stay stable.

Swarm service names (and so the notebook's DNS name) are at most 63 characters; a user named
``firstname.lastname@utexas.edu`` escapes to more than that behind the deployment's prefix. A
name over the limit keeps as much of itself as fits and ends in ``---`` and 8 hex digits of the
SHA-256 of the whole name, so two long names never meet and the same user always gets the same name.

A shortened name is never a name that was not shortened: escaped names (dockerspawner's, with ``-``
as the escape character, of usernames and server names that start with a letter or digit) hold
``-`` only before two hex digits, and ``--`` only between a user and a server name, never ``---``.
So a user cannot pick a username whose plain service name is another user's shortened one (to stop
that server, or take its route); the deployment's prefix must leave room (hubservice.name_problems).
Standard library only: the CLI uses it to validate what a deployment's names produce.
"""

from __future__ import annotations

import hashlib

SERVICE_NAME_MAX = 63  # swarm service names, DNS labels
OBJECT_NAME_MAX = 64  # swarm configs and secrets


#: Between what is kept of a shortened name and its digest: in no escaped name (see above).
SHORTENED = "---"


def fit(name: str, limit: int = SERVICE_NAME_MAX) -> str:
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: limit - len(digest) - len(SHORTENED)].rstrip('-')}{SHORTENED}{digest}"
