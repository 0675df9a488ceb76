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
