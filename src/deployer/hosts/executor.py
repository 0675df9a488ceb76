"""Running commands: the one gateway to side effects on a host.

Pure layers produce :class:`~deployer.commands.Command` values; an executor runs them
on one host, returning output or raising :class:`RemoteCommandError` naming the host,
the command (input hidden) and the tail of its error output.
"""

from __future__ import annotations

import subprocess
import threading
from dataclasses import dataclass
from typing import Protocol

from deployer.errors import DeployerError
from deployer.hosts.commands import Command


class RemoteCommandError(DeployerError):
    def __init__(self, host: str, command: Command, code: int, stderr: str):
        tail = " | ".join(line for line in stderr.strip().splitlines()[-3:]) or "(no error output)"
        super().__init__(f"{host}: `{command}` failed with exit code {code}: {tail}")
        self.host, self.command, self.code, self.stderr = host, command, code, stderr


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


class Executor(Protocol):
    """Runs commands on one host (this machine, or over SSH): every side effect goes through one."""

    host: str
    count: int

    def run(self, command: Command, *, check: bool = True, timeout: float = 600) -> Result: ...

    def hold(self, command: Command) -> subprocess.Popen: ...

    def stream_from(self, source: list[str], command: Command, *, timeout: float = 1800) -> Streamed: ...


@dataclass
class Streamed:
    """What a local process piped into a command on the host gave: the host's result, and the source's."""

    result: Result
    source_code: int
    source_error: str


class Gateway:
    """The one way to a host's side effects; a transport says only how ``argv_for`` reaches the host and
    how a failure of the transport itself looks (``check_connect``)."""

    host = "localhost"

    def __init__(self) -> None:
        self.count = 0  # commands run, for benchmarks and "nothing to do" reports

    def argv_for(self, command: Command) -> list[str]:
        raise NotImplementedError

    def check_connect(self, result: Result) -> None:
        """Raise when the transport (not the command) failed; nothing to check on this machine."""

    def run(self, command: Command, *, check: bool = True, timeout: float = 600) -> Result:
        self.count += 1
        try:
            proc = subprocess.run(self.argv_for(command), input=command.input, capture_output=True, timeout=timeout)
        except FileNotFoundError:
            raise RemoteCommandError(self.host, command, 127, f"{command.argv[0]}: command not found") from None
        except subprocess.TimeoutExpired:
            raise RemoteCommandError(self.host, command, -1, f"timed out after {timeout:.0f} s") from None
        result = Result(proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"))
        self.check_connect(result)
        if check and result.code != 0:
            raise RemoteCommandError(self.host, command, result.code, result.stderr or result.stdout)
        return result

    def hold(self, command: Command) -> subprocess.Popen:
        """A long-held process on the host (the deploy lock): pipes for its input and output. Whoever
        holds it ends it by closing its input, so it ends with this process however that ends."""
        self.count += 1
        return subprocess.Popen(self.argv_for(command), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def stream_from(self, source: list[str], command: Command, *, timeout: float = 1800) -> Streamed:
        """``source`` (a local argv) piped into ``command`` on the host, nothing written to disk
        (``docker save IMAGE | <to the host> docker load``)."""
        self.count += 1
        producer = subprocess.Popen(source, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        errors: list[bytes] = []
        reader = threading.Thread(target=lambda: errors.append(producer.stderr.read()), daemon=True)
        reader.start()
        try:
            proc = subprocess.run(self.argv_for(command), stdin=producer.stdout, capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            producer.kill()
            raise RemoteCommandError(self.host, command, -1, f"timed out after {timeout:.0f} s") from None
        finally:
            producer.stdout.close()
            try:
                producer.wait(timeout=60)
            except subprocess.TimeoutExpired:
                producer.kill()
                producer.wait()
            reader.join(timeout=10)
        result = Result(proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"))
        self.check_connect(result)
        return Streamed(result, producer.returncode, b"".join(errors).decode(errors="replace"))


class LocalExecutor(Gateway):
    """Runs commands on this machine (a host of a deployment reached without SSH)."""

    def argv_for(self, command: Command) -> list[str]:
        return list(command.argv)
