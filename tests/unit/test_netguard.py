"""The network guard's policy and ruleset (pure): what is refused comes before what is allowed, the
operator's lists and allow rules land where they should, and deploy's commands are idempotent."""

from __future__ import annotations

import ipaddress

import pytest
from conftest import SCOPE, base_configs
from deployer_hub.netguard import ALLOW_RULES, Policy, Target, TargetError, View, filter_rules, restore_text
from unit.test_phase_plans import deployment_of

from deployer.config.hubsettings import Layout
from deployer.phases import netguard as deploy_guard
from deployer.phases import sidecars

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


def verdict(rules: list[str], address: str, port: int, proto: str = "tcp") -> str:
    """The first rule of DEPLOYER-OUT that matches a new connection (a small evaluator of our own rules)."""
    for rule in rules:
        parts = rule.split()
        if parts[1] != "DEPLOYER-OUT" or "--ctstate" in parts or "-o" in parts:
            continue
        if "-d" in parts and ipaddress.ip_address(address) not in ipaddress.ip_network(parts[parts.index("-d") + 1]):
            continue
        if "-p" in parts and (parts[parts.index("-p") + 1] != proto or int(parts[parts.index("--dport") + 1]) != port):
            continue
        return "ACCEPT" if rule.endswith("ACCEPT") else "REJECT"
    raise AssertionError("no rule matched")


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
    assert "-A DEPLOYER-IN -p tcp --dport 8888 -m conntrack --ctstate NEW --ctorigdstport 8889 -j ACCEPT" in texts["filter"]
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
