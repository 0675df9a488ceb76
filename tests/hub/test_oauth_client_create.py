"""`deployer oauth-client create` registers the hub's client with the tenant (simulated),
writes id and secret to the passwords file without showing the secret, and the client works."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from conftest import SCOPE, base_configs, base_hosts, run_deployer
from sim.tenant import TenantSimulator, complete_login

pytestmark = pytest.mark.hub

SERVICE = ("svc-account", "S3CR3T-service-pw")


@pytest.fixture
def tenant(tmp_path: Path):
    with TenantSimulator(tenant_id="sim").start() as sim:
        sim.add_user(*SERVICE)
        sim.add_user("jdoe", "pw-jdoe")
        yield sim


def site_for(tmp_path: Path, flavour: str, base_url: str) -> Path:
    configs = base_configs()
    configs[SCOPE].pop("jupyterhub_oauth_client_id")
    configs[SCOPE].update(tenant="sim", tenant_type=flavour, jupyterhub_tenant_base_url=base_url)
    (tmp_path / "site.configs").write_text(yaml.safe_dump(configs))
    (tmp_path / "site.hosts").write_text(yaml.safe_dump(base_hosts()))
    (tmp_path / "site.passwords").write_text(f"# operator's note: keep this comment\n{SCOPE}:\n  tas_role_pass: keep-me\n")
    os.chmod(tmp_path / "site.passwords", 0o640)
    return tmp_path


@pytest.mark.parametrize("flavour", ["agave", "tapis"])
def test_create_registers_writes_and_works(flavour: str, tenant: TenantSimulator, tmp_path: Path) -> None:
    base_url = tenant.agave_base_url if flavour == "agave" else tenant.tapis_base_url
    site = site_for(tmp_path, flavour, base_url)
    env = {**os.environ, "DEPLOYER_SERVICE_ACCOUNT": SERVICE[0], "DEPLOYER_SERVICE_PASSWORD": SERVICE[1]}
    result = run_deployer(["-i", "prod", "-t", "designsafe", "oauth-client", "create", "--yes"], site, env=env)
    assert result.returncode == 0, result.stderr
    assert "callback https://jupyter.example.org/hub/oauth_callback" in result.stdout
    passwords = site / "site.passwords"
    text = passwords.read_text()
    assert "# operator's note: keep this comment" in text and "keep-me" in text  # nothing of the operator's lost
    assert stat.S_IMODE(passwords.stat().st_mode) == 0o600
    stored = yaml.safe_load(text)[SCOPE]
    client_id, secret = stored["jupyterhub_oauth_client_id"], stored["jupyterhub_oauth_client_secret"]
    assert client_id in result.stdout
    assert secret not in result.stdout + result.stderr and SERVICE[1] not in result.stdout + result.stderr
    assert run_deployer(["-i", "prod", "-t", "designsafe", "validate"], site).returncode == 0

    # The registered client logs a user in at the tenant, with the promised callback.
    callback = "https://jupyter.example.org/hub/oauth_callback"
    authorize_path = "/authorize" if flavour == "agave" else "/v3/oauth2/authorize"
    query = httpx.QueryParams(client_id=client_id, redirect_uri=callback, response_type="code", state="s1")
    with httpx.Client(timeout=30) as browser:
        location = complete_login(browser, f"{base_url}{authorize_path}?{query}", "jdoe", "pw-jdoe")
    assert location.startswith(callback + "?")
    code = httpx.URL(location).params["code"]
    token_path = "/token" if flavour == "agave" else "/v3/oauth2/tokens"
    reply = httpx.post(f"{base_url}{token_path}", auth=(client_id, secret), data={"grant_type": "authorization_code", "code": code, "redirect_uri": callback})
    assert reply.status_code == 200, reply.text


def test_bad_service_password_is_one_clear_error(tenant: TenantSimulator, tmp_path: Path) -> None:
    site = site_for(tmp_path, "agave", tenant.agave_base_url)
    env = {**os.environ, "DEPLOYER_SERVICE_ACCOUNT": SERVICE[0], "DEPLOYER_SERVICE_PASSWORD": "wrong-password-123"}
    result = run_deployer(["-i", "prod", "-t", "designsafe", "oauth-client", "create", "--yes"], site, env=env)
    assert result.returncode == 1
    assert "answered HTTP 401: check the service account name and password" in result.stderr
    assert "Traceback" not in result.stderr and "wrong-password-123" not in result.stderr
    assert "jupyterhub_oauth_client_secret" not in (site / "site.passwords").read_text()


def test_refuses_without_a_terminal_or_yes(tenant: TenantSimulator, tmp_path: Path) -> None:
    site = site_for(tmp_path, "agave", tenant.agave_base_url)
    result = run_deployer(["-i", "prod", "-t", "designsafe", "oauth-client", "create"], site, stdin=subprocess.DEVNULL)
    assert result.returncode == 2 and "pass --yes" in result.stderr
    assert all("clients" not in path for _, path in tenant.requests)  # nothing was registered
