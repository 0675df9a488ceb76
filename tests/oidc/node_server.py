"""A node script serving on loopback for tests: started, awaited until it prints ``READY <fields>``,
its output kept for failure messages, and stopped so that no node process outlives the tests.

Shared by the two OpenID Connect providers of the test tree (``oidc/harness.py``, ``oidc_mock/harness.py``).
"""

from __future__ import annotations

import atexit
import subprocess
import threading
import time
from pathlib import Path

#: Servers started and not yet stopped; stopped at interpreter exit.
_LIVE: "set[NodeServer]" = set()


@atexit.register
def _stop_all() -> None:
    for server in list(_LIVE):
        server.stop()


class NodeServer:
    """``node SCRIPT`` in the script's folder with ``env``; ``start()`` returns the fields of its READY line.

    ``hold_stdin``: node gets a pipe as stdin and the script exits when it closes, so it dies with this
    process even after a SIGKILL. ``error`` is the exception type raised when it fails to start."""

    def __init__(self, script: Path, name: str, *, error: type[Exception] = RuntimeError, hold_stdin: bool = False) -> None:
        self.script = script
        self.name = name
        self.error = error
        self.hold_stdin = hold_stdin
        self._proc: subprocess.Popen[str] | None = None
        self._lines: list[str] = []  # stdout and stderr of node, as they came
        self._lines_lock = threading.Lock()
        self._ready = threading.Event()
        self._fields: list[str] = []
        self._threads: list[threading.Thread] = []

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def output(self) -> str:
        """Everything node printed so far (stdout and stderr interleaved)."""
        with self._lines_lock:
            return "".join(self._lines)

    def start(self, env: dict[str, str], timeout: float) -> list[str]:
        self._lines = []
        self._ready.clear()
        self._proc = subprocess.Popen(
            ["node", str(self.script)],
            cwd=self.script.parent,
            env=env,
            stdin=subprocess.PIPE if self.hold_stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        _LIVE.add(self)
        self._threads = [threading.Thread(target=self._pump, args=(stream, stream is self._proc.stdout), daemon=True)
                         for stream in (self._proc.stdout, self._proc.stderr)]
        for thread in self._threads:
            thread.start()
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.05):
            if self._proc.poll() is not None:
                for thread in self._threads:
                    thread.join(2)
                rc = self._proc.returncode
                self._proc = None
                _LIVE.discard(self)
                raise self.error(f"the {self.name} exited (code {rc}) before it was ready:\n{self.output}")
            if time.monotonic() > deadline:
                self.stop()
                raise self.error(f"the {self.name} was not ready within {timeout:.0f} s:\n{self.output}")
        return self._fields

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        _LIVE.discard(self)
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()  # SIGTERM: the scripts close their servers and exit 0
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc.stdin is not None:
            try:
                proc.stdin.close()
            except OSError:
                pass
        for thread in self._threads:
            thread.join(2)

    def _pump(self, stream, is_stdout: bool) -> None:
        for line in stream:
            with self._lines_lock:
                self._lines.append(line)
            if is_stdout and not self._ready.is_set() and line.startswith("READY "):
                self._fields = line.split()[1:]
                self._ready.set()
        stream.close()


class NodeBacked:
    """Lifecycle of a test server backed by ``self._node`` (a NodeServer); subclasses define ``start()``."""

    _node: NodeServer

    def start(self):  # pragma: no cover - defined by subclasses
        raise NotImplementedError

    def stop(self) -> None:
        self._node.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._node.running

    @property
    def output(self) -> str:
        """Everything node printed so far (stdout and stderr interleaved): for failure messages."""
        return self._node.output
