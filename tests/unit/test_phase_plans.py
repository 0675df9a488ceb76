"""Facts in, commands out: the host part of the deploy plan (pyinfra-style fixture tests)."""

from __future__ import annotations

from conftest import SCOPE, base_configs

from deployer.config.discovery import discover
from deployer.config.hubsettings import Layout
from deployer.config.loader import load
from deployer.hosts.cluster import HostFacts, plan, static_paths
from deployer.phases import dockerproxy, netguard

HUB_IMAGE, USER_IMAGE = "taccsciapps/jupyterhub:0.8.0", "taccsciapps/jupyteruser-ds:1.1.0"


def deployment_of(site):
    return load(discover(site.path), "jupyterhub", "prod", "designsafe").deployments[0]


def ready_facts() -> dict[str, HostFacts]:
    return {
        "hub1": HostFacts(docker="24.0", swarm_state="active", node_id="n1", manager=True, managers={"10.10.0.10"}, images={HUB_IMAGE: "sha256:h"}, listening={22, 80, 443},
                          published={443: {"jupyterhub-prod-designsafe-hub"}, 80: {"jupyterhub-prod-designsafe-hub"}}),
        "worker1": HostFacts(docker="24.0", swarm_state="active", node_id="n2", managers={"10.10.0.10"}, images={USER_IMAGE: "sha256:u"}, paths={"/data/shared": True}),
        "worker2": HostFacts(docker="24.0", swarm_state="active", node_id="n3", managers={"10.10.0.10"}, images={USER_IMAGE: "sha256:u"}, paths={"/data/shared": True}),
    }


def test_fresh_hosts_get_swarm_and_images(site) -> None:
    d = deployment_of(site())
    facts = {h: HostFacts(docker="24.0", images={HUB_IMAGE if h == "hub1" else USER_IMAGE: None}, paths={"/data/shared": True} if h != "hub1" else {})
             for h in ("hub1", "worker1", "worker2")}
    p = plan(d, facts, Layout.of(d), {USER_IMAGE: "sha256:u", HUB_IMAGE: "sha256:h"})
    assert [str(c) for c in p.commands["hub1"]][0] == "docker swarm init --advertise-addr 10.10.0.10"
    assert [c.why for c in p.commands["worker1"]] == ["join the swarm as a worker", f"send image {USER_IMAGE} from this machine (docker save | ssh docker load)",
                                                     "the notebooks' network guard"]
    assert "hub1" not in [h for h, cs in p.commands.items() if any("netguard" in str(c) for c in cs)]  # the hub runs no notebooks
    assert "10.10.0.10:2377" in p.commands["worker2"][0].argv
    assert not p.problems


def guarded(d, facts: dict[str, HostFacts]) -> dict[str, HostFacts]:
    """The workers' network guards and the hub's Docker proxy run with the specs the plan wants."""
    for host in d.workers:
        facts[host.host_id].guard = (netguard.sidecar(d, Layout.of(d), "").spec_hash, True)
    hub_image_id = facts[d.hub.host_id].images.get(d.config.jupyterhub_image) or ""
    facts[d.hub.host_id].proxy = (dockerproxy.sidecar(d, Layout.of(d), hub_image_id).spec_hash, True)
    return facts


def test_nothing_to_do_when_everything_is_in_place(site) -> None:
    d = deployment_of(site())
    p = plan(d, guarded(d, ready_facts()), Layout.of(d))
    assert p.commands == {} and not p.problems
    assert "swarm manager already (n1)" in p.notes["hub1"]


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
    facts = guarded(d, ready_facts())
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
    p = plan(d, guarded(d, ready_facts()), Layout.of(d), {USER_IMAGE: "sha256:NEW"})
    assert [c.why for c in p.commands["worker1"]] == [f"send image {USER_IMAGE} from this machine (docker save | ssh docker load)"]
    facts = guarded(d, ready_facts())
    facts["hub1"].images[HUB_IMAGE] = None
    p = plan(d, facts, Layout.of(d), {})
    # The Docker proxy runs from the hub image: a new hub image replaces it too.
    assert [str(c) for c in p.commands["hub1"]][0] == f"docker pull {HUB_IMAGE}"
    assert [c.why for c in p.commands["hub1"]][1:] == ["replace the hub's Docker proxy", "the hub's Docker proxy: its image or configuration changed"]


def test_the_static_part_of_a_templated_mount_is_checked_on_workers_but_not_below_the_share(site) -> None:
    configs = base_configs()
    share = Layout.of(deployment_of(site())).share_dir
    configs[SCOPE]["volume_mounts"] = ["/srv/data/{tenant_id}/{username}:/home/jupyter/permanent:rw", "/data/shared:/home/jupyter/shared:ro",
                                       f"{share}/projects/{{username}}:/home/jupyter/projects:rw"]
    assert static_paths(deployment_of(site(configs=configs))) == ["/data/shared", "/srv/data"]
