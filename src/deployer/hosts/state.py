"""What a deployment must keep between runs on the operator's machine: generated secrets
(cookie secret, auth-state key) and the self-signed certificate. Directory 0700, files 0600."""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

from deployer.hosts.commands import sh


class StateDir:
    def __init__(self, path: Path):
        self.path = path

    def read(self, name: str) -> str | None:
        target = self.path / name
        return target.read_text() if target.exists() else None

    def write(self, name: str, text: str) -> None:
        target = self.path / name
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.path, 0o700)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")  # created 0600
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, target)

    def secret(self, name: str, nbytes: int = 32) -> str:
        """A random hex secret, generated on first use and kept: the hub's cookie secret and
        auth-state key must survive redeploys, or every user is logged out and loses tokens."""
        value = self.read(name)
        if not value:
            value = secrets.token_hex(nbytes)
            self.write(name, value)
        return value.strip()


class HostStateDir(StateDir):
    """The same state kept on the hub itself (root-only directory, 0600 files), so that any
    operator's machine deploying the hub finds the same cookie secret, key and certificate."""

    def __init__(self, ex, path: str):
        self.ex = ex
        self.path = path  # type: ignore[assignment]  # a path on the hub, not on this machine

    def read(self, name: str) -> str | None:
        result = self.ex.run(sh('cat "$1" 2>/dev/null || exit 3', f"{self.path}/{name}"), check=False)
        return result.stdout if result.code == 0 else None

    def write(self, name: str, text: str) -> None:
        target = f"{self.path}/{name}"
        self.ex.run(sh('set -e; umask 077; mkdir -p "$(dirname "$1")"; chmod 0700 "$2"; cat >"$1.new"; mv "$1.new" "$1"',
                       target, self.path, input=text.encode(), why="keep state on the hub"))
