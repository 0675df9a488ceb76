"""Reading the operator's YAML files strictly: syntax errors and duplicate keys are problems.

Operators' files are trusted but error-prone, and a mistake must never crash Deployer or make
it spin: keys must be plain values, documents are at most ``MAX_BYTES`` long and ``MAX_DEPTH``
deep, and aliases may not expand to more than ``MAX_NODES`` values (a "billion laughs" file of a
few hundred bytes would otherwise take gigabytes once merged and printed). YAML error messages
never quote the offending text: a value in the passwords file starting with ``*`` or ``!``
would otherwise be echoed as an "undefined alias".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from deployer.errors import Problem

#: Limits far above any deployment file (a few KB, five levels, a few hundred values).
MAX_BYTES = 1024 * 1024
MAX_DEPTH = 32
MAX_NODES = 20_000

_MERGE_TAG = "tag:yaml.org,2002:merge"


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    # Keys written in this mapping may each appear once; keys brought in by a merge (<<: *common)
    # are defaults that a written key overrides, as YAML's merge key specifies.
    written = sum(1 for key_node, _ in node.value if key_node.tag != _MERGE_TAG)
    loader.flatten_mapping(node)
    merged = len(node.value) - written
    mapping: dict[Any, Any] = {}
    seen: set[Any] = set()
    for index, (key_node, value_node) in enumerate(node.value):
        key = loader.construct_object(key_node, deep=deep)
        mark = key_node.start_mark
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(None, None, "a key must be a plain value (text or a number), not a list or mapping", mark) from None
        if index >= merged:
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f'duplicate key "{key}" (line {mark.line + 1}); each key may appear once', mark
                )
            seen.add(key)
        mapping[key] = loader.construct_object(value_node, deep=deep)
    return mapping


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class YamlProblem(Exception):
    def __init__(self, problem: Problem):
        super().__init__(str(problem))
        self.problem = problem


#: PyYAML problems that quote the file's text; said without the quote (it may be a secret).
_QUOTING = {
    "found undefined alias": "an undefined alias: a value starting with * must be quoted",
    "found undefined tag handle": "an undefined tag: a value starting with ! must be quoted",
    "could not determine a constructor for the tag": "an unknown tag: a value starting with ! must be quoted",
    "found unknown escape character": "an unknown escape in a double-quoted value: use single quotes",
    "found character that cannot start any token": "a character that cannot start a value (a tab, @ or `?): quote the value",
}


def _said(problem: str | None) -> str:
    problem = problem or "invalid YAML"
    for start, plain in _QUOTING.items():
        if problem.startswith(start):
            return plain
    return problem


def _bad_character(text: str) -> str | None:
    """A description of the first character no deployment value may hold (a lone surrogate, or a
    control character other than tab and newline), else None."""
    for char in text:
        code = ord(char)
        if 0xD800 <= code <= 0xDFFF:
            return f"a lone surrogate (U+{code:04X})"
        if (code < 0x20 and char not in "\t\n\r") or 0x7F <= code <= 0x9F:
            return f"a control character (U+{code:04X})"
    return None


def _check_shape(data: Any, source: str) -> None:
    """Refuse documents nested too deeply, expanding (through aliases) to too many values, or
    holding characters no value may hold (named by path, never quoted)."""
    stack: list[tuple[Any, int, str]] = [(data, 1, "")]
    count = 0
    while stack:
        value, depth, path = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise YamlProblem(Problem(source, "", f"the file expands to more than {MAX_NODES} values (through aliases?); "
                                                  "deployment files are far smaller"))
        if depth > MAX_DEPTH:
            raise YamlProblem(Problem(source, "", f"values are nested more than {MAX_DEPTH} levels deep"))
        if isinstance(value, dict):
            for key, item in value.items():
                where = f"{path}/{key}" if path else str(key)
                bad = _bad_character(key) if isinstance(key, str) else None
                if bad:
                    raise YamlProblem(Problem(source, path, f"a key holds {bad}; remove it"))
                stack.append((item, depth + 1, where))
        elif isinstance(value, list):
            stack.extend((item, depth + 1, f"{path}/{index}") for index, item in enumerate(value))
        elif isinstance(value, str):
            bad = _bad_character(value)
            if bad:
                raise YamlProblem(Problem(source, path, f"holds {bad}; remove it (the value is not shown)"))


def parse(text: str, source: str) -> Any:
    """Parse YAML ``text``; raise :class:`YamlProblem` naming ``source`` and the line on error."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise YamlProblem(Problem(source, "", f"the file is larger than {MAX_BYTES // 1024} KiB; deployment files are a few KB"))
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise YamlProblem(Problem(source, where, f"YAML syntax error: {_said(exc.problem)}")) from None
    except yaml.YAMLError:  # pragma: no cover - PyYAML raises marked errors for files
        raise YamlProblem(Problem(source, "", "YAML error: the file is not valid YAML")) from None
    except RecursionError:
        raise YamlProblem(Problem(source, "", f"values are nested more than {MAX_DEPTH} levels deep")) from None
    _check_shape(data, source)
    return data


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
