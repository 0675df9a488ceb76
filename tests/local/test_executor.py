"""The executor gateway on this machine: commands, a local process streamed into a command, a
long-held process; each counted once, and every failure named."""

from __future__ import annotations

import pytest

from deployer.hosts.commands import cmd, sh
from deployer.hosts.executor import LocalExecutor, RemoteCommandError

pytestmark = pytest.mark.local


def test_a_local_process_is_streamed_into_a_command_and_both_outcomes_are_kept(tmp_path) -> None:
    ex = LocalExecutor()
    target = tmp_path / "copy"
    streamed = ex.stream_from(["sh", "-c", "head -c 3000000 /dev/zero; echo end"], sh('cat >"$1"', str(target)))
    assert streamed.result.code == 0 and streamed.source_code == 0
    assert target.stat().st_size == 3000004  # all of it, through a pipe (more than a pipe's buffer)
    failed = ex.stream_from(["sh", "-c", "echo partial; echo 'no such image' >&2; exit 3"], sh('cat >/dev/null'))
    assert (failed.source_code, failed.source_error.strip()) == (3, "no such image")
    assert ex.count == 2


def test_a_held_process_lives_until_its_input_closes() -> None:
    ex = LocalExecutor()
    proc = ex.hold(sh('echo ready; cat >/dev/null; echo done'))
    assert proc.stdout.readline() == b"ready\n"
    assert proc.poll() is None  # still held
    proc.stdin.close()
    assert proc.wait(timeout=10) == 0 and ex.count == 1


def test_a_failing_or_missing_command_names_the_host_and_the_command() -> None:
    ex = LocalExecutor()
    ex.host = "hub1"
    with pytest.raises(RemoteCommandError, match=r"hub1: `false` failed with exit code 1"):
        ex.run(cmd("false"))
    with pytest.raises(RemoteCommandError, match="no-such-program: command not found"):
        ex.run(cmd("no-such-program"))
    assert ex.run(cmd("false"), check=False).code == 1
