"""The deploy lock: one holder at a time, the holder named, released however the holder ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

from deployer.errors import DeployerError
from deployer.hosts.executor import LocalExecutor
from deployer.hosts.lock import HubLock, LockedError

pytestmark = pytest.mark.local


def test_a_second_holder_is_refused_with_the_first_ones_name() -> None:
    name = f"test-{uuid.uuid4().hex[:8]}"
    with HubLock(LocalExecutor(), name, "deploy"):
        with pytest.raises(LockedError, match=rf"another run holds the lock of {name}: deploy by \S+@\S+ \(pid {os.getpid()}\)"):
            with HubLock(LocalExecutor(), name, "update"):
                pass
    with HubLock(LocalExecutor(), name, "update"):  # released on exit
        pass


def test_a_killed_holder_leaves_no_stale_lock() -> None:
    name = f"test-{uuid.uuid4().hex[:8]}"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from deployer.hosts.executor import LocalExecutor
        from deployer.hosts.lock import HubLock
        with HubLock(LocalExecutor(), {name!r}, "deploy"):
            print("held", flush=True)
            time.sleep(600)
    """)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(LockedError):
        with HubLock(LocalExecutor(), name, "deploy"):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    deadline = time.monotonic() + 10
    while True:
        try:
            with HubLock(LocalExecutor(), name, "deploy"):
                break
        except LockedError:
            assert time.monotonic() < deadline, "the lock outlived its killed holder"
            time.sleep(0.2)


def test_a_lock_directory_another_user_made_is_refused_and_its_symlink_never_written(tmp_path) -> None:
    """/run/lock is world-writable: a directory planted there by another user (here: nobody, 0777),
    with the holder file symlinked to a victim, must not be used; the victim stays as it was."""
    planted, victim = tmp_path / "deployer", tmp_path / "victim"
    victim.write_text("precious\n")
    planted.mkdir(mode=0o777)
    os.chmod(planted, 0o777)
    (planted / "demo.holder").symlink_to(victim)
    (planted / "demo.lock").symlink_to(victim)
    os.chown(planted, 65534, 65534)
    with pytest.raises(DeployerError, match=rf"could not take the deploy lock {planted}/demo.lock: refusing the lock directory {planted}: "
                                            "it is not a directory owned by"):
        with HubLock(LocalExecutor(), "demo", "deploy", directory=str(planted)):
            pass
    assert victim.read_text() == "precious\n"
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(DeployerError, match="refusing the lock directory"):
        with HubLock(LocalExecutor(), "demo", "deploy", directory=str(link)):
            pass
    fresh = tmp_path / "fresh"
    with HubLock(LocalExecutor(), "demo", "deploy", directory=str(fresh)):
        assert (os.stat(fresh).st_mode & 0o777) == 0o700
