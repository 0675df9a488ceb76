"""``volume_mounts``: parsing the operator's ``host_path:container_path:mode`` templates (the CLI, at
validate) and rendering them for one user, safely (the spawner, at every start). One parser for both.

``{username}`` and ``{tenant_id}`` must each be one safe path component;
``{tas_homeDirectory}`` may be several (TAS gives e.g. ``04/12345/JDoe``) but each
must be safe, and its case is kept (another case may be another user's directory). After rendering, a host path must still lie below the static part of
its template (the text before the first variable), so no value can escape it.
"""

from __future__ import annotations

import posixpath
import re
import string
from dataclasses import dataclass

from . import paths

TEMPLATE_VARIABLES = ("username", "tenant_id", "tas_homeDirectory", "servername")
TAS_VARIABLES = frozenset({"tas_homeDirectory"})
MODES = ("ro", "rw")


class MountError(ValueError):
    """A volume_mounts entry that is not host_path:container_path:mode with known variables."""


@dataclass(frozen=True)
class VolumeMount:
    host_path: str
    container_path: str
    mode: str

    @property
    def read_only(self) -> bool:
        return self.mode == "ro"

    @property
    def variables(self) -> frozenset[str]:
        return template_variables(self.host_path) | template_variables(self.container_path)

    @property
    def static_host_dir(self) -> str:
        """The directory every rendering of host_path lies in: the path itself without variables,
        else the directory holding the first variable (``/data/{tenant_id}/x`` -> ``/data``)."""
        if "{" not in self.host_path:
            return self.host_path
        return self.host_path.split("{", 1)[0].rsplit("/", 1)[0] or "/"

    def __str__(self) -> str:
        return f"{self.host_path}:{self.container_path}:{self.mode}"


def template_variables(path: str, known: tuple[str, ...] = TEMPLATE_VARIABLES, what: str = "") -> frozenset[str]:
    """The ``{names}`` used in ``path`` (each one of ``known``); raises MountError on malformed braces or format tricks."""
    names = set()
    try:
        parsed = list(string.Formatter().parse(path))
    except ValueError as exc:
        raise MountError(f"malformed template in {path!r}: {exc}; write variables as {{{known[0]}}}") from None
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if spec or conversion:
            raise MountError(f"template variable {{{name}}} in {path!r} may not have a format spec or conversion")
        if name not in known:
            allowed = ", ".join("{" + v + "}" for v in known)
            raise MountError(f"unknown template variable {{{name}}} in {what}{path!r}; allowed: {allowed}")
        names.add(name)
    return frozenset(names)


def _check_path(path: str, role: str) -> None:
    if not path:
        raise MountError(f"{role} is empty")
    if not path.startswith("/"):
        raise MountError(f"{role} must be an absolute path, got {path!r}")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or 0xD800 <= ord(c) <= 0xDFFF for c in path):
        raise MountError(f"{role} contains a control character (a tab, a newline, ...) or a lone surrogate; remove it")
    if ".." in path.split("/"):
        raise MountError(f"{role} must not contain '..', got {path!r}")
    if normal(path) == "/":
        raise MountError(f"{role} must not be / (the whole filesystem)")
    if "{" in path:
        static = normal(path).split("{", 1)[0]  # the fixed text before the first variable
        if static.rsplit("/", 1)[0] == "":  # the variable is (part of) a name directly below /
            raise MountError(f"{role} {path!r} puts a variable directly below /: a user named etc would get /etc; "
                             "put it below a directory of its own, e.g. /data/{username}")


def normal(path: str) -> str:
    """``path`` with repeated slashes, ``.`` segments and a trailing slash removed (``//`` is ``/``),
    so that every check and every comparison sees one spelling."""
    return "/" + "/".join(part for part in path.split("/") if part not in ("", "."))


def parse(entry: object) -> VolumeMount:
    if not isinstance(entry, str):
        raise MountError(f"must be a string host_path:container_path:mode, got {type(entry).__name__}")
    parts = entry.split(":")
    if len(parts) != 3:
        raise MountError(f"expected host_path:container_path:mode (three parts separated by ':'), got {entry!r}")
    host, container, mode = (p.strip() for p in parts)
    if mode not in MODES:
        raise MountError(f'mode must be ro or rw, got "{mode}"')
    _check_path(host, "host_path")
    _check_path(container, "container_path")
    template_variables(host)
    template_variables(container)
    return VolumeMount(normal(host), normal(container), mode)


class MountRenderError(ValueError):
    """A mount cannot be rendered for this user; the message is safe to show them."""


@dataclass(frozen=True)
class RenderedMount:
    source: str  # host path on the worker
    target: str  # path in the container
    read_only: bool


def template_values(username: str, tenant_id: str, tas_home_directory: str | None, server_name: str = "") -> dict[str, str]:
    values = {
        "username": paths.safe_component(username),
        "tenant_id": paths.safe_component(tenant_id, "tenant id"),
        # A named server's name (allow_named_servers); the default server has none: {servername} renders
        # as nothing there, so /data/{username}/{servername} is the user's own directory.
        "servername": paths.safe_component(server_name, "server name") if server_name else "",
    }
    if tas_home_directory:
        values["tas_homeDirectory"] = paths.safe_relative_path(tas_home_directory, "TAS home directory")  # case kept: 04/12345/JDoe is not 04/12345/jdoe
    return values


def _render(template: str, values: dict[str, str]) -> str:
    fields = [name for _, name, _, _ in string.Formatter().parse(template) if name]
    missing = [name for name in fields if name not in values]
    if missing:
        raise MountRenderError(f"no value for {{{missing[0]}}} (TAS gave no home directory?)")
    rendered = template.format_map(values)
    static = template.split("{", 1)[0]
    prefix = static.rsplit("/", 1)[0] or "/"
    normal = posixpath.normpath(rendered)
    if not (normal == prefix or normal.startswith(prefix.rstrip("/") + "/")):
        raise MountRenderError(f"{rendered!r} escapes {prefix!r}")
    return normal


def render(specs: list[str], values: dict[str, str]) -> list[RenderedMount]:
    """Render ``host:container:mode`` specs for one user (parsed by the same rules as at validate)."""
    mounts = []
    for spec in specs:
        mount = parse(spec)
        mounts.append(RenderedMount(_render(mount.host_path, values), _render(mount.container_path, values), mount.read_only))
    return mounts


#: The variables of project_mounts' host_path (deployer_hub.projects): one directory per project, so
#: ``{project_id}`` must be there; ``{username}`` is not allowed (a project's directory is shared by its members).
PROJECT_VARIABLES = ("project_id", "tenant_id")


def check_project_host_path(path: str) -> str:
    """project_mounts' ``host_path`` template, normalised, or raise MountError.

    It must hold ``{project_id}`` as a plain variable, may hold ``{tenant_id}``, nothing else, and
    follows the rules of volume_mounts' host paths (absolute, no ``..``, no variable directly below /).
    A separate check because ``{project_id}`` has a value only for project mounts, never in volume_mounts.
    """
    if not isinstance(path, str):
        raise MountError(f"host_path must be a string, got {type(path).__name__}")
    path = path.strip()
    _check_path(path, "host_path")
    if "project_id" not in template_variables(path, PROJECT_VARIABLES, "project_mounts host_path "):
        raise MountError(f"project_mounts host_path {path!r} must contain {{project_id}} (each project has its own directory)")
    return normal(path)


#: One rendered template variable: a safe path component, any case (TAS home parts and project ids keep theirs).
_COMPONENT = "[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}"


def pattern(template: str, fixed: dict[str, str] | None = None) -> str:
    """A regular expression matching every rendering of a host or container path ``template`` (for
    :func:`re.fullmatch`): each variable one safe component (``{tas_homeDirectory}`` one or more), a
    variable of ``fixed`` its value, ``{servername}`` possibly empty (the default server has none).

    The Docker proxy and the mount guard allow a notebook only the mounts these describe."""
    fixed = fixed or {}
    regex = ""
    for part in normal(template).split("/")[1:]:
        if part == "{servername}" and "servername" not in fixed:
            regex += f"(?:/{_COMPONENT})?"  # rendered empty, the component disappears
            continue
        text = ""
        for literal, name, _, _ in string.Formatter().parse(part):
            text += re.escape(literal)
            if name is None:
                continue
            if name in fixed:
                text += re.escape(fixed[name])
            elif name == "tas_homeDirectory":
                text += f"{_COMPONENT}(?:/{_COMPONENT})*"
            elif name == "servername":
                text += f"(?:{_COMPONENT})?"
            else:
                text += _COMPONENT
        regex += "/" + text
    return regex or "/"
