"""The SSH executor names the host and what to check when it cannot connect."""

from __future__ import annotations

import os
import socket

import pytest

from deployer.errors import DeployerError
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



def test_the_ssh_control_directory_is_private_to_this_user(tmp_path, monkeypatch) -> None:
    """A control directory another user made (0777, theirs) could receive our ControlMaster socket or
    offer one of theirs: refused. Ours is made 0700."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    SSHExecutor("h", "192.0.2.1")
    made = tmp_path / "deployer-ssh"
    assert made.is_dir() and (os.stat(made).st_mode & 0o777) == 0o700 and os.stat(made).st_uid == os.getuid()
    os.chmod(made, 0o777)
    SSHExecutor("h", "192.0.2.1")
    assert (os.stat(made).st_mode & 0o777) == 0o700  # ours, loosened: tightened again
    os.chown(made, 65534, 65534)
    with pytest.raises(DeployerError, match=rf"refusing {made} for SSH control sockets: it is not a directory owned by you"):
        SSHExecutor("h", "192.0.2.1")
    os.rmdir(made)
    made.symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(DeployerError, match="refusing"):
        SSHExecutor("h", "192.0.2.1")
