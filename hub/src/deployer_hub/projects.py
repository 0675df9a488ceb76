"""``project_mounts``: the projects a user belongs to, mounted at every spawn (DesignSafe's project storage).

Each of the user's projects appears as ``<container_path>/<directory named after the project>``,
bound from ``host_path`` rendered with ``{project_id}`` (e.g. ``/corral/projects/{project_id}``).

Membership comes from the operator's static mapping (a project is the user's when their username is
in its ``users`` or one of their groups in its ``groups``) and/or from the tenant's projects API:

    GET <api_url>
    Authorization: Bearer <the user's own OAuth access token>

    200 {"projects": [{"id": "PRJ-1234", "name": "Hurricane Harvey field data"}, ...]}

The reply must be a JSON object whose ``projects`` is a list of at most :data:`MAX_PROJECTS` objects,
each with a string ``id`` and a string ``name``; other keys are ignored. Any other shape, a reply
that is not JSON, an HTTP error or no answer within the timeout is refused with :class:`ProjectsError`
(the spawner decides whether the server starts without projects). The reply is untrusted (the tenant
may be hostile or broken): an entry whose id is not one safe path component (``A-Z a-z 0-9 . _ @ + -``,
no ``..``, case kept since ``PRJ-1`` and ``prj-1`` may be different directories) or whose name is not
a string of at most :data:`MAX_NAME` characters is skipped with a log line, never mounted. The HTTP
request itself is the caller's (``fetch``): it carries the user's token and the tenant's CA.

Directory names are derived from project names by the rules of usernames (lower-case ASCII
``a-z 0-9 . _ -``), so a name can never be ``.``, ``..`` or hold a ``/``, and collisions are resolved
deterministically. Standard library only.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any

from . import mounts, paths
from .settings import ProjectMountSettings

log = logging.getLogger("deployer_hub.projects")

#: More projects than this in one reply is not a user's membership but a broken or hostile service.
MAX_PROJECTS = 200
#: Longest project name accepted (the directory name is cut to DIR_NAME_LENGTH anyway).
MAX_NAME = 200
DIR_NAME_LENGTH = 64
#: Seconds the projects API has to answer: a spawn should not hang on it.
DEFAULT_TIMEOUT = 15.0

_OUTSIDE_DIR_ALPHABET = re.compile(r"[^a-z0-9._-]+")
_TRIM = "-._"


class ProjectsError(Exception):
    """The user's projects cannot be listed. ``str()`` is safe to show the user: never a token or the raw reply."""


@dataclass(frozen=True)
class Project:
    id: str  # a safe path component, case kept
    name: str


def check_project(project_id: object, name: object) -> Project:
    """A :class:`Project` from untrusted values, or raise ProjectsError saying what is wrong (no raw value)."""
    if not isinstance(project_id, str):
        raise ProjectsError(f"a project id is not a string but {type(project_id).__name__}")
    if not paths.is_safe_keeping_case(project_id):
        raise ProjectsError("a project id cannot be used in a path: only A-Z, a-z, 0-9 and . _ @ + - are allowed, up to 128")
    if not isinstance(name, str):
        raise ProjectsError(f"the name of project {project_id} is not a string but {type(name).__name__}")
    if len(name) > MAX_NAME:
        raise ProjectsError(f"the name of project {project_id} is longer than {MAX_NAME} characters")
    return Project(project_id, name)


async def user_projects(settings: ProjectMountSettings, *, username: str, groups: Collection[str],
                        fetch: Callable[[str], Awaitable[Any]] | None, timeout: float = DEFAULT_TIMEOUT) -> list[Project]:
    """The projects of ``username`` (the hub's name) with ``groups``, sorted by id, each id once.

    ``fetch(url)`` GETs ``url`` with the user's access token and returns the parsed JSON body of a
    2xx reply, or raises (a status code found as ``exc.code`` or ``exc.response.status_code`` is
    reported); None when there is no token. Needed only with ``api_url``.
    """
    found = _static_projects(settings, username, set(groups))
    if settings.api_url:
        if fetch is None:
            raise ProjectsError("Your projects cannot be listed without your login's access token: log out and log in again.")
        found.extend(_parse_reply(await _get(fetch, settings.api_url, timeout)))
    return _unique(found)


def _static_projects(settings: ProjectMountSettings, username: str, groups: set[str]) -> list[Project]:
    found = []
    for entry in settings.projects:
        if username in entry.users or groups.intersection(entry.groups):
            try:
                found.append(check_project(entry.id, entry.name))
            except ProjectsError as exc:  # the CLI validates the mapping: only a hand-edited hub.json gets here
                log.warning("project_mounts: static project skipped: %s", exc)
    return found


async def _get(fetch: Callable[[str], Awaitable[Any]], url: str, timeout: float) -> Any:
    try:
        return await asyncio.wait_for(fetch(url), timeout)
    except ProjectsError:
        raise
    except TimeoutError:  # asyncio's own since 3.11
        log.warning("project_mounts: %s did not answer within %ss", url, timeout)
        raise ProjectsError(f"The projects service did not answer within {timeout:g} seconds; please try again later.") from None
    except ValueError as exc:  # json.JSONDecodeError and friends: the body is not JSON
        log.warning("project_mounts: %s answered something that is not JSON: %s", url, type(exc).__name__)
        raise ProjectsError("The projects service gave a reply that is not JSON; please contact support.") from None
    except Exception as exc:  # noqa: BLE001 (fetch is any HTTP client: every other failure is "could not be reached")
        status = _status_of(exc)
        log.warning("project_mounts: GET %s failed (HTTP %s): %s: %s", url, status, type(exc).__name__, exc)
        if "timeout" in type(exc).__name__.lower():  # the client's own: httpx.ReadTimeout, tornado's HTTPTimeoutError
            raise ProjectsError("The projects service did not answer in time; please try again later.") from None
        if status in (401, 403):
            raise ProjectsError(f"The projects service refused your login (HTTP {status}); log out and log in again.") from None
        if status is not None and 400 <= status < 599:
            raise ProjectsError(f"The projects service answered with an error (HTTP {status}); please try again later.") from None
        raise ProjectsError("The projects service could not be reached; please try again later.") from None


def _status_of(exc: Exception) -> int | None:
    """The HTTP status of a client's error: tornado's ``code`` (599: no answer), httpx's ``response.status_code``."""
    for status in (getattr(exc, "code", None), getattr(getattr(exc, "response", None), "status_code", None)):
        if isinstance(status, int) and not isinstance(status, bool):
            return status
    return None


def _parse_reply(body: Any) -> list[Project]:
    """The projects of a reply per the contract in the module docstring; bad entries are skipped and logged."""
    entries = body.get("projects") if isinstance(body, dict) else None
    if not isinstance(entries, list):
        log.warning("project_mounts: the reply is a %s, not {\"projects\": [...]}", type(body).__name__)
        raise ProjectsError("The projects service gave a reply this hub does not understand; please contact support.")
    if len(entries) > MAX_PROJECTS:
        log.warning("project_mounts: the reply lists %d projects, more than %d", len(entries), MAX_PROJECTS)
        raise ProjectsError(f"The projects service listed {len(entries)} projects, more than the {MAX_PROJECTS} this hub mounts; "
                            "please contact support.")
    found = []
    for index, entry in enumerate(entries):
        try:
            if not isinstance(entry, dict):
                raise ProjectsError(f"an entry is a {type(entry).__name__}, not an object")
            found.append(check_project(entry.get("id"), entry.get("name")))
        except ProjectsError as exc:
            log.warning("project_mounts: entry %d of the reply skipped: %s", index, exc)
    return found


def _unique(projects: Iterable[Project]) -> list[Project]:
    """Sorted by id, the first of each id kept: the same membership always gives the same mounts."""
    seen: dict[str, Project] = {}
    for project in projects:
        if project.id in seen:
            if seen[project.id].name != project.name:
                log.warning("project_mounts: project %s listed twice with different names; the first is kept", project.id)
            continue
        seen[project.id] = project
    return sorted(seen.values(), key=lambda p: p.id)


def dir_name(text: str) -> str:
    """``text`` as a directory name by the rules of usernames: ASCII lower case, every run of other
    characters one ``-``, no leading or trailing ``- . _``, at most DIR_NAME_LENGTH; may be empty.

    Only ASCII is lowered: ``str.lower`` would turn the Kelvin sign into ``k``."""
    lowered = "".join(c.lower() if "A" <= c <= "Z" else c for c in text)
    return _OUTSIDE_DIR_ALPHABET.sub("-", lowered).strip(_TRIM)[:DIR_NAME_LENGTH].rstrip(_TRIM)


def dir_names(projects: Iterable[Project]) -> dict[str, str]:
    """Project id -> its directory name below container_path, each distinct, never ``.``/``..``/empty.

    Projects are taken in id order, so a collision always goes the same way: the later project's name
    gets ``-<its sanitised id>`` appended (then ``-2``, ``-3``... should even that be taken)."""
    names: dict[str, str] = {}
    taken: set[str] = set()
    for project in _unique(projects):
        suffix = dir_name(project.id) or "project"  # an id starts with a letter or digit: never empty
        name = dir_name(project.name) or suffix
        if name in taken:
            name = f"{name}-{suffix}"
        base, counter = name, 2
        while name in taken:
            name, counter = f"{base}-{counter}", counter + 1
        taken.add(name)
        names[project.id] = name
    return names


def project_mounts(settings: ProjectMountSettings, projects: Iterable[Project], *, tenant_id: str | None = None) -> list[mounts.RenderedMount]:
    """One bind mount per project, sorted by id. Raises MountError (bad settings), MountRenderError
    or paths.UnsafeName (a value that would escape; the message is safe to show)."""
    host_template = mounts.check_project_host_path(settings.host_path)
    container_root = settings.container_path.strip() if isinstance(settings.container_path, str) else ""
    mounts._check_path(container_root, "container_path")
    if "{" in container_root or "}" in container_root:
        raise mounts.MountError(f"project_mounts container_path {container_root!r} may not hold a template variable")
    container_root = mounts.normal(container_root)
    if settings.mode not in mounts.MODES:
        raise mounts.MountError(f'project_mounts mode must be ro or rw, got "{settings.mode}"')
    base_values = {"tenant_id": paths.safe_component(tenant_id, "tenant id")} if tenant_id is not None else {}
    unique = _unique(projects)
    names = dir_names(unique)
    rendered = []
    for project in unique:
        try:
            check_project(project.id, project.name)
        except ProjectsError as exc:
            raise mounts.MountRenderError(str(exc)) from None
        source = mounts._render(host_template, {**base_values, "project_id": project.id})
        target = paths.join_under(container_root, names[project.id])
        if target == container_root:  # join_under allows the root itself; a project never is it
            raise mounts.MountRenderError(f"project {project.id} would be mounted over {container_root}")
        rendered.append(mounts.RenderedMount(source, target, settings.mode == "ro"))
    return rendered
