"""The tenant's CA bundle in notebooks: one content-addressed Docker config, named in hub.json,
attached by the spawner to every notebook service, its combined bundle the token files' `verify`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import docker.errors
import pytest
from conftest import CLIENT_SECRET, SCOPE, base_configs, make_cert
from deployer_hub.auth import UserFacingError
from deployer_hub.hubconfig import apply
from deployer_hub.spawner import NOTEBOOK_CA_BUNDLE, NOTEBOOK_TENANT_CA, TenantSwarmSpawner
from traitlets.config import Config

from deployer.config.discovery import discover
from deployer.config.loader import load
from deployer.config.hubsettings import TENANT_CA
from deployer.phases.base import Context
from deployer.phases.facts import HostFacts
from deployer.phases.hub import hub_spec
from deployer.phases.hubservice import SwarmFacts, object_commands, service_commands

CA = make_cert("Test tenant CA")[0]


def spec(site, tmp_path: Path, ca: str | None = CA, **keys):
    configs = base_configs()
    configs[SCOPE].update(keys)
    s = site(configs=configs)
    if ca is not None:
        s.write("extras/tenant-ca.pem", ca)
        configs[SCOPE]["tenant_ca_bundle"] = "tenant-ca.pem"
        s.write("site.configs", configs)
    deployment = load(discover(s.path), "jupyterhub", "prod", "designsafe").deployments[0]
    kept = {"cookie_secret": "c" * 64, "crypt_key": "k" * 64, "name_key": "n" * 64, "tls/cert.pem": "-----BEGIN CERTIFICATE-----\n", "tls/key.pem": "-----BEGIN PRIVATE KEY-----\n"}
    return hub_spec(Context.of(deployment), HostFacts(state=kept))[0]


def test_the_notebooks_get_the_hubs_tenant_ca_config_by_name(site, tmp_path: Path) -> None:
    hub = spec(site, tmp_path)
    name = hub.settings["notebooks"]["ca_config"]
    assert name == hub.config_name(TENANT_CA)  # the same object as the hub's tenant-ca.pem
    assert name.startswith("jupyterhub-prod-designsafe-tenant-ca-pem-")  # labelled and removed with the others
    created = [c for c in object_commands(hub, SwarmFacts()) if c.argv[:3] == ("docker", "config", "create")]
    assert any(name in c.argv and c.input == CA.encode() for c in created)
    # hub.json names it, so a new CA means a new hub.json config and a new hub
    assert name in hub.config_files()[f"{TENANT_CA.rsplit('/', 1)[0]}/hub.json"]


def test_a_changed_ca_gets_a_new_name_and_nothing_changes_without_a_change(site, tmp_path: Path) -> None:
    first = spec(site, tmp_path)
    again = spec(site, tmp_path)
    other = spec(site, tmp_path, ca=make_cert("Another CA")[0])
    assert first.settings["notebooks"]["ca_config"] == again.settings["notebooks"]["ca_config"]
    assert first.spec_hash == again.spec_hash
    assert other.settings["notebooks"]["ca_config"] != first.settings["notebooks"]["ca_config"]
    facts = SwarmFacts({first.layout.network}, {first.secret_name(k) for k in first.secrets},
                       {first.config_name(p) for p in first.config_files()}, first.spec_hash)
    assert object_commands(again, facts) + service_commands(again, facts) == []


def test_no_tenant_ca_no_notebook_config(site, tmp_path: Path) -> None:
    assert spec(site, tmp_path, ca=None).settings["notebooks"].get("ca_config") is None


def applied(tmp_path: Path, settings: dict) -> Config:
    secrets = tmp_path / "secrets"
    secrets.mkdir(exist_ok=True)
    for name, value in (("oauth_client_secret", CLIENT_SECRET), ("cookie_secret", "c" * 64), ("crypt_key", "0" * 64)):
        (secrets / name).write_text(value)
    (tmp_path / "hub.json").write_text(json.dumps(settings))
    c = Config()
    apply(c, str(tmp_path / "hub.json"), str(secrets))
    return c


def test_hubconfig_gives_the_spawner_the_config_and_the_authenticator_the_bundle_path(site, tmp_path: Path) -> None:
    hub = spec(site, tmp_path)
    c = applied(tmp_path, hub.settings)
    assert c.TenantSwarmSpawner.ca_config == hub.settings["notebooks"]["ca_config"]
    assert c.TenantSwarmSpawner.ca_bundle_path == NOTEBOOK_CA_BUNDLE
    assert c.TenantOAuthenticator.notebook_ca_bundle == NOTEBOOK_CA_BUNDLE  # reaches Agave, Tapis and OIDC alike
    plain = applied(tmp_path, spec(site, tmp_path, ca=None).settings)
    assert "ca_config" not in plain.TenantSwarmSpawner and "notebook_ca_bundle" not in plain.TenantOAuthenticator


class FakeDocker:
    def __init__(self, configs: dict[str, str]):
        self.configs = configs

    def __call__(self, method: str, name: str):
        assert method == "inspect_config"
        if name not in self.configs:
            raise docker.errors.NotFound("no such config")
        future = asyncio.get_running_loop().create_future()
        future.set_result({"ID": self.configs[name], "Spec": {"Name": name}})
        return future


def test_the_spawner_attaches_the_config_by_id_and_name(monkeypatch) -> None:
    spawner = TenantSwarmSpawner(ca_config="hub-tenant-ca-pem-abc")
    monkeypatch.setattr(spawner, "docker", FakeDocker({"hub-tenant-ca-pem-abc": "cfg123"}))
    refs = asyncio.run(spawner.ca_configs())
    assert refs == [{"ConfigName": "hub-tenant-ca-pem-abc", "ConfigID": "cfg123",
                     "File": {"Name": NOTEBOOK_TENANT_CA, "UID": "0", "GID": "0", "Mode": 0o444}}]


def test_without_a_config_nothing_is_attached_and_a_missing_one_is_explained(monkeypatch) -> None:
    assert asyncio.run(TenantSwarmSpawner().ca_configs()) == []
    spawner = TenantSwarmSpawner(ca_config="gone")
    monkeypatch.setattr(spawner, "docker", FakeDocker({}))
    with pytest.raises(UserFacingError, match="CA certificates are missing"):
        asyncio.run(spawner.ca_configs())
