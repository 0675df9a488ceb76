"""Configuration keys end to end: the configs file → hub.json (hubsettings) → the authenticator's traits (hubconfig)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import CLIENT_SECRET, SCOPE, TAS_PASSWORD, base_configs, run_cli
from deployer_hub.hubconfig import apply
from traitlets.config import Config

from deployer.config.discovery import discover
from deployer.config.hubsettings import Layout, settings
from deployer.config.loader import load

OIDC = {"tenant_type": "oidc", "jupyterhub_tenant_base_url": "https://id.example.org/realms/hub"}
TAS_ON = {"use_tas_uid": True, "use_tas_gid": True, "tas_role_account": "jhub-role"}


def hub_json(site, **keys) -> dict:
    configs = base_configs()
    configs[SCOPE].update(keys)
    passwords = {SCOPE: {"jupyterhub_oauth_client_secret": CLIENT_SECRET, "tas_role_pass": TAS_PASSWORD}}
    loaded = load(discover(site(configs=configs, passwords=passwords).path), "jupyterhub", "prod", "designsafe")
    deployment = loaded.deployments[0]
    return settings(deployment, Layout.of(deployment))


def applied(tmp_path: Path, hub: dict) -> Config:
    """``hubconfig.apply`` on a fresh traitlets Config, with hub.json and the secret files in tmp_path."""
    secrets = tmp_path / "secrets"
    secrets.mkdir(exist_ok=True)
    for name, value in (("oauth_client_secret", CLIENT_SECRET), ("tas_role_pass", TAS_PASSWORD),
                        ("cookie_secret", "c" * 64), ("crypt_key", "0" * 64), ("metrics_token", "secret-metrics_token")):
        (secrets / name).write_text(value)
    path = tmp_path / "hub.json"
    path.write_text(json.dumps(hub))
    c = Config()
    apply(c, str(path), str(secrets))
    return c


def test_defaults_reach_hub_json_and_the_authenticator(site, tmp_path: Path) -> None:
    hub = hub_json(site)
    assert hub["tenant"]["case_insensitive"] is False
    assert hub["tenant"]["username_claim"] is None  # designsafe is an Agave tenant: no claim to ask for
    assert hub["tas"]["min_id"] == 1000
    a = applied(tmp_path, hub).AgaveOAuthenticator
    assert a.username_case_insensitive is False
    assert a.tas_min_id == 1000
    assert a.identity_db == "/srv/jupyterhub/data/identities.sqlite"
    assert "username_claim" not in a  # oauthenticator's own default stays for Agave and Tapis


def test_set_values_reach_hub_json_and_the_authenticator(site, tmp_path: Path) -> None:
    hub = hub_json(site, tenant_case_insensitive=True, tas_min_id=500, **TAS_ON)
    assert (hub["tenant"]["case_insensitive"], hub["tas"]["min_id"]) == (True, 500)
    a = applied(tmp_path, hub).AgaveOAuthenticator
    assert (a.username_case_insensitive, a.tas_min_id) == (True, 500)
    assert (a.use_tas_uid, a.tas_role_password) == (True, TAS_PASSWORD)


def test_tapis_tenant_gets_no_claim(site, tmp_path: Path) -> None:
    hub = hub_json(site, tenant_type="tapis")
    assert hub["tenant"]["username_claim"] is None
    assert "username_claim" not in applied(tmp_path, hub).TapisOAuthenticator


@pytest.mark.parametrize(("keys", "claim"), [({}, "preferred_username"), ({"oidc_username_claim": "email"}, "email"),
                                             ({"oidc_username_claim": "urn:example:uid"}, "urn:example:uid")])
def test_oidc_claim_reaches_hub_json_and_the_authenticator(site, tmp_path: Path, keys: dict, claim: str) -> None:
    hub = hub_json(site, **OIDC, **keys)
    assert (hub["tenant"]["flavour"], hub["tenant"]["username_claim"]) == ("oidc", claim)
    c = applied(tmp_path, hub)
    assert c.JupyterHub.authenticator_class.__name__ == "TenantOIDCAuthenticator"
    assert c.TenantOIDCAuthenticator.username_claim == claim
    assert c.TenantOIDCAuthenticator.identity_db == "/srv/jupyterhub/data/identities.sqlite"


def test_hub_json_from_before_these_keys_still_loads(site, tmp_path: Path) -> None:
    hub = hub_json(site, **OIDC)
    for key in ("case_insensitive", "username_claim"):
        del hub["tenant"][key]
    del hub["tas"]["min_id"]
    a = applied(tmp_path, hub).TenantOIDCAuthenticator
    assert (a.username_case_insensitive, a.tas_min_id, a.username_claim) == (False, 1000, "preferred_username")



def test_tas_min_id_without_tas_is_a_warning_not_an_error(site) -> None:
    configs = base_configs()
    configs[SCOPE]["tas_min_id"] = 500
    result = run_cli(["-i", "prod", "-t", "designsafe", "validate"], site(configs=configs).path)
    assert result.exit_code == 0, result.output
    assert f"site.configs: {SCOPE}/tas_min_id: ignored: use_tas_uid and use_tas_gid are false" in result.stderr


def test_the_configuration_builds_a_real_authenticator(site, tmp_path: Path) -> None:
    """Every trait hubconfig sets exists on the authenticator (traitlets would only warn about a typo)."""
    from deployer_hub.auth import AgaveOAuthenticator, page_notice

    hub = hub_json(site, tenant_case_insensitive=True, tas_min_id=2000, **TAS_ON)
    hub["tenant"]["ca_bundle"] = None
    c = applied(tmp_path, hub)
    assert c.JupyterHub.template_vars["announcement"] is page_notice  # per-user notices on every page
    configured = set(c.AgaveOAuthenticator)
    authenticator = AgaveOAuthenticator(config=c)
    unknown = configured - set(authenticator.trait_names())
    assert not unknown, f"hubconfig sets traits the authenticator does not have: {unknown}"
    assert (authenticator.username_case_insensitive, authenticator.tas_min_id, authenticator.use_tas_gid) == (True, 2000, True)


def test_the_proxy_reaches_the_hub_over_loopback_the_notebooks_by_service_name(site, tmp_path: Path) -> None:
    """The proxy (in the hub's container) needs no DNS lookup per request; notebooks (elsewhere) use the service name."""
    from deployer_hub.spawner import TenantSwarmSpawner

    hub = hub_json(site)
    c = applied(tmp_path, hub)
    assert c.JupyterHub.hub_connect_url == "http://127.0.0.1:8081"
    # Notebooks: through the hub API's relay, whose address outlives the hub's container (hubrelay).
    assert c.Spawner.hub_connect_url == f"http://{hub['hub']['service_name']}api:8081" == f"http://{hub['hub']['api_relay']}:8081"
    assert "hub_connect_url" in TenantSwarmSpawner.class_trait_names()  # JUPYTERHUB_API_URL in the notebook comes from it


def test_the_spawners_settings_reach_its_traits(site, tmp_path: Path) -> None:
    """Every notebook key: configs file → hub.json → TenantSwarmSpawner's traits (defaults and set values)."""
    s = applied(tmp_path, hub_json(site)).TenantSwarmSpawner
    assert (s.start_timeout, s.task_timeout, s.pids_limit, s.node_down_timeout) == (180, 150, 4096, 15)
    assert s.client_kwargs == {"base_url": "unix:///run/deployer-proxy/docker.sock"}  # the Docker proxy, never the engine's socket
    assert (s.guard_label, s.guarded_port) == ("jupyterhub-prod-designsafe", 8889)
    s = applied(tmp_path, hub_json(site, notebook_start_timeout=600, notebook_pids_limit=512, notebook_memory_limit="2G")).TenantSwarmSpawner
    assert (s.start_timeout, s.task_timeout, s.pids_limit, s.mem_limit) == (600, 570, 512, 2 * 1024**3)



def test_the_http_redirect_names_a_port_only_when_browsers_need_one(site, tmp_path: Path) -> None:
    assert applied(tmp_path, hub_json(site)).ConfigurableHTTPProxy.command == ["configurable-http-proxy", "--redirect-port=80"]
    command = applied(tmp_path, hub_json(site, jupyterhub_host="jupyter.example.org:8443")).ConfigurableHTTPProxy.command
    assert command == ["configurable-http-proxy", "--redirect-port=80", "--redirect-to=8443"]


def _leaves(obj, prefix: str = "") -> set[str]:
    import dataclasses

    found = set()
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            found |= _leaves(value, f"{prefix}{f.name}.")
        else:
            found.add(f"{prefix}{f.name}")
    return found


def test_every_setting_round_trips_through_hub_json_and_reaches_the_hub(tmp_path: Path) -> None:
    """The typed contract: every field, set to a value other than its default, survives hub.json and
    lands where the hub uses it. A field added without wiring makes this test fail (the two sets)."""
    from deployer_hub.hubconfig import ADMIN_ROLE, ADMIN_SCOPES
    from deployer_hub.settings import (
        GuardSettings,
        HubSettings,
        NotebookSettings,
        OAuthSettings,
        ProfileSettings,
        ProjectMountSettings,
        Settings,
        StaticProject,
        TasSettings,
        TenantSettings,
    )

    profile = ProfileSettings(name="GPU", description="one GPU", image="img:gpu", gpus=1, users=["jdoe"])
    projects = ProjectMountSettings(host_path="/corral/{project_id}", container_path="/home/jupyter/projects", mode="ro",
                                    projects=[StaticProject("PRJ-1", "One", groups=["staff"])], api_url="https://t.example.org/projects")
    full = Settings(
        deployment="jupyterhub.prod.x", login="tenant",
        tenant=TenantSettings(id="x", flavour="oidc", base_url="https://id.example.org/realms/x", ca_bundle="/srv/jupyterhub/tenant-ca.pem",
                              case_insensitive=True, username_claim="email", groups_claim="roles"),
        oauth=OAuthSettings(client_id="cid", callback_url="https://h.example.org/hub/oauth_callback"),
        hub=HubSettings(host="h.example.org:8443", service_name="x-hub", api_relay="x-hubapi", data_dir="/data", https_port=4443, public_https_port=8443,
                        http_port=8080, ssl_cert="/c.pem", ssl_key="/run/secrets/ssl_key", metrics_scraper=True,
                        admin_users=["boss"], admin_groups=["staff"]),
        tas=TasSettings(use_uid=True, use_gid=True, url="https://tas.example.org/api", role_account="role", min_id=2000),
        notebooks=NotebookSettings(image="img:1", network="x-net", service_prefix="x-nb", volume_mounts=["/d/{username}:/home/jupyter/d:rw"],
                                   uid=5000, gid=6000, uid_range=[200000, 299999], memory_limit=2**31, pids_limit=999, start_timeout=600, node_down_timeout=25, offer_lab=False,
                                   cull_idle_timeout=7200, token_root="/share/tokens", managed_root="/share", constraints=["node.labels.a==b"],
                                   worker_label="a", mount_guard="x",
                                   docker_host="unix:///run/p.sock", guard=GuardSettings(label="x", port=9999), ca_config="x-ca",
                                   memory_guarantee=2**30, cpu_limit=2.0, cpu_guarantee=0.5, profiles=[profile], env={"LICENSE": "27000@lic"},
                                   secret_env={"KEY": "x-nbenv-key-1"}, allow_named_servers=True, named_server_limit=3,
                                   project_mounts=projects),
    )
    data = json.loads(json.dumps(full.to_dict()))
    assert Settings.from_dict(data) == full
    c = applied(tmp_path, data)
    a, s = c.TenantOIDCAuthenticator, c.TenantSwarmSpawner
    (admin_role,) = [r for r in c.JupyterHub.load_roles if r["name"] == ADMIN_ROLE]
    assert admin_role["scopes"] == ADMIN_SCOPES and not {"access:servers", "tokens", "admin:users", "admin:auth_state"} & set(ADMIN_SCOPES)
    where = {
        "deployment": full.deployment == "jupyterhub.prod.x",  # informational: the hub's log names it
        "login": c.JupyterHub.authenticator_class.__name__ == "TenantOIDCAuthenticator",
        "tenant.id": a.tenant_id == s.tenant_id == "x", "tenant.flavour": c.JupyterHub.authenticator_class.__name__ == "TenantOIDCAuthenticator",
        "tenant.base_url": a.tenant_base_url == "https://id.example.org/realms/x", "tenant.ca_bundle": a.tenant_ca_bundle == "/srv/jupyterhub/tenant-ca.pem",
        "tenant.case_insensitive": a.username_case_insensitive is True, "tenant.username_claim": a.username_claim == "email",
        "tenant.groups_claim": a.groups_claim == "roles" and a.manage_groups is True,
        "hub.admin_users": admin_role["users"] == ["boss"], "hub.admin_groups": admin_role["groups"] == ["staff"],
        "notebooks.memory_guarantee": s.mem_guarantee == 2**30, "notebooks.cpu_limit": s.cpu_limit == 2.0,
        "notebooks.cpu_guarantee": s.cpu_guarantee == 0.5, "notebooks.profiles": s.profiles == [profile],
        "notebooks.env": s.environment == {"LICENSE": "27000@lic"}, "notebooks.secret_env": s.secret_env == {"KEY": "x-nbenv-key-1"},
        "notebooks.allow_named_servers": c.JupyterHub.allow_named_servers is True,
        "notebooks.named_server_limit": c.JupyterHub.named_server_limit_per_user == 3, **{f"notebooks.project_mounts.{k}": s.project_mounts == projects  # the spawner takes the whole
           for k in ("host_path", "container_path", "mode", "projects", "api_url")},
        "oauth.client_id": a.client_id == "cid", "oauth.callback_url": a.oauth_callback_url == "https://h.example.org/hub/oauth_callback",
        "hub.host": full.hub.host == "h.example.org:8443",  # informational: the callback URL carries it
        "hub.service_name": full.hub.service_name == "x-hub",  # the hub service's name (without a relay, notebooks' hub address)
        "hub.api_relay": c.Spawner.hub_connect_url == "http://x-hubapi:8081", "hub.data_dir": c.JupyterHub.db_url == "sqlite:////data/jupyterhub.sqlite",
        "hub.https_port": c.JupyterHub.bind_url == "https://0.0.0.0:4443",
        "hub.public_https_port": "--redirect-to=8443" in c.ConfigurableHTTPProxy.command,
        "hub.http_port": "--redirect-port=8080" in c.ConfigurableHTTPProxy.command,
        "hub.ssl_cert": c.JupyterHub.ssl_cert == "/c.pem", "hub.ssl_key": c.JupyterHub.ssl_key == "/run/secrets/ssl_key",
        "hub.metrics_scraper": {"name": "metrics-scraper", "api_token": "secret-metrics_token"} in c.JupyterHub.services
                               and {"name": "metrics-scraper", "scopes": ["read:metrics"], "services": ["metrics-scraper"]} in c.JupyterHub.load_roles,
        "tas.use_uid": a.use_tas_uid is True, "tas.use_gid": a.use_tas_gid is True, "tas.url": a.tas_url == "https://tas.example.org/api",
        "tas.role_account": a.tas_role_account == "role", "tas.min_id": a.tas_min_id == 2000,
        "notebooks.image": s.image == "img:1", "notebooks.network": s.network_name == "x-net", "notebooks.service_prefix": s.prefix == "x-nb",
        "notebooks.volume_mounts": s.volume_mounts == ["/d/{username}:/home/jupyter/d:rw"],
        "notebooks.uid": s.notebook_uid == a.notebook_uid == 5000, "notebooks.gid": s.notebook_gid == a.notebook_gid == 6000,
        "notebooks.uid_range": a.notebook_uid_range == [200000, 299999],
        "notebooks.memory_limit": s.mem_limit == 2**31, "notebooks.pids_limit": s.pids_limit == 999,
        "notebooks.start_timeout": (s.start_timeout, s.task_timeout) == (600, 570), "notebooks.offer_lab": s.offer_lab is False,
        "notebooks.node_down_timeout": s.node_down_timeout == 25,
        "notebooks.cull_idle_timeout": "--timeout=7200" in c.JupyterHub.services[0]["command"],
        "notebooks.token_root": s.token_root == a.token_root == "/share/tokens", "notebooks.managed_root": s.managed_root == "/share",
        "notebooks.constraints": s.worker_constraints == ["node.labels.a==b"], "notebooks.worker_label": s.worker_label == "a",
        "notebooks.mount_guard": s.mount_guard == "x", "notebooks.docker_host": s.client_kwargs == {"base_url": "unix:///run/p.sock"},
        "notebooks.guard.label": s.guard_label == "x", "notebooks.guard.port": s.guarded_port == 9999,
        "notebooks.ca_config": s.ca_config == "x-ca",
        # None: no ACME service (its fields: test_an_acme_hub_serves_the_live_pair_through_the_reloading_proxy_and_runs_the_acme_service).
        "hub.acme": all(service["name"] != "acme" for service in c.JupyterHub.services),
    }
    assert set(where) == _leaves(full), sorted(set(where) ^ _leaves(full))
    assert [key for key, ok in where.items() if not ok] == []


def test_a_hub_json_key_the_hub_does_not_know_is_refused(site, tmp_path: Path) -> None:
    from deployer_hub.settings import Settings

    data = hub_json(site)
    data["notebooks"]["gpus"] = 2  # written by a newer deployer than this hub image
    with pytest.raises(ValueError, match="hub.json/notebooks: unknown keys gpus"):
        Settings.from_dict(data)


def test_an_acme_hub_serves_the_live_pair_through_the_reloading_proxy_and_runs_the_acme_service(site, tmp_path: Path) -> None:
    """jupyterhub_tls: acme: the proxy serves the data directory's pair (the self-signed one until the CA's
    is written there), loaded with tlsreload.js and without its own redirect port (the ACME service, which
    reads every acme field from hub.json, serves port 80)."""
    from deployer_hub import acmecert
    from deployer_hub.settings import Settings

    from deployer.phases.tls import self_signed

    data = hub_json(site)
    cert, key = self_signed("jupyter.example.org")
    (tmp_path / "cert.pem").write_text(cert)
    (tmp_path / "key.pem").write_text(key)
    data["hub"].update(data_dir=str(tmp_path / "data"), ssl_cert=str(tmp_path / "cert.pem"), ssl_key=str(tmp_path / "key.pem"), public_https_port=8443,
                       acme={"email": "ops@example.org", "directory": "https://acme.example.org/dir", "ca_bundle": "/srv/jupyterhub/acme-ca.pem",
                             "renew_days": 20})
    c = applied(tmp_path, data)
    live = tmp_path / "data" / "tls"
    assert (c.JupyterHub.ssl_cert, c.JupyterHub.ssl_key) == (str(live / "cert.pem"), str(live / "key.pem"))
    assert (live / "cert.pem").read_text() == cert and oct((live / "key.pem").stat().st_mode & 0o777) == "0o600"
    command = c.ConfigurableHTTPProxy.command
    assert command[:3] == ["node", "--require", str(Path(acmecert.__file__).with_name("tlsreload.js"))] and command[3].endswith("configurable-http-proxy")
    assert not any(arg.startswith("--redirect") for arg in command)
    service = next(s for s in c.JupyterHub.services if s["name"] == "acme")
    assert service["command"][1:3] == ["-m", "deployer_hub.acmecert"]
    acme = acmecert.Service(Settings.from_dict(json.loads(Path(service["command"][3]).read_text())))
    assert (acme.acme.email, acme.acme.directory, acme.acme.ca_bundle, acme.acme.renew_days) == (
        "ops@example.org", "https://acme.example.org/dir", "/srv/jupyterhub/acme-ca.pem", 20)
    assert acme.host == "jupyter.example.org" and acme.https_base == "https://jupyter.example.org:8443"
