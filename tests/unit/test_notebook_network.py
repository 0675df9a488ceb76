"""The notebook network's subnet (deployer.phases.notebooknet): chosen clear of every host route, Docker
network and Docker address pool; grown only while no notebook service holds the old network; a changed
subnet under running servers refused with the reason, naming the key; the kernel's neighbour table
limits raised to fit it; the swarm's task history kept short."""

from __future__ import annotations

import copy
import ipaddress

import pytest
from conftest import SCOPE, base_configs
from unit.plans import deployment_of, plan, ready_facts, settled

from deployer.config.hubsettings import Layout
from deployer.errors import PreflightError
from deployer.phases import notebooknet, preflight, swarm
from deployer.phases.hubservice import SwarmFacts

NETWORK = "jupyterhub-prod-designsafe-net"


def deployed(site, subnet: str = "10.0.1.0/24", notebooks: int = 0, **config):
    """A deployment as it runs now: its network with ``subnet``, ``notebooks`` notebook services."""
    configs = base_configs()
    configs[SCOPE].update(config)
    d = deployment_of(site(configs=configs))
    facts = settled(d, ready_facts())
    objects = facts["hub1"].objects
    objects.network_subnet, objects.notebook_services = subnet, notebooks
    facts["hub1"].docker_subnets = {NETWORK: subnet, "ingress": "10.0.0.0/24", "docker_gwbridge": "172.18.0.0/16"}
    return d, facts


def hub_commands(d, facts) -> list[str]:
    return [str(c) for c in plan(d, facts).commands.get("hub1", [])]


def test_a_new_deployment_gets_the_first_free_19_clear_of_routes_networks_and_pools(site) -> None:
    d = deployment_of(site())
    facts = ready_facts()
    facts["worker1"].routes = {"10.128.0.0/16", "10.10.0.0/24"}  # a site network on one worker
    facts["worker2"].docker_subnets = {"site-bridge": "10.129.0.0/20"}
    decision, problems = notebooknet.decide(d, facts, NETWORK)
    assert problems == [] and decision.action == "create" and decision.subnet == "10.129.32.0/19"
    create = next(c for c in hub_commands(d, facts) if "network create" in c)
    assert create == f"docker network create --driver overlay --attachable --subnet 10.129.32.0/19 --label deployer=jupyterhub-prod-designsafe {NETWORK}"
    assert notebooknet.capacity("10.129.32.0/19", 3) == 8184 >= 4000


@pytest.mark.parametrize("where, facts_change, clash", [
    ("a host route", lambda f: f["worker2"].routes.add("10.40.0.0/16"), "a route of worker2 (10.40.0.0/16)"),
    ("another overlay", lambda f: f["hub1"].docker_subnets.update({"other-net": "10.40.8.0/24"}), "the Docker network other-net on hub1 (10.40.8.0/24)"),
])
def test_a_chosen_subnet_that_overlaps_anything_stops_the_deploy_naming_the_key(site, where, facts_change, clash) -> None:
    configs = base_configs()
    configs[SCOPE]["notebook_network_subnet"] = "10.40.0.0/19"
    d = deployment_of(site(configs=configs))
    facts = ready_facts()
    facts_change(facts)
    problems = preflight.problems(d, facts)
    assert [str(p) for p in problems] == [
        f"site.configs: {SCOPE}/notebook_network_subnet: 10.40.0.0/19 overlaps {clash}: notebooks could not reach it, or Docker "
        "would give its addresses twice; choose a range nothing on the hosts uses"]
    with pytest.raises(PreflightError):
        plan(d, facts)


def test_a_subnet_in_dockers_bridge_pools_is_refused_also_when_daemon_json_names_its_own(site) -> None:
    configs = base_configs()
    configs[SCOPE]["notebook_network_subnet"] = "172.20.0.0/19"
    d = deployment_of(site(configs=configs))
    facts = ready_facts()
    assert "the address pool 172.20.0.0/16 hub1's Docker engine" in str(preflight.problems(d, facts)[0])
    for f in facts.values():
        f.daemon_json = '{"default-address-pools": [{"base": "10.200.0.0/16", "size": 24}]}'
    assert preflight.problems(d, facts) == []
    facts["worker1"].daemon_json = '{"default-address-pools": [{"base": "172.16.0.0/12", "size": 24}]}'
    assert "the address pool 172.16.0.0/12 worker1's Docker engine" in str(preflight.problems(d, facts)[0])


def test_an_unchanged_network_plans_nothing(site) -> None:
    d, facts = deployed(site, "10.128.0.0/19", notebooks=40)
    assert hub_commands(d, facts) == []
    d, facts = deployed(site, "10.0.1.0/24", notebooks=40, notebook_network_subnet="10.0.1.0/24")
    assert hub_commands(d, facts) == []


def test_an_old_24_with_servers_on_it_is_kept_and_the_plan_says_how_it_grows(site) -> None:
    d, facts = deployed(site, "10.0.1.0/24", notebooks=12)
    result = plan(d, facts)
    assert result.commands.get("hub1", []) == [] and result.problems == []
    assert (f"the notebook network {NETWORK} (10.0.1.0/24) holds 248 servers; it grows at a deploy while no notebook service exists "
            "(12 now), or set notebook_network_subnet") in result.notes["hub1"]


def test_a_changed_subnet_under_servers_is_refused_with_the_reason_before_anything_changes(site) -> None:
    d, facts = deployed(site, "10.0.1.0/24", notebooks=3, notebook_network_subnet="10.128.0.0/18")
    assert [str(p) for p in preflight.problems(d, facts)] == [
        f"site.configs: {SCOPE}/notebook_network_subnet: the notebook network {NETWORK} is 10.0.1.0/24 and 3 notebook service(s) are on it; "
        "a Docker network's subnet cannot change under them: stop every server (the hub's admin page) and deploy again, or set "
        "notebook_network_subnet back to 10.0.1.0/24"]


def test_without_servers_the_network_is_made_again_inside_the_hubs_replacement(site) -> None:
    d, facts = deployed(site, "10.0.1.0/24", notebooks=0, notebook_network_subnet="10.128.0.0/18")
    commands = plan(d, facts).commands["hub1"]
    assert [c.why for c in commands] == ["the hub's spec changed", "the hub API's relay for notebooks"]
    replace = commands[0]
    assert "the overlay network jupyterhub-prod-designsafe-net made again with 10.128.0.0/18" in replace.shown
    step = replace.argv[10]  # the replacement script's $7: run once the old hub is gone
    assert "docker network rm" in step and "10.128.0.0/18" in step and Layout.of(d).hub_relay in step
    assert replace.argv[11] == NETWORK  # ($8: what a rollback names the network by, once the old one is gone)
    assert replace.argv[12:15] == ("docker", "service", "create")  # then the new hub
    # planned as run: the next plan finds it all in place
    after = settled(d, facts)
    assert after["hub1"].objects.network_subnet == "10.128.0.0/18"


def test_with_no_hub_running_the_network_is_made_again_before_the_relay_and_the_hub(site) -> None:
    d, facts = deployed(site, "10.0.1.0/24", notebooks=0)
    facts["hub1"].objects.hub_spec_hash = None
    whys = [c.why for c in plan(d, facts).commands["hub1"]]
    assert whys[0].startswith(f"the overlay network {NETWORK} made again with 10.128.0.0/19")
    assert whys.index("the hub API's relay for notebooks") < whys.index("the hub service")


def test_the_neighbour_table_is_raised_where_it_is_low_and_never_lowered(site) -> None:
    d = deployment_of(site())
    facts = ready_facts()
    facts["hub1"].neighbour_limits = (128, 512, 1024)  # the kernel's defaults
    facts["worker1"].neighbour_limits = (65536, 262144, 1048576)
    result = plan(d, facts)
    raise_it = [c for c in result.commands["hub1"] if "neighbour" in c.why]
    assert len(raise_it) == 1 and raise_it[0].argv[-3:] == ("16384", "32768", "65536")
    assert "[ \"$have\" -ge \"$want\" ] && want=$have" in raise_it[0].argv[2]  # a higher value stays
    assert not any("neighbour" in c.why for c in result.commands.get("worker1", []))
    assert any("not visible here" in n for n in result.notes["worker2"])  # (no limits read: a lab host)
    assert notebooknet.neighbour_limits("10.0.0.0/16")[2] == 8 * 65536


def test_the_swarm_keeps_two_old_tasks_per_service(site) -> None:
    d = deployment_of(site())
    facts = ready_facts()
    facts["hub1"].task_history = 5
    assert "docker swarm update --task-history-limit 2" in hub_commands(d, facts)
    facts = settled(d, facts)
    assert facts["hub1"].task_history == swarm.TASK_HISTORY and not any("task-history" in c for c in hub_commands(d, facts))


def test_every_auto_candidate_is_a_private_19() -> None:
    candidates = list(notebooknet.AUTO_RANGE.subnets(new_prefix=notebooknet.AUTO_PREFIX))
    assert len(candidates) == 1024 and all(c.is_private and c.prefixlen == 19 for c in candidates)
    assert notebooknet.free_subnet([(ipaddress.IPv4Network("10.128.0.0/9"), "everything")]) is None
    assert SwarmFacts().notebook_services == 0 and copy.copy(SwarmFacts()).network_subnet is None


def test_status_counts_every_address_the_hubs_node_sees_on_the_network() -> None:
    from deployer.hosts.status import network_status

    # `docker network inspect --verbose` as Docker 20.10 prints it on the hub's node (trimmed to what is read)
    inspected = {
        "IPAM": {"Config": [{"Subnet": "10.128.0.0/19", "Gateway": "10.128.0.1"}]},
        "Containers": {"a": {"Name": "hub.1.x", "IPv4Address": "10.128.0.2/19"}, "b": {"Name": "net-endpoint", "IPv4Address": "10.128.0.3/19"}},
        "Peers": [{"Name": "hub-node", "IP": "10.10.0.10"}, {"Name": "worker-node", "IP": "10.10.0.11"}],
        "Services": {
            "jupyterhub-x-hub": {"VIP": "<nil>", "Tasks": [{"Name": "hub.1.x", "EndpointIP": "10.128.0.2"}]},
            "jupyterhub-x-nb-alice": {"VIP": "<nil>", "Tasks": [{"Name": "nb.1.y", "EndpointIP": "10.128.0.7"}]},
            "some-vip-service": {"VIP": "10.128.0.9", "Tasks": []},
        },
    }
    status = network_status(inspected)
    # hub, its node's load balancer, alice, the VIP, and the worker's load balancer (a peer without a local endpoint entry)
    assert (status.subnet, status.addresses, status.in_use, status.left) == ("10.128.0.0/19", 8189, 5, 8184)
    assert network_status({"IPAM": {"Config": None}}) is None
