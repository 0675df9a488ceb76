"""Commands as data: what to run, with secrets only ever on standard input.

A :class:`Command` prints as a shell line with its input hidden, so logs and error
messages can show every command Deployer runs without showing a secret.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Command:
    argv: tuple[str, ...]
    #: Bytes for standard input (secret values go here, never into argv).
    input: bytes | None = field(default=None, repr=False)
    #: Why this command runs, for plans and progress output.
    why: str = ""
    #: What to print instead of argv when an argument must not be shown (a swarm join token).
    shown: str | None = field(default=None, repr=False)
    #: A command on this machine whose output is piped into this one (``docker save IMAGE``).
    source: tuple[str, ...] | None = None
    #: Seconds the command may take (installing packages, loading an image); None: the executor's default.
    timeout: float | None = None
    #: Whether a failure stops the run (removing an unused object still held by a notebook does not).
    check: bool = True
    #: Only plan sets it: the run decides, from what an earlier phase makes, whether this command is needed
    #: at all (a worker mounts the share unless it sees the marker the hub writes first).
    unless: str = ""
    #: What a failure means and how to fix it: the error then reads "<host>: <hint>: <the host's last error line>".
    hint: str = ""

    def __str__(self) -> str:
        text = self.shown if self.shown is not None else shlex.join(self.argv)
        if self.source is not None:
            text = f"{shlex.join(self.source)} | {text}"
        return f"{text} < (hidden input)" if self.input is not None else text


def cmd(*argv: str, input: bytes | None = None, why: str = "") -> Command:
    return Command(tuple(str(a) for a in argv), input, why)


def sh(script: str, *args: str, input: bytes | None = None, why: str = "") -> Command:
    """A short shell script (``sh -c``) for what one command cannot do; ``args`` are $1, $2, ..."""
    return Command(("sh", "-c", script, "sh", *args), input, why)
