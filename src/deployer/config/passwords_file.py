"""Writing secrets into the passwords file: comments kept, mode 0600, atomic replace."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from deployer.errors import DeployerError

HEADER = "# Secrets, in the same scopes as the configs file. Keep this file private (chmod 600).\n"


def set_values(path: Path, scope: str, values: dict[str, str]) -> None:
    """Set ``values`` under ``scope`` in the passwords file at ``path`` (created if missing)."""
    yaml = YAML()  # round-trip: the operator's comments and ordering survive
    yaml.preserve_quotes = True
    try:
        text = path.read_text(encoding="utf-8") if path.exists() else HEADER
        data = yaml.load(text) or CommentedMap()
    except Exception as exc:  # ruamel raises many types; the message names the problem
        raise DeployerError(f"{path}: cannot update the passwords file: {exc}") from None
    if not isinstance(data, dict):
        raise DeployerError(f"{path}: the top level must be a mapping of scopes")
    stanza = data.get(scope)
    if stanza is None:
        stanza = data[scope] = CommentedMap()
    elif not isinstance(stanza, dict):
        raise DeployerError(f"{path}: {scope} must be a mapping")
    stanza.update(values)
    buffer = io.StringIO()
    if not path.exists():
        buffer.write(HEADER)
    yaml.dump(data, buffer)
    _write_private(path, buffer.getvalue())


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mkstemp creates 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
