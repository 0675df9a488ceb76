"""Reading the operator's YAML files strictly: syntax errors and duplicate keys are problems."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import Problem


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in mapping:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f'duplicate key "{key}" (line {mark.line + 1}); each key may appear once', mark
            )
        mapping[key] = loader.construct_object(value_node, deep=deep)
    return mapping


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class YamlProblem(Exception):
    def __init__(self, problem: Problem):
        super().__init__(str(problem))
        self.problem = problem


def parse(text: str, source: str) -> Any:
    """Parse YAML ``text``; raise :class:`YamlProblem` naming ``source`` and the line on error."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = exc.problem or "invalid YAML"
        raise YamlProblem(Problem(source, where, f"YAML syntax error: {what}")) from None
    except yaml.YAMLError as exc:  # pragma: no cover - PyYAML raises marked errors for files
        raise YamlProblem(Problem(source, "", f"YAML error: {exc}")) from None


def load(path: Path, source: str) -> Any:
    """Read and parse one file; unreadable files become problems too."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise YamlProblem(Problem(source, "", "file not found")) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise YamlProblem(Problem(source, "", f"cannot read the file: {reason}")) from None
    return parse(text, source)
