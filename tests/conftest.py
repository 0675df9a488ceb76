"""Shared fixtures: deployment directories written from data, and the CLI run as operators run it."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from deployer.cli import main

#: Secret values planted in every fixture deployment; no output may ever contain them.
CLIENT_SECRET = "S3CR3T-client-xyzzy"
TAS_PASSWORD = "S3CR3T-tas-plugh"
SECRET_VALUES = (CLIENT_SECRET, TAS_PASSWORD)

SCOPE = "jupyterhub.prod.designsafe"
HUB_HOST = "jupyter.example.org"


def make_cert(host: str = HUB_HOST, *, days: int = 90, start_days_ago: int = 1, key=None) -> tuple[str, str]:
    """A self-signed certificate and its unencrypted key, as PEM text."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=start_days_ago))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


def key_body(key_pem: str) -> list[str]:
    """The base64 lines of a PEM key: what a leak would show."""
    return [line for line in key_pem.splitlines() if line and not line.startswith("-----")]


def base_configs() -> dict[str, Any]:
    return {
        "jupyterhub": {
            "jupyterhub_image": "taccsciapps/jupyterhub:0.8.0",
            "jupyter_user_image": "taccsciapps/jupyteruser-ds:1.1.0",
            "use_stock_nfs": False,
        },
        SCOPE: {
            "jupyterhub_host": HUB_HOST,
            "jupyterhub_oauth_client_id": "client-id-123",
            "volume_mounts": [
                "/data/{tenant_id}/{username}:/home/jupyter/permanent:rw",
                "/data/shared:/home/jupyter/shared:ro",
            ],
        },
    }


def base_passwords() -> dict[str, Any]:
    return {SCOPE: {"jupyterhub_oauth_client_secret": CLIENT_SECRET}}


def base_hosts() -> dict[str, Any]:
    return {
        "ssh_user": "root",
        SCOPE: {
            "hosts": [
                {"host_id": "hub1", "ssh_host": "hub.example.org", "private_ip": "10.10.0.10", "roles": ["hub"]},
                {"host_id": "worker1", "ssh_host": "worker1.example.org", "private_ip": "10.10.0.11", "roles": ["worker"]},
                {"host_id": "worker2", "ssh_host": "worker2.example.org", "private_ip": "10.10.0.12", "roles": ["worker"]},
            ]
        },
    }


@dataclass
class Site:
    """A deployment directory on disk, written from plain data or raw text."""

    path: Path

    def write(self, name: str, content: Any, mode: int | None = None) -> Path:
        target = self.path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        text = content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False)
        target.write_text(text)
        if mode is None:
            mode = 0o600 if name.endswith(".passwords") else 0o644
        os.chmod(target, mode)
        return target


@pytest.fixture
def site(tmp_path: Path) -> Callable[..., Site]:
    """Factory: ``site(configs=..., passwords=..., hosts=...)``; None leaves a file out."""

    def make(configs: Any = "default", passwords: Any = "default", hosts: Any = "default") -> Site:
        s = Site(tmp_path)
        for name, content, default in (
            ("site.configs", configs, base_configs),
            ("site.passwords", passwords, base_passwords),
            ("site.hosts", hosts, base_hosts),
        ):
            if content is not None:
                s.write(name, default() if content == "default" else content)
        return s

    return make


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_cli(args: list[str], cwd: Path) -> Result:
    """Run the CLI in-process (fast) with ``cwd`` as the working directory."""
    runner = CliRunner()
    result = runner.invoke(main, ["-C", str(cwd), *args], prog_name="deployer", catch_exceptions=False)
    return Result(result.exit_code, result.stdout, result.stderr)


def run_deployer(args: list[str], cwd: Path, **kwargs: Any) -> subprocess.CompletedProcess:
    """Run the installed ``deployer`` console script, exactly as an operator would."""
    exe = Path(sys.executable).with_name("deployer")
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=60, **kwargs)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Two lanes under pytest-xdist (scripts/test: -n 2): the lab tier, whose hosts are Docker engines of their own
    in containers, and everything else. Each lane is one work unit, run in order by one process, so a tier's
    session fixtures (a deployment on this machine's swarm, the lab's hosts) exist once."""
    from xdist.scheduler import LoadScopeScheduling

    class Lanes(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "lab" if nodeid.startswith("tests/lab/") else "main"

    return Lanes(config, log)


#: A test that says how the lab stands in for real machines records it as the user property "notice";
#: the run's summary repeats each once (the property travels with the report from an xdist lane).
NOTICE = "notice"


def pytest_terminal_summary(terminalreporter) -> None:
    notices = [value for reports in terminalreporter.stats.values() for report in reports
               for key, value in getattr(report, "user_properties", ()) if key == NOTICE]
    for notice in dict.fromkeys(notices):
        terminalreporter.write_sep("-", "lab substitution")
        terminalreporter.write_line(notice)
