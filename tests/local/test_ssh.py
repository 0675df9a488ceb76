"""The SSH executor names the host and what to check when it cannot connect."""

from __future__ import annotations

import socket

import pytest

from deployer.hosts.commands import cmd
from deployer.hosts.ssh import ConnectError, SSHExecutor

pytestmark = pytest.mark.local


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the with-block ends


def test_unreachable_host_is_one_clear_error() -> None:
    executor = SSHExecutor("worker7", "127.0.0.1", port=closed_port(), connect_timeout=3)
    with pytest.raises(ConnectError) as info:
        executor.run(cmd("docker", "info"))
    message = str(info.value)
    assert message.startswith("worker7 (root@127.0.0.1:")
    assert "cannot connect over SSH" in message and "Connection refused" in message
    assert "check that the host is up" in message

