"""The notebook network past Docker's default /24 (issue 22): thousands of addresses, a server started after
more than 256 addresses are taken, `status` counting what is left, and a subnet change refused while a
server runs and made by deploy once none does, the hub then serving on the new network."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import time

import docker as docker_sdk
import pytest
from conftest import run_cli

from deployer.errors import PreflightError
from swarm.conftest import NAME, Site, deploy_here, docker
from swarm.helpers import _stop, http_login, spawn

pytestmark = pytest.mark.swarm

NETWORK = f"{NAME}-net"
#: Addresses a /24 has for endpoints (256 less the network's, the broadcast and the gateway): the old cliff.
OLD_LIMIT = 253


def subnet() -> ipaddress.IPv4Network:
    config = json.loads(docker("network", "inspect", NETWORK, "--format", "{{json .IPAM.Config}}"))
    return ipaddress.IPv4Network(config[0]["Subnet"])


def server_address(user: str) -> ipaddress.IPv4Address:
    """The address of the user's running server on the notebook network."""
    task = docker("service", "ps", "-q", "--filter", "desired-state=running", f"{NAME}-nb-{user}").split()[0]
    attachments = json.loads(docker("inspect", task, "--format", "{{json .NetworksAttachments}}"))
    return next(ipaddress.IPv4Address(a["Addresses"][0].split("/")[0]) for a in attachments if a["Network"]["Spec"]["Name"] == NETWORK)


@pytest.fixture
def filler():
    """Services of no replicas in virtual-IP mode on the notebook network: each holds one of its addresses
    (its VIP) and runs nothing. Removed after the test."""
    client = docker_sdk.from_env()
    made: list[str] = []

    def fill(count: int) -> None:
        network_id = docker("network", "inspect", NETWORK, "--format", "{{.Id}}")
        for i in range(count):
            service = client.services.create("deployer/jupyteruser:0.2.0", ["sleep", "1"], name=f"scalefill-{i}", networks=[network_id],
                                             mode=docker_sdk.types.ServiceMode("replicated", replicas=0),
                                             endpoint_spec=docker_sdk.types.EndpointSpec(mode="vip"))
            made.append(service.id)

    yield fill
    for service_id in made:
        client.api.remove_service(service_id)


def test_a_server_starts_after_more_addresses_than_a_24_holds_are_taken(hub, site: Site, filler) -> None:
    net = subnet()
    assert net.num_addresses - 3 >= 4000 + 50, f"the notebook network {net} cannot hold 4,000 servers"
    filler(OLD_LIMIT + 10)
    shown = run_cli(["status"], cwd=site.path)
    line = next(l for l in shown.stdout.splitlines() if l.startswith("notebook network:"))
    in_use = int(line.split(", ")[1].split(" of ")[0].replace(",", ""))
    assert line.startswith(f"notebook network: {net},") and in_use >= 2 and line.endswith("left")
    browser = http_login("alice")
    try:
        assert spawn(browser, "alice") == "ready"
        address = server_address("alice")
        # The server's address lies past what the old /24 could hand out: allocation is in order, and the
        # filler took more than a /24 before it.
        assert address in net and int(address) - int(net.network_address) > OLD_LIMIT, address
    finally:
        _stop("alice")


def test_a_subnet_change_is_refused_while_a_server_runs_and_made_once_none_does(hub, site: Site) -> None:
    for service in docker("service", "ls", "-q", "--filter", f"name={NAME}-nb-").split():  # servers other tests left running
        docker("service", "rm", service)
    before = subnet()
    wanted = ipaddress.IPv4Network("10.160.0.0/20")
    assert wanted != before
    browser = http_login("alice")
    assert spawn(browser, "alice") == "ready"
    with pytest.raises(PreflightError) as refused:
        deploy_here(site.deployment(f"notebook_network_subnet={wanted}"))
    text = "\n".join(str(p) for p in refused.value.problems)
    assert f"the notebook network {NETWORK} is {before} and 1 notebook service(s) are on it" in text and "stop every server" in text
    assert subnet() == before and browser.get("/user/alice/api/status").status_code == 200  # nothing changed, the server serves

    _stop("alice")
    deadline = time.monotonic() + 60
    while docker("service", "ls", "-q", "--filter", f"name={NAME}-nb-"):  # (the hub removes the stopped server's service)
        assert time.monotonic() < deadline, "the stopped server's service is still there"
        time.sleep(0.5)
    report = deploy_here(site.deployment(f"notebook_network_subnet={wanted}"))
    assert subnet() == wanted, report
    relay = json.loads(docker("container", "inspect", f"{NAME}-hubapi", "--format", "{{json .NetworkSettings.Networks}}"))
    assert ipaddress.IPv4Address(relay[NETWORK]["IPAddress"]) in wanted  # the relay is on the new network
    browser = http_login("alice")
    assert spawn(browser, "alice") == "ready"
    assert server_address("alice") in wanted
    _stop("alice")
    # Deploying again without the key keeps the network (it holds over 4,000 servers): nothing to do.
    assert subnet() == wanted
    deploy_here(site.deployment())
    assert subnet() == wanted


def test_a_rollback_after_the_network_was_made_again_starts_the_previous_hub_on_the_new_one(tmp_path) -> None:
    """The hub's replacement keeps the previous service's spec, which names its network by ID. Once the notebook
    network was made again (a new subnet) and the new hub failed, that ID is gone: the rollback program
    (hubreplace.RECREATE) names the network of the same name instead, as the real engine accepts."""
    from deployer.phases.hubreplace import RECREATE

    network, service = "rollback-test-net", "rollback-test-hub"
    docker("network", "create", "--driver", "overlay", "--attachable", "--subnet", "10.250.0.0/24", network)
    try:
        docker("service", "create", "--detach", "--no-resolve-image", "--name", service, "--network", network, "--replicas", "0",
               "deployer/jupyteruser:0.2.0", "sleep", "60")
        kept = tmp_path / "hub-service.json"
        kept.write_text(docker("service", "inspect", "--format", "{{json .Spec}}", service))
        docker("service", "rm", service)
        deadline = time.monotonic() + 60
        while docker("network", "rm", network, check=False) != network:
            assert time.monotonic() < deadline, "the test network was not released"
            time.sleep(0.5)
        deadline = time.monotonic() + 60
        while not docker("network", "create", "--driver", "overlay", "--attachable", "--subnet", "10.250.16.0/24", network, check=False):
            assert time.monotonic() < deadline, "the test network could not be made again"
            time.sleep(0.5)
        new_id = docker("network", "inspect", "--format", "{{.Id}}", network)
        without_name = subprocess.run(["python3", "-c", RECREATE, str(kept)], capture_output=True, text=True, timeout=60)
        assert without_name.returncode != 0 and "not found" in without_name.stderr  # the kept ID alone no longer resolves
        done = subprocess.run(["python3", "-c", RECREATE, str(kept), network], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        targets = json.loads(docker("service", "inspect", "--format", "{{json .Spec.TaskTemplate.Networks}}", service))
        assert [t["Target"] for t in targets] == [new_id]
    finally:
        docker("service", "rm", service, check=False)
        deadline = time.monotonic() + 60
        while docker("network", "inspect", network, check=False) and time.monotonic() < deadline:
            docker("network", "rm", network, check=False)
            time.sleep(0.5)
