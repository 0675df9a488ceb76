"""Docker names a deployment produces fit Docker's limits, stay unique and stay stable."""

from __future__ import annotations

import itertools

from conftest import SCOPE, base_configs, base_hosts, base_passwords, run_cli
from deployer_hub import names
from deployer_hub.spawner import TenantSwarmSpawner

from deployer.config.hubsettings import Layout
from deployer.phases.hubservice import HubSpec

#: Every secret a hub can have (hub_spec's keys).
SECRET_FILES = ("oauth_client_secret", "tas_role_pass", "cookie_secret", "crypt_key", "ssl_key", "local_dev_password", "metrics_token")


def test_short_names_are_unchanged_and_long_ones_fit_uniquely() -> None:
    assert names.fit("jupyterhub-prod-designsafe-nb-jdoe") == "jupyterhub-prod-designsafe-nb-jdoe"
    prefix = "jupyterhub-production-designsafe-nb-"
    users = [f"{first}.{last}-40utexas-2eedu" for first, last in itertools.product(["firstname", "firstnamf", "a" * 30], ["lastname", "lastnamf", "b" * 30])]
    fitted = [names.fit(prefix + user) for user in users]
    assert all(len(n) <= names.SERVICE_NAME_MAX for n in fitted)
    assert len(set(fitted)) == len(fitted)  # no two users share a service
    assert fitted == [names.fit(prefix + user) for user in users]  # the same user always gets the same name
    many = {names.fit(prefix + "x" * 40 + str(i)) for i in range(20000)}
    assert len(many) == 20000


def test_a_long_username_gets_a_service_name_docker_accepts() -> None:
    spawner = TenantSwarmSpawner(prefix="jupyterhub-production-designsafe-nb")
    spawner.user = type("U", (), {"name": "firstname.lastname@utexas.edu"})()
    assert len(spawner.object_name) <= 63 and spawner.object_name.startswith("jupyterhub-production-designsafe-nb-firstname")


def test_config_and_secret_names_of_a_long_deployment_fit() -> None:
    spec = HubSpec(Layout("jupyterhub-production-designsafe"), "deployer/jupyterhub:0.2.0", {"x": 1},
                   {key: "value" for key in SECRET_FILES}, {"/srv/jupyterhub/tenant-ca.pem": "pem"})
    objects = [spec.config_name(p) for p in spec.config_files()] + [spec.secret_name(k) for k in SECRET_FILES]
    assert all(len(n) <= names.OBJECT_NAME_MAX for n in objects), [n for n in objects if len(n) > 64]
    assert len(set(objects)) == len(objects)


def test_a_deployment_whose_hub_service_name_is_too_long_is_refused(site) -> None:
    tenant = "t" * 50
    scope = f"jupyterhub.prod.{tenant}"
    configs, hosts, passwords = base_configs(), base_hosts(), base_passwords()
    configs[scope] = dict(configs.pop(SCOPE), tenant=tenant, tenant_type="agave", jupyterhub_tenant_base_url="https://api.example.org")
    hosts[scope] = hosts.pop(SCOPE)
    passwords[scope] = passwords.pop(SCOPE)
    result = run_cli(["-i", "prod", "-t", tenant, "validate"], site(configs=configs, hosts=hosts, passwords=passwords).path)
    assert result.exit_code == 2, result.output
    assert f"site.configs: {scope}: the hub service would be named 'jupyterhub-prod-{tenant}-hub' (70 characters); Docker allows 63" in result.stderr
