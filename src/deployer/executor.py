"""Running commands: the one gateway to side effects on a host.

Pure layers produce :class:`~deployer.commands.Command` values; an executor runs them
on one host, returning output or raising :class:`RemoteCommandError` naming the host,
the command (input hidden) and the tail of its error output.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from typing import Protocol

from .commands import Command
from .errors import DeployerError


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

    def run(self, command: Command, *, check: bool = True, timeout: float = 600) -> Result: ...

    def argv_for(self, command: Command) -> list[str]: ...


class LocalExecutor:
    """Runs commands on this machine (the hub and worker of a local deployment)."""

    host = "localhost"

    def __init__(self) -> None:
        self.count = 0  # commands run, for benchmarks and "nothing to do" reports

    def argv_for(self, command: Command) -> list[str]:
        """The argv that runs ``command`` on this host (for long-lived or piped processes)."""
        return list(command.argv)

    def run(self, command: Command, *, check: bool = True, timeout: float = 600) -> Result:
        self.count += 1
        try:
            proc = subprocess.run(command.argv, input=command.input, capture_output=True, timeout=timeout)
        except FileNotFoundError:
            raise RemoteCommandError(self.host, command, 127, f"{command.argv[0]}: command not found") from None
        except subprocess.TimeoutExpired:
            raise RemoteCommandError(self.host, command, -1, f"timed out after {timeout:.0f} s") from None
        result = Result(proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"))
        if check and result.code != 0:
            raise RemoteCommandError(self.host, command, result.code, result.stderr or result.stdout)
        return result
