"""``-o key1=value1&key2=value2``: overrides that win over every file."""

from __future__ import annotations

from typing import Any

import yaml

from .errors import Problem
from .scopes import Layered, Origin

SOURCE = "-o"
ORIGIN = Origin(SOURCE, "overrides")


def parse(text: str) -> tuple[list[tuple[str, Any]], list[Problem]]:
    """Split the override string; values are read as YAML scalars (``true``, ``3G``, ``[a, b]``)."""
    pairs: list[tuple[str, Any]] = []
    problems: list[Problem] = []
    for index, item in enumerate(p for p in text.split("&") if p.strip()):
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            # Show only the key part: the value may be a secret typed by mistake.
            problems.append(Problem(SOURCE, f"overrides/{index}", f"expected key=value, got {key or '(empty key)'!r}"))
            continue
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        pairs.append((key, value))
    return pairs, problems


def apply(layered: Layered, pairs: list[tuple[str, Any]]) -> None:
    for key, value in pairs:
        layered.set(key, value, ORIGIN)
