"""Fixtures of the hub tier: the tenant simulator, real hubs using our authenticators, logins."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from hub.flows import CLIENT_ID, CLIENT_SECRET, TAS_ROLE
from hub.harness import HubProcess
from sim.tenant import TenantSimulator


@pytest.fixture(scope="module")
def sim():
    with TenantSimulator(tenant_id="sim").start() as simulator:
        simulator.add_user("JDoe", "pw-jdoe", uid=5001, gid=6001, home_directory="05/12345/jdoe", email="jdoe@example.org")
        simulator.add_user("nouid", "pw-nouid")
        simulator.add_user("../evil", "pw-evil", uid=5002, gid=6002)
        simulator.add_tas_role_account(*TAS_ROLE)
        yield simulator


def authenticator_config(flavour: str, sim: TenantSimulator, hub: HubProcess, *, secret: str = CLIENT_SECRET, extra: str = "",
                         case_insensitive: bool = True) -> str:
    """Our authenticator against the simulator. ``case_insensitive``: the tenant declared so, as
    TACC's (JDoe and jdoe are one account there); the hub's default is False."""
    base_url = sim.agave_base_url if flavour == "agave" else sim.tapis_base_url
    cls = "AgaveOAuthenticator" if flavour == "agave" else "TapisOAuthenticator"
    return textwrap.dedent(f"""
    from deployer_hub.auth import page_notice
    c.JupyterHub.template_vars = {{"announcement": page_notice}}
    c.JupyterHub.authenticator_class = "{flavour}"
    c.{cls}.username_case_insensitive = {case_insensitive}
    c.{cls}.tenant_id = "sim"
    c.{cls}.tenant_base_url = "{base_url}"
    c.{cls}.client_id = "{CLIENT_ID}"
    c.{cls}.client_secret = "{secret}"
    c.{cls}.oauth_callback_url = "{hub.url}/hub/oauth_callback"
    c.{cls}.allow_all = True
    c.{cls}.token_root = "{hub.workdir / 'tokens'}"
    c.Authenticator.auth_refresh_age = 1
    """) + textwrap.dedent(extra)


@pytest.fixture
def start_hub(tmp_path: Path, sim: TenantSimulator):
    hubs: list[HubProcess] = []

    def start(flavour: str, *, umask: int = 0o022, **kwargs) -> HubProcess:
        workdir = tmp_path / f"hub{len(hubs)}"
        workdir.mkdir()
        hub = HubProcess(workdir, "", umask=umask)
        hub.config = authenticator_config(flavour, sim, hub, **kwargs)
        sim.add_client(CLIENT_ID, CLIENT_SECRET, f"{hub.url}/hub/oauth_callback")
        hubs.append(hub.start())
        return hub

    yield start
    for hub in hubs:
        hub.stop()
