"""Running commands on a remote host over SSH: the same gateway as LocalExecutor, another transport.

OpenSSH's own client, not a Python SSH library: it reads the operator's ssh config,
agent and known_hosts exactly as their own ``ssh`` does, and its connection sharing
(ControlMaster) makes each further command cost one round trip. Commands are quoted by
``shlex.join``; secret input travels on standard input, never on the command line.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import stat
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from deployer.config.model import LOCAL_HOSTS, Host
from deployer.errors import DeployerError
from deployer.hosts.commands import Command
from deployer.hosts.executor import Gateway, LocalExecutor, Result

if TYPE_CHECKING:
    from deployer.config.loader import Deployment

#: ssh exits 255 when it could not reach or authenticate to the host.
SSH_FAILURE = 255


class ConnectError(DeployerError):
    """A host cannot be reached or refuses our key: names the host and what to check."""

    def __init__(self, message: str, host: str = ""):
        super().__init__(message)
        self.host = host


def control_root() -> Path:
    """Where this user's SSH control sockets live: the per-user runtime directory when there is one."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return Path(runtime) if runtime and os.path.isdir(runtime) else Path.home() / ".cache"


def private_dir(path: Path) -> Path:
    """``path`` as a directory only this user can use (0700, ours, not a symlink), made if missing.
    Another user's directory there could receive our ControlMaster socket, or plant one of theirs."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.mkdir(mode=0o700, exist_ok=True)
        info = os.lstat(path)
    except OSError as error:
        raise DeployerError(f"cannot make the private directory {path}: {error.strerror}") from None
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise DeployerError(f"refusing {path} for SSH control sockets: it is not a directory owned by you "
                            "(another user or a symlink made it); remove it and run again")
    if info.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


class SSHExecutor(Gateway):
    def __init__(self, host_id: str, address: str, *, user: str = "root", port: int = 22, key: Path | None = None,
                 known_hosts: Path | None = None, connect_timeout: int = 10):
        self.host = host_id
        self.address = address
        self.user = user
        self.port = port
        self.key = key
        self.known_hosts = known_hosts
        self.connect_timeout = connect_timeout
        self.count = 0
        control_dir = private_dir(control_root() / "deployer-ssh")
        tag = hashlib.sha256(f"{user}@{address}:{port}".encode()).hexdigest()[:16]
        self._control = control_dir / tag

    def ssh_argv(self) -> list[str]:
        argv = [
            "ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout}",
            "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4",
            "-o", "ControlMaster=auto", "-o", f"ControlPath={self._control}", "-o", "ControlPersist=120",
            "-p", str(self.port), "-l", self.user,
        ]
        if self.key:
            argv += ["-i", str(self.key), "-o", "IdentitiesOnly=yes"]
        if self.known_hosts:
            argv += ["-o", f"UserKnownHostsFile={self.known_hosts}"]
        # Trust on first use, then insist: a changed host key stops the deploy.
        argv += ["-o", "StrictHostKeyChecking=accept-new"]
        return argv + [self.address]

    def argv_for(self, command: Command) -> list[str]:
        """The local argv that runs ``command`` on the host (for long-lived or piped processes)."""
        return self.ssh_argv() + ["--", shlex.join(command.argv)]

    def check_connect(self, result: Result) -> None:
        """Raises ConnectError when ssh itself failed (not the remote command exiting 255)."""
        if result.code == SSH_FAILURE and _is_ssh_error(result.stderr):
            reason = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "no answer"
            raise ConnectError(
                f"{self.host} ({self.user}@{self.address}:{self.port}): cannot connect over SSH: {reason}; "
                "check that the host is up, ssh_host/ssh_port are right and ssh_key is authorised for ssh_user",
                self.host,
            )

    def close(self) -> None:
        subprocess.run(["ssh", "-o", f"ControlPath={self._control}", "-O", "exit", self.address], capture_output=True, timeout=10)


def _is_ssh_error(stderr: str) -> bool:
    """Whether ssh itself failed (not the remote command exiting 255)."""
    markers = ("ssh: connect to host", "Connection refused", "Connection timed out", "Permission denied", "Could not resolve",
               "No route to host", "Host key verification failed", "Connection closed by", "kex_exchange_identification")
    return any(marker in stderr for marker in markers)


def executor_for(host: Host, deployment: Deployment) -> "LocalExecutor | SSHExecutor":
    """This machine (an ssh_host in LOCAL_HOSTS) runs its commands directly; every other host over SSH."""
    if host.ssh_host in LOCAL_HOSTS:
        executor = LocalExecutor()
        executor.host = host.host_id
        return executor
    return SSHExecutor(host.host_id, host.ssh_host, user=host.ssh_user, port=host.ssh_port, key=deployment.ssh_key_path(host),
                       known_hosts=deployment.known_hosts_path(host))
