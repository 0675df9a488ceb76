"""The hub service plan: only what changed is done; secrets only ever on standard input."""

from __future__ import annotations

import json

import pytest
from conftest import CLIENT_SECRET, SCOPE, base_configs

from deployer.config.discovery import discover
from deployer.config.hubsettings import Layout, settings
from deployer.config.loader import load
from deployer.phases import notebooknet
from deployer.phases.hubservice import HubSpec, SwarmFacts, object_commands, service_commands, stale_commands


def spec_for(site, secret: str = CLIENT_SECRET) -> HubSpec:
    deployment = load(discover(site.path), "jupyterhub", "prod", "designsafe").deployments[0]
    layout = Layout.of(deployment)
    return HubSpec(layout, "deployer/jupyterhub:0.2.0", settings(deployment, layout),
                   {"oauth_client_secret": secret, "cookie_secret": "c" * 64, "crypt_key": "k" * 64, "ssl_key": "KEY"})


def everything(spec: HubSpec, facts: SwarmFacts):
    network = [] if spec.layout.network in facts.networks else [notebooknet.create_command(spec.layout.network, "10.128.0.0/19", spec.layout.name)]
    return network + object_commands(spec, facts) + service_commands(spec, facts)


def test_first_run_creates_everything_and_never_puts_a_secret_in_argv(site) -> None:
    spec = spec_for(site())
    commands = everything(spec, SwarmFacts())
    argvs = [" ".join(c.argv) for c in commands]
    assert argvs[0].startswith("docker network create --driver overlay --attachable")
    assert sum(a.startswith("docker secret create") for a in argvs) == 4
    assert argvs[-1].startswith("docker service create --detach --name jupyterhub-prod-designsafe-hub")
    assert not any(CLIENT_SECRET in a or "c" * 64 in a for a in argvs)
    assert any(c.input == CLIENT_SECRET.encode() for c in commands)
    assert all(CLIENT_SECRET not in str(c) for c in commands)  # printed form hides the input too


def test_second_run_with_nothing_changed_does_nothing(site) -> None:
    spec = spec_for(site())
    facts = SwarmFacts(
        networks={spec.layout.network},
        secrets={spec.secret_name(k) for k in spec.secrets},
        configs={spec.config_name(p) for p in spec.config_files()},
        hub_spec_hash=spec.spec_hash,
    )
    assert everything(spec, facts) == []


def test_a_changed_secret_gets_a_new_name_and_replaces_the_hub(site) -> None:
    s = site()
    old, new = spec_for(s), spec_for(s, secret="another-secret")
    facts = SwarmFacts({old.layout.network}, {old.secret_name(k) for k in old.secrets}, {old.config_name(p) for p in old.config_files()}, old.spec_hash)
    commands = everything(new, facts)
    assert [c.argv[:3] for c in commands] == [("docker", "secret", "create"), ("docker", "service", "create")]  # (hub.py wraps it: see hubreplace)
    assert commands[0].argv[-2] != old.secret_name("oauth_client_secret") and f"source={commands[0].argv[-2]},target=oauth_client_secret,mode=0400" in commands[1].argv


def test_settings_carry_no_secret(site) -> None:
    spec = spec_for(site())
    text = json.dumps(spec.settings)
    assert CLIENT_SECRET not in text
    assert spec.settings["tenant"] == {"id": "designsafe", "flavour": "agave", "base_url": "https://agave.designsafe-ci.org", "ca_bundle": None,
                                      "case_insensitive": False, "username_claim": None, "groups_claim": None}
    assert spec.settings["oauth"]["callback_url"] == "https://jupyter.example.org/hub/oauth_callback"
    assert spec.settings["notebooks"]["volume_mounts"][0] == "/data/{tenant_id}/{username}:/home/jupyter/permanent:rw"


def test_published_ports_other_than_443_still_bind_443_inside(site) -> None:
    deployment = load(discover(site().path), "jupyterhub", "prod", "designsafe").deployments[0]
    layout = Layout.of(deployment)
    hub = settings(deployment, layout, https_port=18443, http_port=18080)["hub"]
    assert (hub["https_port"], hub["http_port"]) == (443, 80)  # what the service's targets are
    assert hub["public_https_port"] == 18443  # redirects go where browsers reach the hub (jupyterhub_host names no port)
    argv = " ".join(service_commands(HubSpec(layout, "img", settings(deployment, layout), {"cookie_secret": "c"}, https_port=18443, http_port=18080), SwarmFacts())[-1].argv)
    assert "published=18443,target=443" in argv and "published=18080,target=80" in argv
    configs = base_configs()
    configs[SCOPE]["jupyterhub_host"] = "jupyter.example.org:8443"  # a port in front of the hosts (a load balancer)
    named = load(discover(site(configs=configs).path), "jupyterhub", "prod", "designsafe").deployments[0]
    assert settings(named, layout, https_port=18443, http_port=18080)["hub"]["public_https_port"] == 8443


def test_secrets_and_configs_the_new_spec_no_longer_uses_are_removed(site) -> None:
    deployment = load(discover(site().path), "jupyterhub", "prod", "designsafe").deployments[0]
    layout = Layout.of(deployment)
    old = HubSpec(layout, "img", settings(deployment, layout), {"cookie_secret": "c", "crypt_key": "k1"})
    new = HubSpec(layout, "img", {**settings(deployment, layout), "deployment": "changed"}, {"cookie_secret": "c", "crypt_key": "k2"})
    existing = SwarmFacts(secrets={old.secret_name(k) for k in old.secrets}, configs={old.config_name(p) for p in old.config_files()})
    removed = [c.argv[1:4] for c in stale_commands(new, existing)]
    assert removed == [("secret", "rm", old.secret_name("crypt_key")), ("config", "rm", old.config_name("/srv/jupyterhub/hub.json"))]
    assert stale_commands(old, existing) == []  # nothing unused: nothing removed



@pytest.mark.parametrize(("host", "public_port", "callback"), [
    ("jupyter.example.org", 18443, "https://jupyter.example.org/hub/oauth_callback"),
    ("jupyter.example.org:8443", 8443, "https://jupyter.example.org:8443/hub/oauth_callback"),
    ("[2001:db8::1]", 18443, "https://[2001:db8::1]/hub/oauth_callback"),
    ("[2001:DB8::1]:9443", 9443, "https://[2001:db8::1]:9443/hub/oauth_callback"),
    ("10.1.2.3:8443", 8443, "https://10.1.2.3:8443/hub/oauth_callback"),
])
def test_the_hub_address_is_parsed_once_for_settings_tls_and_the_callback(site, host: str, public_port: int, callback: str) -> None:
    from deployer.config import certs
    from deployer.phases import tls

    configs = base_configs()
    configs[SCOPE]["jupyterhub_host"] = host
    d = load(discover(site(configs=configs).path), "jupyterhub", "prod", "designsafe").deployments[0]
    assert settings(d, Layout.of(d), https_port=18443)["hub"]["public_https_port"] == public_port
    assert d.config.callback_url == callback
    cert, key = tls.self_signed(d.config.hub_address.host)  # the IP, not "2001" (port) nor "[...]"
    assert not certs.check(cert.encode(), key.encode(), d.config.hub_address.host).cert_errors


def test_secret_names_are_keyed_per_deployment_not_a_hash_anyone_can_recompute(site) -> None:
    """A name must change with the value (secrets are immutable), but `docker secret ls` must not let
    anyone test guesses of a weak password against a plain hash of it."""
    import dataclasses
    import hashlib

    spec = dataclasses.replace(spec_for(site(), secret="hunter2"), name_key="a" * 64)
    other_key = dataclasses.replace(spec, name_key="b" * 64)
    name = spec.secret_name("oauth_client_secret")
    assert hashlib.sha256(b"hunter2").hexdigest()[:12] not in name
    assert name != other_key.secret_name("oauth_client_secret")  # another deployment's key, another name
    assert name == dataclasses.replace(spec).secret_name("oauth_client_secret")  # stable for the same key and value
    assert name != dataclasses.replace(spec_for(site(), secret="hunter3"), name_key="a" * 64).secret_name("oauth_client_secret")
