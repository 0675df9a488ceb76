"""The network guard's policy and ruleset (pure): what is refused comes before what is allowed, the
operator's lists and allow rules land where they should, only connections the rules accepted take the
fast path (a connection opened before them is judged as new), every address of every swarm node is
refused, IPv6 fails closed, the host's NFS rules, and deploy's commands are idempotent."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from dataclasses import dataclass, replace

import pytest
from conftest import SCOPE, base_configs
from deployer_hub import netguard
from deployer_hub.netguard import (ACCEPTED, ALLOW_RULES, Guard, Policy, Target, TargetError, View, filter_rules, host_chains, host_rules,
                                   restore_text)
from unit.plans import deployment_of, ready_facts

from deployer.config.hubsettings import Layout
from deployer.phases import members, nfs, sidecars
from deployer.phases import netguard as deploy_guard
from deployer.phases.base import Context
from deployer.phases.facts import parse_addresses, parse_node_addresses

OVERLAY = ipaddress.ip_network("10.0.5.0/24")
VIEW = View(networks=((OVERLAY, True),), local=(ipaddress.ip_address("10.10.0.21"), ipaddress.ip_address("172.18.0.1")),
            bridges=(ipaddress.ip_network("172.18.0.0/16"),), resolvers=(ipaddress.ip_address("10.10.0.2"),))
NAMES = {"tenant.example.org": ["198.51.100.7"], "db.example.org": ["10.20.0.5"], "hub.example.org": ["10.10.0.10"]}


def resolve(name: str) -> list[str]:
    return NAMES.get(name, [])


def policy(**changes) -> Policy:
    base = dict(deployment="jupyterhub-prod-x", network="jupyterhub-prod-x-net", hosts=("10.10.0.10", "hub.example.org", "10.10.0.21"),
                hub_ports=("10.10.0.10:443", "10.10.0.10:80"), tenant=("tenant.example.org:443",))
    return Policy(**{**base, **changes})


@dataclass(frozen=True)
class Packet:
    """A packet as our rules see it: its hook, the other end (or, forwarded, the destination), the port
    on the receiving side, and its connection's conntrack state and mark."""

    hook: str  # OUTPUT or INPUT (a notebook's namespace), FORWARD or INPUT (the host's)
    address: str
    port: int
    proto: str = "tcp"
    state: str = "NEW"  # or ESTABLISHED, RELATED
    marked: bool = False
    interface: str = "eth0"
    origdstport: int | None = None  # the port the connection was opened to, before a REDIRECT


def _matches(options: list[str], packet: Packet) -> bool:
    """Every match of a rule, as the kernel reads it; an option this evaluator does not know fails the test
    (so that every rule the builder writes is modelled here)."""
    i = 0
    while i < len(options):
        option, value = options[i], options[i + 1] if i + 1 < len(options) else ""
        if option == "-m":
            i += 2
            continue
        ok = {
            "-d": lambda: ipaddress.ip_address(packet.address) in ipaddress.ip_network(value),
            "-p": lambda: packet.proto == value,
            "--dport": lambda: packet.port == int(value),
            "--dports": lambda: packet.port in {int(p) for p in value.split(",")},
            "-i": lambda: packet.hook in ("INPUT", "FORWARD") and (packet.interface == value or value.endswith("+") and packet.interface.startswith(value[:-1])),
            "-o": lambda: packet.hook == "OUTPUT" and packet.interface == value,
            "--ctstate": lambda: packet.state in value.split(","),
            "--ctorigdstport": lambda: packet.origdstport == int(value),
            "--mark": lambda: packet.marked if value == netguard.MARK else pytest.fail(f"another mark: {value}"),
        }.get(option, lambda: pytest.fail(f"the evaluator does not model {option}"))()
        if not ok:
            return False
        i += 2
    return True


def evaluate(rules: list[str], packet: Packet, chain: str | None = None) -> tuple[str, bool]:
    """Walk the rules from the packet's hook as the kernel does (jumps into our chains, CONNMARK, then the
    first verdict); returns (ACCEPT / REJECT / DROP, or RETURN when a chain ends without one, and whether
    the connection is marked afterwards). A built-in chain's policy here is ACCEPT."""
    marked = packet.marked
    for rule in rules:
        parts = rule.split()
        if parts[1] != (chain or packet.hook):
            continue
        jump = parts.index("-j")
        if not _matches(parts[2:jump], replace(packet, marked=marked)):
            continue
        target = parts[jump + 1]
        if target == "CONNMARK":
            assert parts[jump + 2:] == ["--set-xmark", netguard.MARK], rule
            marked = True
        elif target in ("ACCEPT", "REJECT", "DROP"):
            return target, marked
        else:
            result, marked = evaluate(rules, replace(packet, marked=marked), target)
            if result != "RETURN":
                return result, marked
    return ("RETURN" if chain else "ACCEPT"), marked


def verdict(rules: list[str], address: str, port: int, proto: str = "tcp") -> str:
    """What happens to a new outbound connection."""
    return evaluate(rules, Packet("OUTPUT", address, port, proto))[0]


@pytest.mark.parametrize(("address", "port", "expected"), [
    ("10.0.5.9", 8081, "ACCEPT"),        # the hub API on the overlay
    ("10.0.5.9", 8888, "REJECT"),        # another notebook
    ("10.0.5.9", 443, "REJECT"),         # the hub's proxy on the overlay
    ("198.51.100.7", 443, "ACCEPT"),     # the tenant
    ("198.51.100.7", 22, "ACCEPT"),      # the tenant host is the outside world too (non-private)
    ("10.10.0.10", 443, "ACCEPT"),       # the hub's published port
    ("10.10.0.10", 2049, "REJECT"),      # NFS on the hub
    ("10.10.0.10", 111, "REJECT"),
    ("10.10.0.10", 2377, "REJECT"),
    ("10.10.0.21", 22, "REJECT"),        # this worker's sshd
    ("10.10.0.21", 7946, "REJECT"),
    ("172.18.0.1", 2375, "REJECT"),      # this host through its gateway bridge
    ("172.18.0.7", 8888, "REJECT"),      # another container on this host's bridge
    ("10.10.0.2", 53, "ACCEPT"),         # this host's DNS server
    ("169.254.169.254", 80, "REJECT"),
    ("169.254.1.1", 80, "REJECT"),
    ("10.30.0.1", 443, "REJECT"),        # private addresses: refused by default (z2jh's privateIPs: false)
    ("10.30.0.1", 53, "ACCEPT"),         # but DNS to them is allowed (dnsPortsPrivateIPs)
    ("203.0.113.10", 443, "ACCEPT"),     # the outside world
    ("224.0.0.1", 5353, "REJECT"),
])
def test_default_policy(address: str, port: int, expected: str) -> None:
    assert verdict(filter_rules(policy(), VIEW, resolve), address, port) == expected


def test_the_operators_lists_and_rules() -> None:
    rules = filter_rules(policy(allow=(Target.parse("db.example.org:5432"), Target.parse("10.40.0.0/16")),
                                deny=(Target.parse("203.0.113.0/24"), Target.parse("198.51.100.7:443")),
                                allow_rules={**ALLOW_RULES, "cloud_metadata_server": True, "non_private_ips": False}), VIEW, resolve)
    assert verdict(rules, "10.20.0.5", 5432) == "ACCEPT" and verdict(rules, "10.20.0.5", 5433) == "REJECT"
    assert verdict(rules, "10.40.1.1", 8080) == "ACCEPT"
    assert verdict(rules, "203.0.113.10", 443) == "REJECT"     # deny wins over everything allowed
    assert verdict(rules, "198.51.100.7", 443) == "REJECT"     # even the tenant, if the operator says so
    assert verdict(rules, "169.254.169.254", 80) == "ACCEPT"
    assert verdict(rules, "169.254.1.1", 80) == "REJECT"
    assert verdict(rules, "8.8.8.8", 443) == "REJECT"          # non_private_ips: false


def test_an_operator_allow_never_opens_a_host_or_another_notebook() -> None:
    rules = filter_rules(policy(allow=(Target.parse("10.0.0.0/8"),), allow_rules={**ALLOW_RULES, "private_ips": True}), VIEW, resolve)
    assert verdict(rules, "10.10.0.10", 2049) == "REJECT"
    assert verdict(rules, "10.0.5.9", 8888) == "REJECT"
    assert verdict(rules, "10.30.0.1", 443) == "ACCEPT"


def test_inbound_only_through_the_gate_and_the_gate_last() -> None:
    texts = restore_text(policy(), VIEW, resolve)
    assert f"-A DEPLOYER-IN -p tcp --dport 8888 -m conntrack --ctstate NEW --ctorigdstport 8889 -j {ACCEPTED}" in texts["filter"]
    assert texts["filter"].index("-A DEPLOYER-IN -j DROP") > texts["filter"].index("--ctorigdstport")
    assert "REDIRECT --to-ports 8888" in texts["nat"] and "*filter" not in texts["nat"]
    assert "-A OUTPUT -o lo -j ACCEPT" in texts["ip6"] and texts["ip6"].rstrip().endswith("COMMIT")


def test_a_name_that_does_not_resolve_adds_no_rule_and_no_wildcard() -> None:
    rules = filter_rules(policy(allow=(Target.parse("gone.example.org:443"),)), VIEW, resolve)
    assert rules == filter_rules(policy(), VIEW, resolve)  # not an accept without -d, which would allow everything


@pytest.mark.parametrize("text", ["10.0.0.0/8", "10.1.2.3:5432", "db.example.org", "DB.example.org.:443", "192.0.2.1/32:80"])
def test_targets_parse(text: str) -> None:
    parsed = Target.parse(text)
    assert Target.parse(str(parsed)) == parsed


@pytest.mark.parametrize("text", ["", "10.0.0.0/33", "fd00::1", "host:0", "host:http", "-bad-.org", "1.2.3", "a b", "10.0.0.1/8/8"])
def test_bad_targets_are_refused(text: str) -> None:
    with pytest.raises(TargetError):
        Target.parse(text)


def test_policy_round_trips_through_json() -> None:
    p = policy(allow=(Target.parse("10.40.0.0/16"),), deny=(Target.parse("db.example.org:5432"),))
    assert Policy.from_json(p.to_json()) == p


def test_deploy_starts_the_guard_once_and_replaces_it_when_its_spec_changes(site) -> None:
    d = deployment_of(site())
    layout = Layout.of(d)
    guard = deploy_guard.sidecar(d, layout, "sha256:a")
    first = sidecars.commands(guard, None)
    assert [c.argv[:2] for c in first] == [("docker", "run")]
    argv = first[0].argv
    assert argv[argv.index("--name") + 1] == "jupyterhub-prod-designsafe-netguard" and "--privileged" not in argv
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--cap-add"] == ["NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE"]
    assert argv[argv.index("--cap-drop") + 1] == "ALL" and "--read-only" in argv and "--restart" in argv
    policy_json = next(a for a in argv if a.startswith("DEPLOYER_NETGUARD_POLICY=")).split("=", 1)[1]
    assert Policy.from_json(policy_json).hosts == tuple(sorted({a for h in d.hosts for a in (h.address, h.ssh_host)}))
    assert sidecars.commands(guard, (guard.spec_hash, True)) == []
    assert [c.argv[:2] for c in sidecars.commands(guard, (guard.spec_hash, False))] == [("docker", "rm"), ("docker", "run")]
    configs = base_configs()
    configs[SCOPE]["notebook_egress_deny"] = ["10.9.0.0/16"]
    changed = deploy_guard.sidecar(deployment_of(site(configs=configs)), layout, "sha256:a")
    rebuilt = deploy_guard.sidecar(d, layout, "sha256:b")
    assert len({guard.spec_hash, changed.spec_hash, rebuilt.spec_hash}) == 3
    assert sidecars.parse_current("") is None and sidecars.parse_current("abc true\n") == ("abc", True)


# --- only connections the rules accepted take the fast path ---------------------------------------


@pytest.mark.parametrize(("address", "port"), [("10.0.5.9", 8081), ("198.51.100.7", 443), ("10.10.0.10", 443), ("10.10.0.2", 53),
                                               ("10.30.0.1", 53), ("203.0.113.10", 443)])
def test_every_connection_the_rules_accept_is_marked_and_its_replies_pass(address: str, port: int) -> None:
    rules = filter_rules(policy(), VIEW, resolve)
    assert evaluate(rules, Packet("OUTPUT", address, port)) == ("ACCEPT", True)
    assert evaluate(rules, Packet("INPUT", address, port, state="ESTABLISHED", marked=True)) == ("ACCEPT", True)
    assert evaluate(rules, Packet("OUTPUT", address, port, state="ESTABLISHED", marked=True)) == ("ACCEPT", True)


@pytest.mark.parametrize(("address", "port"), [("10.10.0.10", 2049), ("10.10.0.21", 22), ("172.18.0.1", 45999), ("10.0.5.9", 8888),
                                               ("169.254.169.254", 80), ("10.30.0.1", 443)])
def test_a_connection_open_before_the_rules_loaded_is_judged_as_a_new_one(address: str, port: int) -> None:
    """Unmarked (the rules never accepted it) and ESTABLISHED (conntrack saw it before, or picked it up
    mid-stream): refused where a new connection is, in both directions."""
    rules = filter_rules(policy(), VIEW, resolve)
    for state in ("ESTABLISHED", "RELATED"):
        assert evaluate(rules, Packet("OUTPUT", address, port, state=state)) == ("REJECT", False)
        assert evaluate(rules, Packet("INPUT", address, port, state=state)) == ("DROP", False)


def test_a_connection_open_before_the_rules_to_an_allowed_destination_goes_on_marked() -> None:
    rules = filter_rules(policy(), VIEW, resolve)
    assert evaluate(rules, Packet("OUTPUT", "203.0.113.10", 443, state="ESTABLISHED")) == ("ACCEPT", True)


def test_inbound_only_the_hubs_connections_through_the_gate_are_marked() -> None:
    rules = filter_rules(policy(), VIEW, resolve)
    assert evaluate(rules, Packet("INPUT", "10.0.5.2", 8888, origdstport=8889)) == ("ACCEPT", True)
    assert evaluate(rules, Packet("INPUT", "10.0.5.2", 8888, origdstport=8888)) == ("DROP", False)  # straight to the server
    assert evaluate(rules, Packet("INPUT", "10.0.5.2", 8888, state="ESTABLISHED", origdstport=8888)) == ("DROP", False)  # opened before
    assert evaluate(rules, Packet("INPUT", "127.0.0.1", 8888, interface="lo")) == ("ACCEPT", False)  # loopback needs no mark


def test_every_accepting_verdict_but_loopbacks_and_marked_replies_goes_through_the_marking_chain() -> None:
    rules = filter_rules(policy(allow=(Target.parse("10.40.0.0/16"),), allow_rules={**ALLOW_RULES, "cloud_metadata_server": True, "private_ips": True}),
                         VIEW, resolve)
    plain = [r for r in rules if r.endswith("-j ACCEPT") and not r.startswith(f"-A {ACCEPTED} ")]
    assert plain == ["-A DEPLOYER-IN -i lo -j ACCEPT", f"-A DEPLOYER-IN {netguard.REPLIES} -j ACCEPT",
                     "-A DEPLOYER-OUT -o lo -j ACCEPT", f"-A DEPLOYER-OUT {netguard.REPLIES} -j ACCEPT"]
    assert [r for r in rules if r.startswith(f"-A {ACCEPTED} ")] == [f"-A {ACCEPTED} -j CONNMARK --set-xmark {netguard.MARK}", f"-A {ACCEPTED} -j ACCEPT"]
    assert f":{ACCEPTED} - [0:0]" in restore_text(policy(), VIEW, resolve)["filter"]


# --- every address of every swarm node -----------------------------------------------------------


def test_the_swarms_nodes_and_every_address_of_the_hosts_are_refused_on_every_port_but_the_allowed_ones() -> None:
    view = replace(VIEW, peers=(ipaddress.ip_address("10.10.0.77"),))  # a node that joined after deploy (the engine's peers)
    rules = filter_rules(policy(hosts=("10.10.0.10", "192.0.2.10", "hub.example.org", "10.10.0.21")), view, resolve)  # 192.0.2.10: the hub's public address
    for address in ("10.10.0.77", "192.0.2.10"):
        for port in (22, 2049, 2377, 7946, 443, 53):
            assert verdict(rules, address, port) == "REJECT", (address, port)
    assert verdict(rules, "10.10.0.10", 443) == "ACCEPT"  # the hub's published port, as configured
    # even where the operator allows private addresses, or the world
    rules = filter_rules(policy(hosts=("192.0.2.10",), allow_rules={**ALLOW_RULES, "private_ips": True}), view, resolve)
    assert verdict(rules, "10.10.0.77", 2049) == "REJECT" and verdict(rules, "192.0.2.10", 22) == "REJECT"


class FakeDocker(netguard.Docker):
    """The agent's Docker calls, answered from a table (the longest matching path prefix)."""

    def __init__(self, answers: dict[str, object]):
        self.answers = answers
        self.asked: list[str] = []

    def get(self, path: str, timeout: float = 30) -> object:
        self.asked.append(path)
        prefixes = sorted((p for p in self.answers if path.startswith(p)), key=len)
        if not prefixes:
            raise OSError(f"Docker answered 404 to GET {path}")
        answer = self.answers[prefixes[-1]]
        if isinstance(answer, Exception):
            raise answer
        return answer


SWARM = {
    "/info": {"Swarm": {"LocalNodeState": "active", "NodeAddr": "10.10.0.21",
                        "RemoteManagers": [{"NodeID": "a", "Addr": "10.10.0.10:2377"}, {"NodeID": "b", "Addr": "[fd00::1]:2377"}]}},
    "/networks?": [{"Id": "ing", "Name": "ingress", "Ingress": True}, {"Id": "net", "Name": "jupyterhub-prod-x-net"}, {"Id": "oth", "Name": "other"}],
    "/networks/ing?verbose=true": {"Peers": [{"Name": "n1", "IP": "10.10.0.10"}, {"Name": "n4", "IP": "10.10.0.77"}, {"Name": "n0", "IP": "0.0.0.0"}]},
    "/networks/net?verbose=true": {"Peers": [{"Name": "n5", "IP": "10.10.0.78"}]},
}


def test_the_agent_reads_the_swarms_nodes_from_its_own_engine_and_keeps_the_last_when_it_cannot() -> None:
    docker = FakeDocker(SWARM)
    guard = Guard(policy(), docker, resolve)  # type: ignore[arg-type]
    assert [str(a) for a in guard.known_peers()] == ["10.10.0.10", "10.10.0.77", "10.10.0.78"]
    assert "/networks/oth?verbose=true" not in docker.asked
    guard.docker = FakeDocker({"/info": OSError("no answer")})  # type: ignore[assignment]
    assert [str(a) for a in guard.known_peers()] == ["10.10.0.10", "10.10.0.77", "10.10.0.78"]


# --- the host's NFS rules ------------------------------------------------------------------------


def _host(policy_: Policy) -> list[str]:
    text = host_rules(policy_, ["10.10.0.10/32", "192.0.2.10/32"], ["docker0", "docker_gwbridge", "br-0123456789ab"])
    assert text.startswith("*filter\n") and text.endswith("COMMIT\n")
    forward, inbound = host_chains(policy_.deployment)
    assert f":{forward} - [0:0]" in text and f":{inbound} - [0:0]" in text  # declared: flushed and refilled at each load
    # hooked as the agent hooks them (first in DOCKER-USER and INPUT)
    return [f"-A FORWARD -j {forward}", f"-A INPUT -j {inbound}", *(line for line in text.splitlines() if line.startswith("-A "))]


@pytest.mark.parametrize("port", [2049, 111, 875])
@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_no_container_reaches_the_shares_nfs_ports_on_any_host(port: int, proto: str) -> None:
    rules = _host(policy(nfs_ports=nfs.ports(kernel=False)))
    # a container on this worker to the hub (forwarded, then masqueraded), on any bridge or the overlay's way out
    for interface in ("docker0", "docker_gwbridge", "br-0123456789ab"):
        assert evaluate(rules, Packet("FORWARD", "10.10.0.10", port, proto, interface=interface))[0] == "REJECT"
        assert evaluate(rules, Packet("FORWARD", "192.0.2.10", port, proto, interface=interface))[0] == "REJECT"
        # a container reaching this host itself (the hub, when it is a worker too)
        assert evaluate(rules, Packet("INPUT", "10.10.0.21", port, proto, interface=interface))[0] == "REJECT"
    # the workers' own NFS traffic to the hub arrives on the hub's network interface, and is untouched
    assert evaluate(rules, Packet("INPUT", "10.10.0.21", port, proto, interface="eth0"))[0] == "ACCEPT"


def test_the_host_rules_leave_everything_else_alone() -> None:
    rules = _host(policy(nfs_ports=nfs.ports(kernel=False)))
    assert evaluate(rules, Packet("FORWARD", "10.10.0.10", 443, interface="docker_gwbridge"))[0] == "ACCEPT"  # the hub's HTTPS
    assert evaluate(rules, Packet("FORWARD", "10.20.0.5", 2049, interface="docker0"))[0] == "ACCEPT"  # another NFS server: not ours to judge
    assert evaluate(rules, Packet("INPUT", "10.10.0.21", 22, interface="docker0"))[0] == "ACCEPT"


def test_host_chains_fit_iptables_and_differ_per_deployment() -> None:
    chains = host_chains("jupyterhub-prod-designsafe-with-a-rather-long-name")
    assert all(len(c) <= 28 for c in chains) and len(set(chains)) == 2
    assert set(chains).isdisjoint(host_chains("jupyterhub-prod-other"))


def test_the_nfs_ports_are_what_the_server_listens_on_as_deploy_configures_it(site) -> None:
    assert nfs.ports(kernel=False) == (111, 875, 2049)  # nfs-ganesha, NFSv4 only: NFS, its RQUOTA, rpcbind
    assert set(nfs.ports(kernel=True)) >= {111, 2049}
    d = deployment_of(site())
    assert deploy_guard.policy(d, Layout.of(d)).nfs_ports == nfs.ports(kernel=d.config.use_stock_nfs)


class Iptables:
    """iptables as the agent runs it, recorded; chains that exist answer -L, hooks that exist answer -C."""

    def __init__(self, chains: set[str], hooks: set[tuple[str, str]] | None = None, fail: str = ""):
        self.chains, self.hooks, self.fail, self.ran = chains, hooks or set(), fail, []

    def __call__(self, *argv: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        self.ran.append(argv)
        code = 0
        if argv[0] == self.fail:
            code = 1
        elif argv[1:3] == ("-n", "-L"):
            code = 0 if argv[3] in self.chains else 1
        elif argv[1] == "-C":
            code = 0 if (argv[2], argv[4]) in self.hooks else 1
        elif argv[1] == "-D":
            code = 0 if (argv[2], argv[4]) in self.hooks else 1
            self.hooks.discard((argv[2], argv[4]))
        elif argv[1] == "-I":
            self.hooks.add((argv[2], argv[5]))
        if code and check:
            raise subprocess.CalledProcessError(code, argv, "", f"{argv[0]}: failed")
        return subprocess.CompletedProcess(argv, code, "", "")


ENGINE = {**SWARM, "/networks?filters=%7B%22driver%22%3A%20%5B%22bridge": [
    {"Id": "b" * 64, "Name": "bridge", "Options": {"com.docker.network.bridge.name": "docker0"}},
    {"Id": "0123456789ab" + "c" * 52, "Name": "mine", "Options": {}},
    {"Id": "d" * 64, "Name": "custom", "Options": {"com.docker.network.bridge.name": "lab0"}},
]}


def test_the_agent_keeps_the_host_rules_hooked_first_in_docker_user_and_input(monkeypatch, capsys) -> None:
    iptables = Iptables({"DOCKER-USER"})
    monkeypatch.setattr(netguard, "_iptables", iptables)
    guard = Guard(policy(), FakeDocker(ENGINE), resolve)  # type: ignore[arg-type]
    around = (netguard.Around((), (), (), guard.known_peers()), resolve)
    guard.keep_host_rules(around)
    forward, inbound = host_chains(guard.policy.deployment)
    restore = [a for a in iptables.ran if a[0] == "iptables-restore"]
    assert restore == [("iptables-restore", "--noflush")]
    assert iptables.hooks == {("DOCKER-USER", forward), ("INPUT", inbound)}
    assert ("iptables", "-I", "DOCKER-USER", "1", "-j", forward) in iptables.ran
    loaded = guard.host_text
    for bridge in ("docker0", "docker_gwbridge", "br-0123456789ab", "lab0"):
        assert f"-A {inbound} -i {bridge} -p tcp" in loaded
    for dest in ("10.10.0.10/32", "10.10.0.21/32", "10.10.0.77/32"):  # the policy's hosts (names resolved) and the swarm's nodes
        assert f"-A {forward} -d {dest} -p tcp" in loaded
    assert "NFS ports 111,2049 refused to containers" in capsys.readouterr().err
    iptables.ran.clear()
    guard.keep_host_rules(around)  # every sweep: loaded again (one transaction), hooks checked, not doubled; said once
    assert [a[:2] for a in iptables.ran if a[1] == "-I"] == [] and "NFS ports" not in capsys.readouterr().err


def test_host_rules_that_cannot_be_loaded_are_said_once_and_tried_at_every_sweep(monkeypatch, capsys) -> None:
    iptables = Iptables({"DOCKER-USER"}, fail="iptables-restore")
    monkeypatch.setattr(netguard, "_iptables", iptables)
    guard = Guard(policy(), FakeDocker(ENGINE), resolve)  # type: ignore[arg-type]
    around = (netguard.Around((), (), (), ()), resolve)
    guard.keep_host_rules(around)
    guard.keep_host_rules(around)
    assert capsys.readouterr().err.count("could not load the host's NFS rules") == 1
    assert [a[0] for a in iptables.ran].count("iptables-restore") == 2 and guard.host_text == ""


def test_without_dockers_chain_the_forward_hook_is_forward_itself(monkeypatch) -> None:
    iptables = Iptables(set())
    monkeypatch.setattr(netguard, "_iptables", iptables)
    netguard.install_host_rules("x", host_rules(policy(deployment="x"), [], []))
    assert iptables.hooks == {("FORWARD", host_chains("x")[0]), ("INPUT", host_chains("x")[1])}


def test_unguarding_a_host_removes_every_hook_then_the_chains(monkeypatch) -> None:
    forward, inbound = host_chains("x")
    iptables = Iptables({"DOCKER-USER", forward, inbound}, {("DOCKER-USER", forward), ("FORWARD", forward), ("INPUT", inbound)})
    monkeypatch.setattr(netguard, "_iptables", iptables)
    assert netguard.main(["--unguard-host", "x"]) == 0
    assert iptables.hooks == set()
    assert [a for a in iptables.ran if a[1] in ("-F", "-X")] == [("iptables", "-F", forward), ("iptables", "-X", forward),
                                                                  ("iptables", "-F", inbound), ("iptables", "-X", inbound)]


# --- IPv6 fails closed --------------------------------------------------------------------------


class Namespace:
    """nsenter into a notebook's namespace, recorded; ip6tables-restore fails as a kernel without ip6 tables makes it."""

    def __init__(self):
        self.ran: list[tuple[str, ...]] = []

    def __call__(self, pid: int, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        self.ran.append(argv)
        if argv[0] == "ip6tables-restore":
            raise subprocess.CalledProcessError(2, ["nsenter", "-t", str(pid), "-n", *argv], "",
                                                "ip6tables-restore v1.8.9 (nf_tables): Could not fetch rule set generation id: Protocol not supported")
        return subprocess.CompletedProcess(argv, 0, "", "")


CONTAINER = {"Id": "c" * 64, "Name": "/jupyterhub-prod-x-nb-jdoe.1.abc", "State": {"Pid": 4242, "Running": True},
             "NetworkSettings": {"Networks": {"jupyterhub-prod-x-net": {"IPAddress": "10.0.5.7", "IPPrefixLen": 24}}}}


@pytest.mark.parametrize(("ipv6", "gate"), [(True, False), (False, True)])
def test_ipv6_rules_that_do_not_load_keep_the_gate_closed_unless_the_namespace_has_no_ipv6(monkeypatch, capsys, ipv6: bool, gate: bool) -> None:
    namespace = Namespace()
    monkeypatch.setattr(netguard, "_nsenter", namespace)
    monkeypatch.setattr(netguard, "_gate_hooked", lambda pid: False)
    monkeypatch.setattr(netguard, "has_ipv6", lambda pid: ipv6)
    guard = Guard(policy(), FakeDocker({f"/containers/{'c' * 64}/json": CONTAINER}), resolve)  # type: ignore[arg-type]
    guard.protect("c" * 64, (netguard.Around((), (), (), ()), resolve))
    opened = ("iptables", "-t", "nat", "-A", "PREROUTING", "-j", "DEPLOYER-GATE") in namespace.ran
    assert opened == gate and (("c" * 64) in guard.applied) == gate
    if not gate:
        err = capsys.readouterr().err
        assert "could not guard jupyterhub-prod-x-nb-jdoe.1.abc" in err and "ip6tables-restore failed" in err and "gate stays closed" in err
        assert not any(argv[0] == "iptables-restore" and "--noflush" in argv for argv in namespace.ran)  # not even the nat table's gate chain


def test_a_burst_of_starts_reads_the_swarm_once_and_a_sweep_reads_it_anew(monkeypatch) -> None:
    """The surroundings (the verbose listing of the notebook network, which grows with every server) are read
    once for starts that come within SURROUNDINGS_MAX_AGE, not once per container; a sweep always reads them."""
    namespace = Namespace()
    monkeypatch.setattr(netguard, "_nsenter", namespace)
    monkeypatch.setattr(netguard, "_gate_hooked", lambda pid: True)
    monkeypatch.setattr(netguard, "has_ipv6", lambda pid: False)
    monkeypatch.setattr(netguard, "host_view", lambda: ((), (), ()))
    containers = {f"/containers/{i}{'c' * 63}/json": {**CONTAINER, "Id": f"{i}{'c' * 63}"} for i in range(5)}
    docker = FakeDocker({**SWARM, **containers, "/containers/json": [{"Id": c["Id"]} for c in containers.values()],
                         "/networks/oth?verbose=true": {}})
    guard = Guard(policy(), docker, resolve)  # type: ignore[arg-type]
    for i in range(5):
        guard.protect(f"{i}{'c' * 63}")
    assert docker.asked.count("/networks/net?verbose=true") == 1 and len(guard.applied) == 5
    monkeypatch.setattr(netguard, "_iptables", Iptables({"DOCKER-USER"}))
    guard.sweep()
    assert docker.asked.count("/networks/net?verbose=true") == 2
    monkeypatch.setattr(netguard.time, "monotonic", lambda: 10**9)  # long after: a start reads them again
    guard.protect(f"0{'c' * 63}")
    assert docker.asked.count("/networks/net?verbose=true") == 3


# --- deploy: the policy from every host's facts, and the guard's removal --------------------------


def test_deploy_refuses_every_address_of_every_host_and_every_swarm_node(site) -> None:
    d = deployment_of(site())
    facts = ready_facts()
    facts["hub1"].addresses = {"10.10.0.10", "192.0.2.10"}  # a public address besides the private one
    facts["worker1"].addresses = {"10.10.0.11", "10.20.0.11"}  # a second interface
    facts["hub1"].node_addresses = {"10.10.0.10", "10.10.0.11", "10.10.0.12", "10.10.0.99"}  # 99: another deployment's worker
    hosts = deploy_guard.policy(d, Layout.of(d), facts).hosts
    assert {"192.0.2.10", "10.20.0.11", "10.10.0.99", "10.10.0.12"} <= set(hosts) and list(hosts) == sorted(hosts)
    argv = deploy_guard.sidecar(d, Layout.of(d), "sha256:g", facts).run("x").argv
    assert Policy.from_json(next(a for a in argv if a.startswith("DEPLOYER_NETGUARD_POLICY=")).split("=", 1)[1]).hosts == hosts


def test_a_hosts_addresses_are_its_own_not_loopbacks_or_dockers_bridges() -> None:
    output = ("1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever\n"
              "2: eth0    inet 10.10.0.10/24 brd 10.10.0.255 scope global eth0\\       valid_lft forever preferred_lft forever\n"
              "2: eth0    inet 10.10.0.50/24 scope global secondary eth0\n"
              "3: ens5    inet 192.0.2.10/24 scope global ens5\n"
              "4: docker0    inet 172.17.0.1/16 brd 172.17.255.255 scope global docker0\n"
              "5: docker_gwbridge    inet 172.18.0.1/16 scope global docker_gwbridge\n"
              "6: br-0123456789ab    inet 10.99.0.1/24 scope global br-0123456789ab\n"
              "7: br-lan    inet 10.30.0.1/24 scope global br-lan\n")
    assert parse_addresses(output) == {"10.10.0.10", "10.10.0.50", "192.0.2.10", "10.30.0.1"}
    assert parse_node_addresses("10.10.0.10 10.10.0.10:2377\n10.10.0.11 \n0.0.0.0 \n127.0.0.1 127.0.0.1:2377\n") == {"10.10.0.10", "10.10.0.11"}


def test_a_removed_workers_node_leaves_the_planned_policy(site) -> None:
    d = deployment_of(site())
    facts = ready_facts()
    facts["hub1"].state["workers.json"] = json.dumps([{"host_id": "old", "ssh_host": "10.10.0.40", "private_ip": None, "ssh_user": "root",
                                                      "ssh_key": None, "ssh_port": 22, "ssh_known_hosts": None}])
    facts["hub1"].node_addresses = {"10.10.0.10", "10.10.0.40"}
    ctx = Context.of(d)
    members.FORGET_PHASE.expect(ctx, facts, members.FORGET_PHASE.plan(ctx, facts))
    assert facts["hub1"].node_addresses == {"10.10.0.10"}


def test_removing_the_guard_removes_its_host_rules_with_its_own_image(site) -> None:
    layout = Layout.of(deployment_of(site()))
    command = deploy_guard.remove_command(layout)
    assert command.argv[-2:] == (deploy_guard.container_name(layout), layout.name)
    script = command.argv[2]
    assert script.index("docker rm --force") < script.index('"$image" --unguard-host "$2"')
    assert "--cap-add NET_ADMIN" in script and "--network host" in script and script.rstrip().endswith("echo removed")
