"""``-o key1=value1&key2=value2``: overrides that win over every file."""

from __future__ import annotations

from typing import Any

import yaml

from deployer.config.scopes import Layered, Origin
from deployer.errors import Problem

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
            problems.append(Problem(SOURCE, f"overrides/{index}", _without_equals(item)))
            continue
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        pairs.append((key, value))
    return pairs, problems


def _without_equals(item: str) -> str:
    """The problem of an item without '=', never quoting it: it may be a secret typed by mistake."""
    from deployer.config.model import JupyterHubConfig  # the known keys; imported here to keep this module light

    name = item.split(":", 1)[0].strip()
    if name in JupyterHubConfig.model_fields:
        return f"expected key=value: write {name}=VALUE (the value is not shown)"
    if not item.strip():
        return "expected key=value, got an empty item"
    return "expected key=value; this item has no '=' (its text is not shown: it may hold a secret)"


def apply(layered: Layered, pairs: list[tuple[str, Any]]) -> None:
    for key, value in pairs:
        layered.set(key, value, ORIGIN)
