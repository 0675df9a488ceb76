"""Rendering ``volume_mounts`` templates for one user, safely.

``{username}`` and ``{tenant_id}`` must each be one safe path component;
``{tas_homeDirectory}`` may be several (TAS gives e.g. ``04/12345/JDoe``) but each
must be safe, and its case is kept (another case may be another user's directory). After rendering, a host path must still lie below the static part of
its template (the text before the first variable), so no value can escape it.
"""

from __future__ import annotations

import posixpath
import string
from dataclasses import dataclass

from . import paths


class MountRenderError(ValueError):
    """A mount cannot be rendered for this user; the message is safe to show them."""


@dataclass(frozen=True)
class RenderedMount:
    source: str  # host path on the worker
    target: str  # path in the container
    read_only: bool


def template_values(username: str, tenant_id: str, tas_home_directory: str | None) -> dict[str, str]:
    values = {
        "username": paths.safe_component(username),
        "tenant_id": paths.safe_component(tenant_id, "tenant id"),
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
    """Render ``host:container:mode`` specs for one user."""
    mounts = []
    for spec in specs:
        host, container, mode = spec.split(":")
        mounts.append(RenderedMount(_render(host, values), _render(container, values), mode == "ro"))
    return mounts
