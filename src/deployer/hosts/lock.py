"""One deploy at a time: a lock held on the hub for as long as this process lives.

``flock`` runs on the hub in a session whose standard input is a pipe from this process.
However Deployer ends (done, error, Ctrl-C, SIGKILL), the pipe closes, the remote ``cat``
sees end-of-file and the lock is released: a killed deploy never leaves a stale lock.
"""

from __future__ import annotations

import getpass
import os
import selectors
import socket
import subprocess
import time
from datetime import datetime, timezone

from deployer.errors import DeployerError
from deployer.hosts.commands import sh
from deployer.hosts.executor import Result

LOCK_DIR = "/run/lock/deployer"
BUSY = 75  # flock -E: the lock is held by someone else

# The directory must be ours alone (it lies in a world-writable place): one planted by another
# user, or a symlink, could point the lock or holder file at any file we would then write.
_SCRIPT = """umask 077; mkdir -p "$3" 2>/dev/null
if [ -L "$3" ] || [ ! -d "$3" ] || [ "$(stat -c %u "$3")" != "$(id -u)" ]; then
  echo "refusing the lock directory $3: it is not a directory owned by $(id -un); remove it (another user or a symlink made it)" >&2; exit 1
fi
chmod 0700 "$3" && cd "$3" || exit 1
exec 9>>"$1.lock"
if ! flock -n 9; then cat "$1.holder" 2>/dev/null; exit {BUSY}; fi
printf '%s\\n' "$2" >"$1.holder"
echo locked
exec cat >/dev/null
""".replace("{BUSY}", str(BUSY))


class LockedError(DeployerError):
    """Another deploy, update or destroy of the same deployment is running."""


def operator() -> str:
    """Who is acting, as written into the lock and the audit log."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


class HubLock:
    def __init__(self, ex, name: str, action: str, timeout: float = 60, directory: str = LOCK_DIR):
        self.ex, self.name, self.action, self.timeout, self.directory = ex, name, action, timeout, directory
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> "HubLock":
        who = f"{self.action} by {operator()} (pid {os.getpid()}) since {datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC"
        command = sh(_SCRIPT, self.name, who, self.directory, why="hold the deploy lock")
        proc = self.ex.hold(command)
        first = _first_line(proc, self.timeout)  # "locked", or the holder followed by exit 75
        if first.strip() == b"locked":
            self._proc = proc
            return self
        try:
            out, errors = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:  # no answer within the timeout: give up on it
            proc.kill()
            out, errors = proc.communicate(timeout=10)
        holder = (first + out).decode(errors="replace").strip()
        if proc.returncode == BUSY:
            raise LockedError(f"{self.ex.host}: another run holds the lock of {self.name}: {holder or 'unknown holder'}; "
                              "wait for it to finish (the lock goes away by itself when that process ends)")
        self.ex.check_connect(Result(proc.returncode, holder, errors.decode(errors="replace")))
        raise DeployerError(f"{self.ex.host}: could not take the deploy lock {self.directory}/{self.name}.lock: "
                            f"{errors.decode(errors='replace').strip()[-300:] or holder or 'no answer'}")

    def __exit__(self, *exc) -> None:
        if self._proc is not None:
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
            self._proc = None


def _first_line(proc: subprocess.Popen, timeout: float) -> bytes:
    """What the process printed up to its first newline (or exit, or the timeout)."""
    data = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while b"\n" not in data:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                break
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            data += chunk
    return data
