"""A real JupyterHub process for tests: our plugins loaded by entry point, behind the real
configurable-http-proxy, driven over HTTP like a browser would."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx

JUPYTERHUB = Path(sys.executable).with_name("jupyterhub")
TINY_SERVER = Path(__file__).with_name("tiny_server.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HubProcess:
    """``jupyterhub -f <generated config>`` in ``workdir``; ``config`` is extra Python config text.

    A service token with admin scopes (``admin_token``) lets tests inspect users,
    auth state and servers through the real REST API.
    """

    def __init__(self, workdir: Path, config: str, *, start_timeout: float = 60.0, umask: int = 0o022):
        self.umask = umask  # the hub process's umask: modes must not depend on it
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_token = secrets.token_hex(16)
        self.start_timeout = start_timeout
        self.config = config
        self.log_path = workdir / "jupyterhub.log"
        self.proc: subprocess.Popen | None = None

    def _config_text(self) -> str:
        base = f"""
        c.JupyterHub.ip = "127.0.0.1"
        c.JupyterHub.port = {self.port}
        c.JupyterHub.hub_ip = "127.0.0.1"
        c.JupyterHub.hub_port = {free_port()}
        c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{free_port()}"
        c.ConfigurableHTTPProxy.should_start = True
        c.JupyterHub.db_url = "sqlite:///{self.workdir}/jupyterhub.sqlite"
        c.JupyterHub.cookie_secret_file = "{self.workdir}/cookie_secret"
        c.CryptKeeper.keys = [{secrets.token_bytes(32)!r}]
        c.JupyterHub.cleanup_servers = True
        c.JupyterHub.load_roles = [{{
            "name": "test-admin", "services": ["test-admin"],
            "scopes": ["admin:users", "admin:servers", "admin:auth_state", "read:users", "tokens"],
        }}]
        c.JupyterHub.services = [{{"name": "test-admin", "api_token": "{self.admin_token}"}}]
        c.JupyterHub.spawner_class = "simple"
        c.Spawner.cmd = [{sys.executable!r}, {str(TINY_SERVER)!r}]
        c.Spawner.environment = {{"DEPLOYER_TEST_RECORD_DIR": "{self.workdir}"}}
        c.Spawner.start_timeout = 20
        c.Spawner.http_timeout = 20
        """
        return textwrap.dedent(base) + "\n" + textwrap.dedent(self.config)

    def start(self) -> "HubProcess":
        (self.workdir / "jupyterhub_config.py").write_text(self._config_text())
        log = open(self.log_path, "wb")
        env = {**os.environ, "PATH": f"{JUPYTERHUB.parent}:{os.environ.get('PATH', '')}"}
        self.proc = subprocess.Popen([str(JUPYTERHUB), "-f", "jupyterhub_config.py"], cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True, umask=self.umask)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyterhub exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/hub/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"jupyterhub did not answer within {self.start_timeout} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    def __enter__(self) -> "HubProcess":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"token {self.admin_token}"}
        return httpx.request(method, f"{self.url}/hub/api{path}", headers=headers, timeout=30, **kwargs)

    def browser(self) -> httpx.Client:
        """A cookie-keeping client that does not follow redirects (tests look at each hop)."""
        return httpx.Client(base_url=self.url, follow_redirects=False, timeout=30)
