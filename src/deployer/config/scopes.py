"""Scopes: ``<project>``, ``<project>.<instance>``, ``<project>.<instance>.<tenant>``.

Stanzas of the configs and passwords files merge key by key, general to specific,
so the most specific scope wins; at the same scope the passwords file wins over
the configs file, and ``-o`` overrides win over everything. Every merged value
remembers where it came from, so a problem can name its file and scope.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from deployer.errors import Problem

# Tenant ids may contain dots (``tacc.prod``), so everything after the instance is the tenant.
_SCOPE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+(\.[A-Za-z0-9_.-]*[A-Za-z0-9_-])?)?$")


@dataclass(frozen=True)
class Target:
    """The deployment a command acts on: ``-p``, ``-i`` and ``-t``."""

    project: str
    instance: str | None = None
    tenant: str | None = None

    def scopes(self) -> list[str]:
        """Scope names from the most general to the most specific."""
        names = [self.project]
        if self.instance:
            names.append(f"{self.project}.{self.instance}")
            if self.tenant:
                names.append(f"{self.project}.{self.instance}.{self.tenant}")
        return names

    def __str__(self) -> str:
        return self.scopes()[-1]


def parse_scope(key: str) -> Target | None:
    """The target a top-level key names, or None when the key is not a scope."""
    if not isinstance(key, str) or not _SCOPE_RE.match(key):
        return None
    parts = key.split(".", 2)
    return Target(parts[0], *(parts[1:] + [None] * (3 - len(parts))))


@dataclass(frozen=True)
class Origin:
    source: str  # file name as shown to the operator, or "-o"
    scope: str  # scope name, or "overrides"

    def path(self, *keys: object) -> str:
        return "/".join([self.scope, *(str(k) for k in keys)])


@dataclass
class Layered:
    """Merged key/value pairs and where each one came from."""

    values: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, Origin] = field(default_factory=dict)
    warnings: list[Problem] = field(default_factory=list)

    def set(self, key: str, value: Any, origin: Origin) -> None:
        self.values[key] = value
        self.origins[key] = origin


@dataclass
class ScopedFile:
    """A configs or passwords file split into its stanzas."""

    source: str
    stanzas: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    def targets(self) -> set[Target]:
        return {t for t in map(parse_scope, self.stanzas) if t is not None}


def split_scoped_file(data: Any, source: str, projects: Iterable[str], *, globals_allowed: Iterable[str] = ()) -> tuple[ScopedFile, dict[str, Any]]:
    """Split a file's top level into scope stanzas and allowed global keys."""
    projects = set(projects)
    allowed = set(globals_allowed)
    scoped = ScopedFile(source)
    globals_: dict[str, Any] = {}
    if data is None:
        return scoped, globals_
    if not isinstance(data, dict):
        scoped.problems.append(Problem(source, "", "the top level must be a mapping of scopes such as jupyterhub.prod.designsafe:"))
        return scoped, globals_
    for key, value in data.items():
        if key in allowed:
            globals_[key] = value
            continue
        target = parse_scope(key)
        if target is None:
            hint = f" or one of the global keys {', '.join(sorted(allowed))}" if allowed else ""
            scoped.problems.append(Problem(source, str(key), f"not a scope: top-level keys must look like <project>[.<instance>[.<tenant>]]{hint}"))
        elif target.project not in projects and target.instance is None:
            # A bare word is far more likely a typo than a stanza for a project we do not know.
            close = difflib.get_close_matches(key, sorted(projects | allowed), n=1)
            hint = f"did you mean {close[0]}?" if close else f"known projects: {', '.join(sorted(projects))}"
            scoped.problems.append(Problem(source, key, f"unknown top-level key; {hint}"))
        elif target.project not in projects:
            scoped.warnings.append(Problem(source, key, f"ignored: no project named {target.project!r} (known: {', '.join(sorted(projects))})"))
        elif value is None:
            scoped.stanzas[key] = {}
        elif not isinstance(value, dict):
            scoped.problems.append(Problem(source, key, f"a scope must hold a mapping of keys, got {type(value).__name__}"))
        else:
            scoped.stanzas[key] = value
    return scoped, globals_


def merge(target: Target, files: list[ScopedFile]) -> Layered:
    """Merge the stanzas of ``files`` that apply to ``target``.

    Later files win over earlier ones at the same scope; a more specific scope
    wins over a more general one whatever the file.
    """
    layered = Layered()
    for scope in target.scopes():
        seen_here: dict[str, str] = {}
        for scoped in files:
            for key, value in scoped.stanzas.get(scope, {}).items():
                key = str(key)
                if key in seen_here:
                    layered.warnings.append(Problem(scoped.source, f"{scope}/{key}", f"also set in {seen_here[key]} under the same scope; this value wins"))
                seen_here[key] = scoped.source
                layered.set(key, value, Origin(scoped.source, scope))
    return layered
