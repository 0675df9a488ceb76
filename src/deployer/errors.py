"""The error hierarchy. The library raises these; only the CLI turns them into exit codes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong (or worth a warning) in the deployment files.

    ``source`` names the file (or ``-o`` for command-line overrides), ``path`` the
    scope and key path inside it, e.g. ``jupyterhub.prod.designsafe/volume_mounts/1``.
    The message says what is wrong and what to do; it never contains a secret value.
    """

    source: str
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.source}: {self.path}" if self.path else self.source
        return f"{where}: {self.message}"


class DeployerError(Exception):
    """Base of every error Deployer reports to the operator as one clean message."""

    exit_code = 1


class UsageError(DeployerError):
    """The command line asks for something that cannot be done as asked."""

    exit_code = 2


class ConfigError(DeployerError):
    """The deployment files are wrong. Carries every problem found, not just the first."""

    exit_code = 2

    def __init__(self, problems: list[Problem], warnings: list[Problem] | None = None):
        self.problems = list(problems)
        self.warnings = list(warnings or [])
        noun = "problem" if len(self.problems) == 1 else "problems"
        super().__init__(f"{len(self.problems)} {noun} in the deployment files")


class PreflightError(ConfigError):
    """The hosts are not ready (a port taken, a path missing, another swarm): found before anything
    changed, each named ``preflight on <host>``. Not a fault of the files, so not called one."""

    def __init__(self, problems: list[Problem]):
        super().__init__(problems)
        noun = "problem" if len(self.problems) == 1 else "problems"
        self.args = (f"preflight found {len(self.problems)} {noun} on the hosts; nothing was changed",)
