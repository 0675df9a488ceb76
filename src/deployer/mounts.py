"""``volume_mounts`` entries: ``<host_path>:<container_path>:<mode>`` with template variables.

Parsing here only checks the *shape* of a mount. Rendering a mount for a real user
(and refusing usernames that would escape their directory) is the spawner's job.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

TEMPLATE_VARIABLES = ("username", "tenant_id", "tas_homeDirectory")
TAS_VARIABLES = frozenset({"tas_homeDirectory"})
MODES = ("ro", "rw")


class MountError(ValueError):
    pass


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


def template_variables(path: str) -> frozenset[str]:
    """The ``{names}`` used in ``path``; raises MountError on malformed braces or format tricks."""
    names = set()
    try:
        parsed = list(string.Formatter().parse(path))
    except ValueError as exc:
        raise MountError(f"malformed template in {path!r}: {exc}; write variables as {{username}}") from None
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if spec or conversion:
            raise MountError(f"template variable {{{name}}} in {path!r} may not have a format spec or conversion")
        if name not in TEMPLATE_VARIABLES:
            allowed = ", ".join("{" + v + "}" for v in TEMPLATE_VARIABLES)
            raise MountError(f"unknown template variable {{{name}}} in {path!r}; allowed: {allowed}")
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
