"""Facts in, commands out: every phase's planner, as deploy runs them and plan prints them
(pyinfra-style fixture tests)."""

from __future__ import annotations

import subprocess

from conftest import SCOPE, base_configs
from unit.plans import CERT, GUARD_IMAGE, HUB_IMAGE, USER_IMAGE, deployment_of, plan, ready_facts, settled

from deployer.config.hubsettings import Layout
from deployer.phases.base import Context
from deployer.phases.facts import HostFacts, hub_directories, static_paths
from deployer.phases.pipeline import plan_all


def test_fresh_hosts_get_swarm_and_images(site) -> None:
    d = deployment_of(site())
    facts = {h: HostFacts(docker="24.0", images={HUB_IMAGE if h == "hub1" else USER_IMAGE: None}, paths={"/data/shared": True} if h != "hub1" else {},
                          missing_dirs={p for p, _, _ in hub_directories(d, Layout.of(d))} if h == "hub1" else set())
             for h in ("hub1", "worker1", "worker2")}
    p = plan(d, facts, Layout.of(d), {USER_IMAGE: "sha256:u", HUB_IMAGE: "sha256:h"})
    assert [str(c) for c in p.commands["hub1"]][0] == "docker swarm init --advertise-addr 10.10.0.10"
    assert [c.why for c in p.commands["worker1"]] == ["join the swarm as a worker", "install the NFS client",
                                                     "mount the share from the hub (10.10.0.10) on this worker",
                                                     f"send image {USER_IMAGE} from this machine (docker save | ssh docker load)",
                                                     f"pull image {GUARD_IMAGE} (not on this machine)", "the notebooks' network guard",
                                                     "the notebooks' mount guard"]
    # the hub runs no notebooks (matched by the guard's image, not "netguard" anywhere: a checkout's path may hold that word)
    assert "hub1" not in [h for h, cs in p.commands.items() if any(GUARD_IMAGE in c.argv for c in cs)]
    join = p.commands["worker2"][0]
    assert "10.10.0.10" in join.argv and str(join) == "docker swarm join --advertise-addr 10.10.0.12 --token <worker token> 10.10.0.10:2377 < (hidden input)"
    # the hub: its directories, the share's marker and NFS server, its kept state, the proxy, the service
    hub = [c.why for c in p.commands["hub1"]]
    assert "the share" in hub and "install the NFS server" in hub and "export the share to the workers" in hub
    assert "generate the hub's cookie secret (kept on the hub)" in hub and "the hub service" in hub and "the hub's Docker proxy" in hub
    # labels go to nodes whose IDs only exist once they have joined: shown as placeholders
    # a worker's labels: the common one, and the one unique to this deployment that its notebooks' placement requires
    assert (f"docker node update --label-add deployer.worker=true --label-add {Layout.of(d).worker_label}=true '<node ID of worker1>'"
            in [str(c) for c in p.commands["hub1"]])
    assert not p.problems


def test_nothing_to_do_when_everything_is_in_place(site) -> None:
    d = deployment_of(site())
    p = plan(d, settled(d, ready_facts()), Layout.of(d))
    assert p.commands == {} and not p.problems
    assert "swarm manager already (n1)" in p.notes["hub1"]
    assert {"sees the share", "network guard running", f"image {USER_IMAGE} present"} <= set(p.notes["worker1"])


def test_every_phase_planned_twice_from_the_facts_it_leaves_plans_nothing(site) -> None:
    """From bare hosts: once every phase's expected effect is applied, a second plan is empty (the
    planners agree with what they expect; a no-op redeploy runs nothing)."""
    d = deployment_of(site())
    bare = {h: HostFacts(paths={"/data/shared": True} if h != "hub1" else {}) for h in ("hub1", "worker1", "worker2")}
    local = {USER_IMAGE: "sha256:u", HUB_IMAGE: "sha256:h", GUARD_IMAGE: "sha256:g"}
    first = plan(d, bare, None, local)
    assert first.commands["worker1"][0].why.startswith("no Docker engine answers")
    assert plan(d, settled(d, bare, local), None, local).commands == {}


def test_the_join_token_is_on_no_command_line(site) -> None:
    d = deployment_of(site())
    facts = settled(d, ready_facts())
    facts["worker2"] = HostFacts(docker="24.0", images=dict(facts["worker1"].images), paths={"/data/shared": True})
    join = plan(d, facts).commands["worker2"][0]
    assert join.why == "join the swarm as a worker" and join.input == b"SWMTKN-1-secret\n"
    assert "SWMTKN" not in " ".join(join.argv) + str(join)


def test_plan_shows_secrets_only_as_hidden_input(site) -> None:
    d = deployment_of(site())
    facts = ready_facts()
    facts["hub1"].state = {}
    shown = "\n".join(str(c) for cs in plan(d, facts).commands.values() for c in cs)
    assert "SWMTKN" not in shown and "(hidden input)" in shown
    assert d.config.jupyterhub_oauth_client_secret.get_secret_value() not in shown


def test_missing_static_path_and_taken_port_are_problems_naming_the_host(site) -> None:
    d = deployment_of(site())
    facts = ready_facts()
    facts["worker2"].paths["/data/shared"] = False
    facts["hub1"].swarm_state = "inactive"  # 443 taken by something that is not our swarm
    messages = [str(p) for p in plan(d, facts, Layout.of(d)).problems]
    assert any("static mount path /data/shared does not exist on worker worker2 (worker2.example.org)" in m for m in messages)
    assert any("port 443 on the hub hub1 is already in use" in m for m in messages)


def test_a_port_published_by_another_swarm_service_or_held_by_a_program_is_a_problem_ours_is_not(site) -> None:
    d = deployment_of(site())
    facts = settled(d, ready_facts())
    facts["hub1"].published = {443: {"jupyterhub-prod-designsafe-hub"}, 80: {"jupyterhub-prod-designsafe-hub"}}
    assert not plan(d, facts, Layout.of(d)).problems  # our own hub holds them
    facts["hub1"].published = {443: {"other-hub"}, 80: {"jupyterhub-prod-designsafe-hub"}}
    messages = [str(p) for p in plan(d, facts, Layout.of(d)).problems]
    assert messages == ["preflight on hub1: port 443 on the hub hub1 is published by the swarm service other-hub; "
                        "the hub needs 443 and 80: remove that service (or its deployment: deployer destroy)"]
    facts["hub1"].published, facts["hub1"].holders = {}, {443: {"nginx"}}
    messages = [str(p) for p in plan(d, facts, Layout.of(d)).problems]
    assert any("port 443 on the hub hub1 is already in use by nginx" in m for m in messages)


def test_hosts_without_docker_get_it_installed(site) -> None:
    d = deployment_of(site())
    facts = ready_facts()
    facts["worker1"] = HostFacts()
    p = plan(d, facts, Layout.of(d))
    assert p.commands["worker1"][0].why.startswith("no Docker engine answers")


def test_a_worker_of_another_swarm_or_a_taken_swarm_port_is_a_problem(site) -> None:
    d = deployment_of(site())
    facts = ready_facts()
    facts["worker1"].managers = {"192.168.5.5"}
    facts["worker2"] = HostFacts(docker="24.0", listening={2377}, images={USER_IMAGE: "sha256:u"}, paths={"/data/shared": True})
    messages = [str(p) for p in plan(d, facts, Layout.of(d)).problems]
    assert any("worker1 is in another swarm (managers: 192.168.5.5); run `docker swarm leave` on it" in m for m in messages)
    assert any("port 2377 on worker2 is in use by another program" in m for m in messages)


def test_swarm_ports_still_held_by_dockerd_after_leaving_are_not_another_program(site) -> None:
    d = deployment_of(site())
    facts = ready_facts()
    facts["worker2"] = HostFacts(docker="24.0", listening={7946}, holders={7946: {"dockerd"}}, images={USER_IMAGE: "sha256:u"},
                                 paths={"/data/shared": True})
    assert not [str(p) for p in plan(d, facts, Layout.of(d)).problems]
    facts["worker2"].holders = {7946: {"dockerd", "serf"}}
    assert any("port 7946 on worker2 is in use by another program" in str(p) for p in plan(d, facts, Layout.of(d)).problems)


def test_an_image_rebuilt_under_the_same_tag_is_sent_again_and_a_missing_one_pulled(site) -> None:
    d = deployment_of(site())
    p = plan(d, settled(d, ready_facts()), Layout.of(d), {USER_IMAGE: "sha256:NEW"})
    assert [c.why for c in p.commands["worker1"]] == [f"send image {USER_IMAGE} from this machine (docker save | ssh docker load)"]
    facts = settled(d, ready_facts())
    facts["hub1"].images[HUB_IMAGE] = None
    p = plan(d, facts, Layout.of(d), {})
    # The Docker proxy runs from the hub image: a new hub image replaces it too.
    assert [str(c) for c in p.commands["hub1"]][0] == f"docker pull {HUB_IMAGE}"
    assert [c.why for c in p.commands["hub1"]][1:] == ["replace the hub's Docker proxy", "the hub's Docker proxy: its image or configuration changed",
                                                       "the hub's spec changed"]  # and the hub itself


def test_the_static_part_of_a_templated_mount_is_checked_on_workers_but_not_below_the_share(site) -> None:
    configs = base_configs()
    share = Layout.of(deployment_of(site())).share_dir
    configs[SCOPE]["volume_mounts"] = ["/srv/data/{tenant_id}/{username}:/home/jupyter/permanent:rw", "/data/shared:/home/jupyter/shared:ro",
                                       f"{share}/projects/{{username}}:/home/jupyter/projects:rw"]
    assert static_paths(deployment_of(site(configs=configs))) == ["/data/shared", "/srv/data"]


def test_a_host_is_sent_only_the_layers_it_lacks(site) -> None:
    """Layers are matched by chain ID (a layer with all below it): a host with the image's first two layers
    (from another image, or the previous build) is sent the rest only."""
    from deployer.hosts.layers import chain_ids

    d = deployment_of(site())
    new = ["sha256:" + c * 64 for c in "abcd"]
    facts = settled(d, ready_facts())
    facts["worker1"].layers = set(chain_ids(new[:2])) | {"sha256:" + "f" * 64}
    facts["worker2"].layers = set(chain_ids(["sha256:" + "e" * 64] + new[1:]))  # the same layers over another base: none match
    p = plan_all(Context.of(d, {USER_IMAGE: "sha256:NEW"}, local_layers={USER_IMAGE: new}), facts)
    sends = {host: commands[0] for phase, planned in p for host, commands in planned.commands.items() if phase.title == "images"}
    assert sends["worker1"].source[-2:] == (USER_IMAGE, "2") and sends["worker2"].source[-2:] == (USER_IMAGE, "0")
    assert str(sends["worker1"]).endswith(f"-m deployer.hosts.layers {USER_IMAGE} 2 | docker load --quiet")


def test_a_second_image_sent_to_a_host_skips_the_base_layers_the_first_one_brought(site) -> None:
    d = deployment_of(site())
    base = ["sha256:" + c * 64 for c in "ab"]
    facts = settled(d, ready_facts())
    facts["worker1"].images, facts["worker1"].layers = {}, set()
    local = {USER_IMAGE: "sha256:u2", GUARD_IMAGE: "sha256:g2", HUB_IMAGE: "sha256:h"}
    context = Context.of(d, local, local_layers={USER_IMAGE: base + ["sha256:" + "c" * 64], GUARD_IMAGE: base + ["sha256:" + "d" * 64]})
    sends = [c for phase, planned in plan_all(context, facts) if phase.title == "images" for c in planned.commands.get("worker1", [])]
    assert [c.source[-2:] for c in sends] == [(USER_IMAGE, "0"), (GUARD_IMAGE, "2")]


def test_a_running_hub_is_replaced_in_one_step_that_keeps_its_spec_and_databases_and_can_put_them_back(site) -> None:
    d = deployment_of(site())
    facts = settled(d, ready_facts())
    facts["hub1"].images[HUB_IMAGE] = "sha256:next-release"
    replaced = [c for c in plan(d, facts).commands["hub1"] if "Docker proxy" not in c.why]  # (which runs from the hub image too)
    assert [c.why for c in replaced] == ["the hub's spec changed"]  # no separate `docker service rm`: the step can be undone
    step = replaced[0]
    create = list(step.argv[step.argv.index("docker"):])
    assert create[:3] == ["docker", "service", "create"] and HUB_IMAGE in create and "--label" in create
    layout = Layout.of(d)
    assert step.argv[4:9] == (layout.hub_service, layout.data_dir, f"{layout.state_root}/{layout.name}/state/upgrades", HUB_IMAGE, "443")
    assert "upgrade-db" in step.argv[2] and "/services/create" in step.argv[9]
    assert str(step).startswith(f"replace {layout.hub_service}: keep its spec and databases in ")
    # The script is valid for the hosts' /bin/sh (dash on Debian), not only for bash.
    for shell in ("sh", "bash"):
        assert subprocess.run([shell, "-n", "-c", step.argv[2]], capture_output=True, text=True).returncode == 0, shell


def test_an_acme_hub_gets_its_acme_settings_and_the_directorys_ca_as_a_config(site) -> None:
    from deployer.config.hubsettings import ACME_CA
    from deployer.phases.hub import hub_spec

    configs = base_configs()
    configs[SCOPE].update(jupyterhub_tls="acme", jupyterhub_acme_email="ops@example.org", jupyterhub_acme_directory="https://acme.example.org/dir",
                          jupyterhub_acme_ca_bundle=CERT, jupyterhub_acme_renew_days=20)
    d = deployment_of(site(configs=configs))
    spec, self_signed_fallback = hub_spec(Context.of(d, {}), settled(d, ready_facts())["hub1"])
    assert spec.settings["hub"]["acme"] == {"email": "ops@example.org", "directory": "https://acme.example.org/dir", "ca_bundle": ACME_CA, "renew_days": 20}
    assert spec.config_files()[ACME_CA] == CERT and self_signed_fallback  # the self-signed pair stays: the hub serves it until the CA's is issued
    plain = deployment_of(site())
    assert hub_spec(Context.of(plain, {}), settled(plain, ready_facts())["hub1"])[0].settings["hub"]["acme"] is None


def test_the_hub_api_relay_is_started_on_the_network_before_the_hub_and_outlives_a_new_hub_image(site) -> None:
    d = deployment_of(site())
    layout = Layout.of(d)
    fresh = [str(c) for c in plan(d, {h: HostFacts(docker="24.0") for h in ("hub1", "worker1", "worker2")}).commands["hub1"]]
    network = next(i for i, c in enumerate(fresh) if c.startswith("docker network create"))
    relay = next(i for i, c in enumerate(fresh) if c.startswith(f"docker run --detach --name {layout.hub_relay} "))
    hub = next(i for i, c in enumerate(fresh) if c.startswith("docker service create"))
    assert network < relay < hub and f"--network {layout.network}" in fresh[relay] and "--user 65534:65534" in fresh[relay]
    assert fresh[relay].endswith(f"python3 -m deployer_hub.hubrelay {layout.hub_service} 8081")
    facts = settled(d, ready_facts())
    facts["hub1"].images[HUB_IMAGE] = "sha256:next-release"  # a new hub image: the hub and its Docker proxy are replaced, not the relay
    again = [str(c) for c in plan(d, facts).commands["hub1"]]
    assert again and not any(layout.hub_relay in c for c in again)
