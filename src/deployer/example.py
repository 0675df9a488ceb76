"""``deployer init``: a commented example deployment, the living documentation of every key."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from .errors import UsageError

FILES = ("deployment.yml", "site.hosts", "site.configs", "site.passwords")
PRIVATE = frozenset({"site.passwords"})


def example_text(name: str) -> str:
    return resources.files("deployer").joinpath("example", name).read_text(encoding="utf-8")


def write_example(directory: Path, *, force: bool = False) -> list[Path]:
    """Write the example files; never overwrite without ``force``, never leave secrets world-readable."""
    existing = [directory / name for name in FILES if (directory / name).exists()]
    if existing and not force:
        names = ", ".join(str(p) for p in existing)
        raise UsageError(f"{names} already exist{'s' if len(existing) == 1 else ''}; pass --force to overwrite")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "extras").mkdir(exist_ok=True)
        written = []
        for name in FILES:
            path = directory / name
            mode = 0o600 if name in PRIVATE else 0o644
            # Create with the final mode so the secret file is never briefly world-readable.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(example_text(name))
            os.chmod(path, mode)
            written.append(path)
    except OSError as exc:
        raise UsageError(f"cannot write the example into {directory}: {exc.strerror or exc}") from None
    return written
