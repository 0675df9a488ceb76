"""Docker names a deployment produces fit Docker's limits, stay unique and stay stable."""

from __future__ import annotations

import itertools

import pytest

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


class _Named(TenantSwarmSpawner):
    server_name = ""

    @property
    def name(self) -> str:  # (JupyterHub reads a named server's name from its database)
        return self.server_name


def _spawner_name(prefix: str, user: str, server: str = "") -> str:
    spawner = _Named(prefix=prefix)
    spawner.server_name = server
    spawner.user = type("U", (), {"name": user})()
    return spawner.object_name


def _unescaped(escaped: str) -> str | None:
    """The username dockerspawner's escaping turns into ``escaped``, or None (escapes are '-' and two hex digits)."""
    out, i = "", 0
    while i < len(escaped):
        if escaped[i] == "-":
            code = escaped[i + 1:i + 3]
            if len(code) < 2 or any(c not in "0123456789abcdef" for c in code) or chr(int(code, 16)).isalnum():
                return None  # (letters and digits are never escaped)
            out, i = out + chr(int(code, 16)), i + 3
        else:
            out, i = out + escaped[i], i + 1
    return out


def test_no_username_gets_the_service_name_of_another_users_shortened_one() -> None:
    """Issue 21: a tenant where users pick their usernames. The attacker looks for a long name whose shortened
    service name is also the plain service name of some username she can register, to stop that server or take
    its route. Generated here: for each of many long victims, the username whose escaped form is the victim's
    service name after the prefix (with the old '-<digest>' form, some 2 % of victims have one)."""
    from deployer_hub import paths

    import hashlib

    prefix = "jupyterhub-prod-designsafe-nb"
    pairs = 0
    for i in range(2000):
        victim = f"firstname.lastname.department{i}@utexas.edu"
        full = f"{prefix}-{TenantSwarmSpawner._escape(victim)}"
        old_form = f"{full[:63 - 9].rstrip('-')}-{hashlib.sha256(full.encode()).hexdigest()[:8]}"  # before issue 21
        attacker = _unescaped(old_form[len(prefix) + 1:])
        try:
            attacker = attacker and paths.safe_component(attacker)
        except paths.UnsafeName:
            continue
        if attacker:  # a username the tenant could hand out, whose plain service name was the victim's
            pairs += 1
            assert f"{prefix}-{TenantSwarmSpawner._escape(attacker)}" == old_form
            assert _spawner_name(prefix, attacker) != _spawner_name(prefix, victim)
    assert pairs > 10  # the old form's pairs were generated, and checked


def test_shortened_names_are_never_plain_names() -> None:
    for user, server in itertools.product(["jdoe", "a" * 60, "x.-_@+y" * 8], ["", "exp1", "s" * 40]):
        name = _spawner_name("jupyterhub-prod-designsafe-nb", user, server)
        assert (names.SHORTENED in name) == (len(f"jupyterhub-prod-designsafe-nb-{TenantSwarmSpawner._escape(user)}" + (f"--{server}" if server else "")) > 63)


@pytest.mark.parametrize("instance, tenant", [("nb", "designsafe"), ("prod", "nb"), ("prod", "x-nbenv"), ("nb-x", "designsafe")])
def test_a_deployment_name_with_a_part_the_proxys_prefixes_use_is_refused(site, instance: str, tenant: str) -> None:
    """jupyterhub-prod-x and jupyterhub-prod-x-nb-y on one swarm: the first's Docker proxy allows jupyterhub-prod-x-nb-...,
    which are the second's objects. No deployment name has such a part, so the prefixes delimit themselves."""
    scope = f"jupyterhub.{instance}.{tenant}"
    configs, hosts, passwords = base_configs(), base_hosts(), base_passwords()
    configs[scope] = dict(configs.pop(SCOPE), tenant=tenant, tenant_type="agave", jupyterhub_tenant_base_url="https://api.example.org")
    hosts[scope] = hosts.pop(SCOPE)
    passwords[scope] = passwords.pop(SCOPE)
    result = run_cli(["-i", instance, "-t", tenant, "validate"], site(configs=configs, hosts=hosts, passwords=passwords).path)
    assert result.exit_code == 2, result.output
    assert f"site.configs: {scope}: the deployment's name 'jupyterhub-{instance}-{tenant}' has a part" in result.stderr
    assert "Traceback" not in result.output + result.stderr
