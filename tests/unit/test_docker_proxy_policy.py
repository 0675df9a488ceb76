"""The Docker proxy's policy as deploy writes it: what the hub's spawner is configured to do, in the
form the proxy accepts (its own validation runs here), and the container that runs it."""

from __future__ import annotations

import json

import pytest
from conftest import SCOPE, base_configs
from deployer_hub import mountguard
from deployer_hub.dockerpolicy import Policy
from unit.plans import deployment_of

from deployer.config.hubsettings import Layout
from deployer.phases import dockerproxy


def test_the_policy_is_the_spawners_configuration_and_the_proxy_accepts_it(site) -> None:
    configs = base_configs()
    configs[SCOPE]["volume_mounts"] = ["/data/{tenant_id}/{username}:/home/jupyter/permanent:rw", "/srv/shared:/home/jupyter/shared:ro"]
    d = deployment_of(site(configs=configs))
    layout = Layout.of(d)
    written = dockerproxy.policy(d, layout)
    policy = Policy.from_json(json.dumps(written))  # the proxy's own checks
    assert policy.service_prefix == "jupyterhub-prod-designsafe-nb-"
    assert policy.images == (d.config.jupyter_user_image,)
    assert policy.network == layout.network
    assert policy.config_prefix == ""  # no tenant CA configured: notebooks get no config at all
    # Mounts: only volumes of this deployment's mount guard, for exactly the configured kinds of mounts.
    assert policy.mount_driver == f"{layout.name}-mounts" and policy.deployment == layout.name
    by_anchor = {(r.anchor, r.read_only) for r in policy.mounts}
    assert by_anchor == {(layout.share_dir, False), ("/data", False), ("/srv/shared", True)}  # tokens, users' data, shared
    assert mountguard.placement(policy.mounts, "/data/designsafe/jdoe") == ("/data", False)
    assert mountguard.placement(policy.mounts, "/srv/shared") == ("/srv/shared", True)
    assert mountguard.placement(policy.mounts, f"{layout.token_root}/designsafe/jdoe") == (layout.share_dir, False)
    for outside in ("/data/other-tenant/jdoe", "/data/designsafe/jdoe/deeper", "/srv/shared/x", "/srv", f"{layout.share_dir}/tokens/designsafe"):
        with pytest.raises(mountguard.Refused):
            mountguard.placement(policy.mounts, outside)
    # Notebooks run on this deployment's workers only, as a uid:gid at or above the image's 1000:100, behind the guard.
    assert policy.constraints == (f"node.labels.deployer.worker.{layout.name}==true",)
    assert (policy.min_uid, policy.min_gid, policy.guard_label) == (1000, 100, layout.name)


def test_the_proxy_container_has_no_network_no_capabilities_and_only_its_socket_directory(site) -> None:
    d = deployment_of(site())
    layout = Layout.of(d)
    argv = dockerproxy.sidecar(d, layout, "sha256:h").run("x").argv
    assert argv[argv.index("--network") + 1] == "none" and argv[argv.index("--cap-drop") + 1] == "ALL" and "--cap-add" not in argv
    assert f"type=bind,src={layout.docker_proxy_dir},dst=/run/deployer-proxy" in argv
    assert argv[-4:] == (d.config.jupyterhub_image, "python3", "-m", "deployer_hub.dockerproxy")


def test_notebook_secrets_are_named_below_the_prefix_the_proxy_allows(site) -> None:
    from conftest import base_passwords

    from deployer.phases.hubservice import HubSpec

    passwords = base_passwords()
    passwords[SCOPE]["notebook_secret_env"] = {"MATLAB_LICENSE": "lic-value-0123456789"}
    d = deployment_of(site(passwords=passwords))
    layout = Layout.of(d)
    prefix = Policy.from_json(json.dumps(dockerproxy.policy(d, layout))).secret_prefix
    spec = HubSpec(layout, "img", {}, {}, name_key="k" * 32, notebook_secrets={"MATLAB_LICENSE": "lic-value-0123456789"})
    assert prefix and spec.notebook_secret_name("MATLAB_LICENSE").startswith(prefix)
