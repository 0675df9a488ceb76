"""The network guard: what a notebook container may reach, enforced inside its own network namespace.

A notebook user runs any code as their uid and can send any packet from their container. Their
traffic to the hosts leaves the worker under the worker's own address, so host firewalls and NFS
exports limited to the workers cannot tell it from the host's own; and notebook-to-notebook traffic
on the overlay network never passes the hosts' iptables at all. So the rules live where only that
container's packets pass: a per-host agent (one container per host, ``--network host --pid host``,
started by ``deployer deploy``) watches Docker for notebook containers of its deployment and loads
an iptables ruleset into each one's network namespace. The user cannot change it: a notebook has
no capabilities (no CAP_NET_ADMIN) and no way to gain them.

The ruleset is also the gate: the hub reaches a notebook only through ``guarded_port``, which
exists only as a REDIRECT installed last by the agent. Until the rules are in, the hub cannot reach
the server, so it never routes a user to an unguarded one, whatever image the notebook runs.

Outbound, in this order (the first match decides):
  loopback, and replies to connections these rules accepted (marked: see MARK): allowed
  the operator's ``deny`` list: refused
  the hub API on the deployment's overlay network (the hub, and its relay: port 8081): allowed; anything else on any attached
      network (other notebooks, the hub's other ports): refused
  the tenant (its host and port): allowed
  the hub's published HTTPS/HTTP ports: allowed
  the host's DNS resolvers, port 53: allowed
  every address of every deployment host (deploy reads them all) and of every swarm node (deploy
      asks the manager; the agent asks its own engine at each sweep), every address of this host,
      any port (NFS, rpcbind, Docker, swarm, sshd, ...), and this host's Docker bridges: refused
  169.254.169.254 (cloud metadata): refused unless ``cloud_metadata_server``; the rest of
      169.254.0.0/16 and multicast: refused
  the operator's ``allow`` list: allowed
  private addresses: port 53 allowed if ``dns_ports_private_ips``; the rest as ``private_ips``
  everything else (the outside world): as ``non_private_ips``
Inbound: only connections that arrived on ``guarded_port``. IPv6: loopback only, and if those rules
cannot be loaded in a namespace that has IPv6, the gate is never opened.

A connection that was open before the rules loaded (the agent acts on Docker's start event, after
the notebook's first process started) is judged as a new one at its next packet: see MARK.

On the host itself (the agent runs in its network namespace) the share's NFS ports take nothing from
any container, guarded or not: see host_rules.

Standard library only: this file is the agent (``python3 netguard.py``, in the netguard image) and
the CLI imports its policy parsing to validate the operator's lists.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import ipaddress
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, NamedTuple

#: The label (value: the deployment's name) the spawner puts on every notebook container.
LABEL = "deployer.notebook"
#: The notebook server's port, and how the hub reaches it: a port the guard redirects to it.
NOTEBOOK_PORT = 8888
GUARDED_PORT_OFFSET = 1
#: The hub API on the overlay network (JupyterHub's hub_connect_url for notebooks).
HUB_API_PORT = 8081
#: z2jh's egressAllowRules, with its defaults (snake case, as Deployer's other keys).
ALLOW_RULES = {"cloud_metadata_server": False, "dns_ports_private_ips": True, "non_private_ips": True, "private_ips": False}
METADATA = ipaddress.ip_network("169.254.169.254/32")
LINK_LOCAL = ipaddress.ip_network("169.254.0.0/16")
PRIVATE = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"))
#: Never a destination a notebook needs: "this network", loopback not via lo, multicast, reserved.
SPECIAL = tuple(ipaddress.ip_network(n) for n in ("0.0.0.0/8", "127.0.0.0/8", "224.0.0.0/4", "240.0.0.0/4"))
REJECT = "REJECT --reject-with icmp-admin-prohibited"
#: The conntrack mark of the connections these rules accepted: every accepting verdict goes through
#: ACCEPTED, which marks the connection, and only marked connections take the fast path for their
#: later packets (REPLIES). A connection already open when the rules loaded carries no mark, so its
#: next packet, in or out, is judged like a new connection's and dies if the destination is refused.
#: (Flushing conntrack would not do: nf_conntrack_tcp_loose picks mid-stream TCP up as ESTABLISHED.)
#: One bit of the mark; nothing else in a notebook's namespace marks connections.
MARK = "0x40000000/0x40000000"
ACCEPTED = "DEPLOYER-ACCEPT"
REPLIES = f"-m conntrack --ctstate ESTABLISHED,RELATED -m connmark --mark {MARK}"
#: The share's NFS server: rpcbind and NFS (deploy adds what its server also listens on).
NFS_PORTS = (111, 2049)
_INTERFACE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?$")


class TargetError(ValueError):
    """An allow/deny entry that is not ADDRESS[/PREFIX][:PORT]."""


@dataclass(frozen=True)
class Target:
    """One allow/deny entry: an IPv4 address, network or host name, optionally one port (TCP and UDP)."""

    host: str  # an IPv4 network in CIDR form, or a host name resolved by the agent
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> "Target":
        if not isinstance(text, str) or not text.strip():
            raise TargetError("must be ADDRESS[/PREFIX][:PORT], e.g. 10.1.0.0/16, 10.1.2.3:5432 or db.example.org:5432")
        text = text.strip()
        host, port = text, None
        if text.count(":") == 1:
            host, _, port_text = text.partition(":")
            if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise TargetError(f"{text!r}: the port must be a number from 1 to 65535")
            port = int(port_text)
        elif ":" in text:
            raise TargetError(f"{text!r}: IPv6 is not supported (notebooks reach IPv6 addresses not at all)")
        try:
            network = ipaddress.IPv4Network(host, strict=False)
        except ValueError:
            if "/" in host or not _HOSTNAME.match(host) or host.replace(".", "").isdigit():
                raise TargetError(f"{text!r}: not an IPv4 address, network (CIDR) or host name") from None
            return cls(host.lower().rstrip("."), port)
        return cls(str(network), port)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}" if self.port else self.host


@dataclass(frozen=True)
class Policy:
    """What deploy tells the agent on a host (JSON in the agent's environment)."""

    deployment: str
    network: str
    hosts: tuple[str, ...] = ()  # every deployment host's addresses (refused, any port)
    hub_ports: tuple[str, ...] = ()  # "address:port" of the hub's published ports (allowed)
    tenant: tuple[str, ...] = ()  # "host:port" of the tenant (allowed)
    allow: tuple[Target, ...] = ()
    deny: tuple[Target, ...] = ()
    allow_rules: dict = field(default_factory=lambda: dict(ALLOW_RULES))
    notebook_port: int = NOTEBOOK_PORT
    hub_api_port: int = HUB_API_PORT
    nfs_ports: tuple[int, ...] = NFS_PORTS  # the share's server: no container reaches these on the hosts

    @property
    def guarded_port(self) -> int:
        return self.notebook_port + GUARDED_PORT_OFFSET

    @classmethod
    def from_json(cls, text: str) -> "Policy":
        data = json.loads(text)
        return cls(
            deployment=data["deployment"], network=data["network"], hosts=tuple(data.get("hosts", ())),
            hub_ports=tuple(data.get("hub_ports", ())), tenant=tuple(data.get("tenant", ())),
            allow=tuple(Target.parse(t) for t in data.get("allow", ())), deny=tuple(Target.parse(t) for t in data.get("deny", ())),
            allow_rules={**ALLOW_RULES, **data.get("allow_rules", {})},
            notebook_port=int(data.get("notebook_port", NOTEBOOK_PORT)), hub_api_port=int(data.get("hub_api_port", HUB_API_PORT)),
            nfs_ports=tuple(int(p) for p in data.get("nfs_ports", NFS_PORTS)),
        )

    def to_json(self) -> str:
        return json.dumps({
            "deployment": self.deployment, "network": self.network, "hosts": list(self.hosts), "hub_ports": list(self.hub_ports),
            "tenant": list(self.tenant), "allow": [str(t) for t in self.allow], "deny": [str(t) for t in self.deny],
            "allow_rules": self.allow_rules, "notebook_port": self.notebook_port, "hub_api_port": self.hub_api_port,
            "nfs_ports": list(self.nfs_ports),
        }, sort_keys=True, separators=(",", ":"))


# --- the ruleset (pure) -------------------------------------------------------------------------


@dataclass(frozen=True)
class View:
    """What the agent sees for one container: its networks and this host's addresses, names resolved."""

    networks: tuple[tuple[ipaddress.IPv4Network, bool], ...]  # (subnet, is the deployment's network)
    local: tuple[ipaddress.IPv4Address, ...] = ()  # every address of this host
    bridges: tuple[ipaddress.IPv4Network, ...] = ()  # subnets of this host's Docker bridges
    resolvers: tuple[ipaddress.IPv4Address, ...] = ()  # this host's DNS servers
    peers: tuple[ipaddress.IPv4Address, ...] = ()  # the swarm's nodes this host's engine knows


Resolve = Callable[[str], list[str]]


def _addresses(host: str, resolve: Resolve) -> list[str]:
    try:
        return [str(ipaddress.IPv4Network(host, strict=False))]
    except ValueError:
        return sorted({f"{a}/32" for a in resolve(host)})


def _port_rules(chain: str, dest: str, port: int | None, verdict: str, protocols: Iterable[str] = ("tcp", "udp")) -> list[str]:
    if port is None:
        return [f"-A {chain} -d {dest} -j {verdict}"]
    return [f"-A {chain} -d {dest} -p {proto} --dport {port} -j {verdict}" for proto in protocols]


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def _verdict(allowed: bool) -> str:
    return ACCEPTED if allowed else REJECT


def filter_rules(policy: Policy, view: View, resolve: Resolve) -> list[str]:
    """The filter table's rules (chains DEPLOYER-IN and DEPLOYER-OUT, hooked first in INPUT/OUTPUT;
    every accepting verdict but loopback's through ACCEPTED, which marks the connection)."""
    out = "DEPLOYER-OUT"
    rules = [
        "-A INPUT -j DEPLOYER-IN", "-A OUTPUT -j DEPLOYER-OUT",
        f"-A {ACCEPTED} -j CONNMARK --set-xmark {MARK}", f"-A {ACCEPTED} -j ACCEPT",
        "-A DEPLOYER-IN -i lo -j ACCEPT",
        f"-A DEPLOYER-IN {REPLIES} -j ACCEPT",
        # Only what came in on the guarded port (redirected to the server's): the hub's connections.
        f"-A DEPLOYER-IN -p tcp --dport {policy.notebook_port} -m conntrack --ctstate NEW --ctorigdstport {policy.guarded_port} -j {ACCEPTED}",
        "-A DEPLOYER-IN -j DROP",
        f"-A {out} -o lo -j ACCEPT",
        f"-A {out} {REPLIES} -j ACCEPT",
    ]
    for target in policy.deny:
        for dest in _addresses(target.host, resolve):
            rules += _port_rules(out, dest, target.port, REJECT)
    for subnet, ours in view.networks:
        if ours:
            rules.append(f"-A {out} -d {subnet} -p tcp --dport {policy.hub_api_port} -j {ACCEPTED}")
        rules.append(f"-A {out} -d {subnet} -j {REJECT}")
    for entry in policy.tenant + policy.hub_ports:
        host, port = _host_port(entry)
        for dest in _addresses(host, resolve):
            rules += _port_rules(out, dest, port, ACCEPTED, ("tcp",))
    for resolver in view.resolvers:
        rules += _port_rules(out, f"{resolver}/32", 53, ACCEPTED)
    rules += [f"-A {out} -d {dest} -j {REJECT}" for dest in refused_hosts(policy, view, resolve)]
    rules.append(f"-A {out} -d {METADATA} -j {_verdict(policy.allow_rules['cloud_metadata_server'])}")
    rules.append(f"-A {out} -d {LINK_LOCAL} -j {REJECT}")
    rules += [f"-A {out} -d {n} -j {REJECT}" for n in SPECIAL]
    for target in policy.allow:
        for dest in _addresses(target.host, resolve):
            rules += _port_rules(out, dest, target.port, ACCEPTED)
    for network in PRIVATE:
        if policy.allow_rules["dns_ports_private_ips"]:
            rules += _port_rules(out, str(network), 53, ACCEPTED)
        rules.append(f"-A {out} -d {network} -j {_verdict(policy.allow_rules['private_ips'])}")
    rules.append(f"-A {out} -j {_verdict(policy.allow_rules['non_private_ips'])}")
    return rules


def refused_hosts(policy: Policy, view: View, resolve: Resolve) -> list[str]:
    """Every address of the swarm's machines (any port): the deployment's hosts, the nodes this host's
    engine knows, this host's own addresses and its Docker bridges."""
    refused = {f"{a}/32" for a in (*view.local, *view.peers)} | {str(n) for n in view.bridges}
    for host in policy.hosts:
        refused.update(_addresses(host, resolve))
    return sorted(refused)


def restore_text(policy: Policy, view: View, resolve: Resolve) -> dict[str, str]:
    """iptables-restore input per command: the whole filter table (Docker keeps nothing there in a
    container's namespace), then the nat gate (``--noflush``: Docker's DNS rules live in nat)."""
    filter_table = "\n".join(["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
                              ":DEPLOYER-IN - [0:0]", ":DEPLOYER-OUT - [0:0]", f":{ACCEPTED} - [0:0]", *filter_rules(policy, view, resolve),
                              "COMMIT", ""])
    nat = "\n".join(["*nat", ":DEPLOYER-GATE - [0:0]",
                     f"-A DEPLOYER-GATE -p tcp --dport {policy.guarded_port} -j REDIRECT --to-ports {policy.notebook_port}", "COMMIT", ""])
    ip6 = "\n".join(["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD DROP [0:0]", ":OUTPUT ACCEPT [0:0]",
                     "-A INPUT -i lo -j ACCEPT", "-A INPUT -j DROP", "-A OUTPUT -o lo -j ACCEPT", f"-A OUTPUT -j {REJECT.replace('icmp-admin-prohibited', 'icmp6-adm-prohibited')}",
                     "COMMIT", ""])
    return {"filter": filter_table, "nat": nat, "ip6": ip6}


def host_chains(deployment: str) -> tuple[str, str]:
    """The deployment's chains in the host's own filter table, (forwarded, input): a hash of its name,
    as iptables allows 28 characters and several deployments may share a worker."""
    digest = hashlib.sha256(deployment.encode()).hexdigest()[:8]
    return f"DEPLOYER-NFS-F-{digest}", f"DEPLOYER-NFS-I-{digest}"


def host_rules(policy: Policy, servers: Iterable[str], bridges: Iterable[str]) -> str:
    """iptables-restore --noflush input for the host's filter table: the share's NFS ports take nothing
    from any container on this host, guarded or not (one without the notebook label, started by anyone
    with the engine), so that no container can claim a uid over NFS (AUTH_SYS believes any).

    Forwarded (hooked into DOCKER-USER): a container's packets to another host pass the FORWARD chain
    before Docker masquerades them to this host's address; refused towards every address of the
    deployment's hosts and the swarm's nodes (only those: containers on this host may speak NFS to
    anyone else). Input (hooked into INPUT): a container reaching this host itself arrives from a
    Docker bridge; refused from every one (the host's own traffic and other hosts' never come that
    way). Declaring a chain flushes it, so each load replaces the last in one transaction."""
    forward, inbound = host_chains(policy.deployment)
    ports = ",".join(str(p) for p in sorted(set(policy.nfs_ports)))
    rules = [f"-A {forward} -d {dest} -p {proto} -m multiport --dports {ports} -j {REJECT}"
             for dest in sorted(set(servers)) for proto in ("tcp", "udp")]
    rules += [f"-A {inbound} -i {bridge} -p {proto} -m multiport --dports {ports} -j {REJECT}"
              for bridge in sorted(set(bridges)) for proto in ("tcp", "udp")]
    return "\n".join(["*filter", f":{forward} - [0:0]", f":{inbound} - [0:0]", *rules, "COMMIT", ""])


# --- the agent ----------------------------------------------------------------------------------


class Docker:
    """The few Docker API calls the agent makes, over the engine's unix socket."""

    def __init__(self, path: str = "/var/run/docker.sock"):
        self.path = path

    def _connection(self, timeout: float | None) -> http.client.HTTPConnection:
        connection = http.client.HTTPConnection("localhost", timeout=timeout)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(self.path)
        connection.sock = sock
        return connection

    def get(self, path: str, timeout: float = 30) -> object:
        connection = self._connection(timeout)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read()
            if response.status != 200:
                raise OSError(f"Docker answered {response.status} to GET {path}: {body[:200]!r}")
            return json.loads(body)
        finally:
            connection.close()

    def bridge_interfaces(self) -> list[str]:
        """The host interfaces of the engine's bridge networks (docker0, docker_gwbridge, br-<id>, or the
        name an operator gave one)."""
        filters = urllib.parse.quote(json.dumps({"driver": ["bridge"]}))
        names = []
        for network in self.get(f"/networks?filters={filters}"):  # type: ignore[union-attr]
            name = (network.get("Options") or {}).get("com.docker.network.bridge.name") or f"br-{network['Id'][:12]}"
            if _INTERFACE.match(name):
                names.append(name)
        return names

    def swarm_peers(self, network: str) -> list[ipaddress.IPv4Address]:
        """The swarm's nodes as this engine knows them (a worker cannot list nodes): its managers, and the
        peers of the ingress network (every node) and of the deployment's network."""
        swarm = self.get("/info").get("Swarm") or {}  # type: ignore[union-attr]
        found = [m.get("Addr", "").rpartition(":")[0] for m in swarm.get("RemoteManagers") or []]
        if swarm.get("LocalNodeState") == "active":
            filters = urllib.parse.quote(json.dumps({"driver": ["overlay"]}))
            for overlay in self.get(f"/networks?filters={filters}"):  # type: ignore[union-attr]
                if overlay.get("Ingress") or overlay.get("Name") == network:
                    detail = self.get(f"/networks/{overlay['Id']}?verbose=true")
                    found += [peer.get("IP", "") for peer in detail.get("Peers") or []]  # type: ignore[union-attr]
        return sorted({a for a in map(_ipv4, found) if a and not a.is_unspecified and not a.is_loopback})

    def notebooks(self, deployment: str) -> list[str]:
        filters = urllib.parse.quote(json.dumps({"label": [f"{LABEL}={deployment}"], "status": ["running"]}))
        return [c["Id"] for c in self.get(f"/containers/json?filters={filters}")]  # type: ignore[union-attr]

    def starts(self, deployment: str) -> Iterator[str]:
        """IDs of our notebook containers as they start (a stream; ends when the engine closes it)."""
        filters = urllib.parse.quote(json.dumps({"type": ["container"], "event": ["start"], "label": [f"{LABEL}={deployment}"]}))
        connection = self._connection(None)
        try:
            connection.request("GET", f"/events?filters={filters}")
            response = connection.getresponse()
            for line in response:
                if line.strip():
                    yield json.loads(line)["id"]
        finally:
            connection.close()


def _ipv4(text: str) -> ipaddress.IPv4Address | None:
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        return None


def _ip_json(*argv: str) -> list[dict]:
    return json.loads(subprocess.run(["ip", "-j", *argv], capture_output=True, text=True, check=True).stdout or "[]")


def host_view() -> tuple[tuple[ipaddress.IPv4Address, ...], tuple[ipaddress.IPv4Network, ...], tuple[ipaddress.IPv4Address, ...]]:
    """This host's IPv4 addresses, its Docker bridges' subnets and its DNS servers."""
    local, bridges = [], []
    for link in _ip_json("-4", "addr"):
        for info in link.get("addr_info", []):
            interface = ipaddress.IPv4Interface(f"{info['local']}/{info['prefixlen']}")
            local.append(interface.ip)
            name = link.get("ifname", "")
            if name in ("docker0", "docker_gwbridge") or name.startswith("br-"):
                bridges.append(interface.network)
    resolvers = []
    try:
        for line in open("/etc/resolv.conf"):
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                try:
                    address = ipaddress.IPv4Address(parts[1])
                except ValueError:
                    continue
                if not address.is_loopback:
                    resolvers.append(address)
    except OSError:
        pass
    return tuple(local), tuple(bridges), tuple(resolvers)


_unresolved: set[str] = set()


def resolve_name(name: str) -> list[str]:
    try:
        found = sorted({info[4][0] for info in socket.getaddrinfo(name, None, socket.AF_INET)})
    except OSError:
        found = []
    if not found and name not in _unresolved:  # said once per name, not at every sweep
        log(f"cannot resolve {name}; it is left out of the rules until it resolves")
    (_unresolved.add if not found else _unresolved.discard)(name)
    return found


def log(text: str) -> None:
    print(f"netguard: {text}", file=sys.stderr, flush=True)


class Around(NamedTuple):
    """What the agent reads about this host for a sweep."""

    local: tuple[ipaddress.IPv4Address, ...]
    bridges: tuple[ipaddress.IPv4Network, ...]
    resolvers: tuple[ipaddress.IPv4Address, ...]
    peers: tuple[ipaddress.IPv4Address, ...]


#: Seconds the surroundings read for one start serve the next starts (a sweep always reads them anew).
SURROUNDINGS_MAX_AGE = 10.0


class Guard:
    def __init__(self, policy: Policy, docker: Docker, resolve: Resolve = resolve_name):
        self.policy = policy
        self.docker = docker
        self.resolve = resolve
        self.applied: dict[str, str] = {}  # container id -> the ruleset it has
        self.lock = threading.Lock()
        self.peers: tuple[ipaddress.IPv4Address, ...] = ()  # the swarm's nodes, as last read
        self.interfaces: tuple[str, ...] = ()  # the engine's bridges, as last read
        self.host_text = ""  # the host rules last loaded
        self.host_error = ""  # why they could not be loaded last time (said once, not at every sweep)
        self._recent: tuple[float, tuple[Around, Resolve]] | None = None  # (when, surroundings) last read

    def surroundings(self) -> tuple[Around, Resolve]:
        """This host's addresses, bridges and DNS servers, the swarm's nodes, and a resolver that asks once
        per name: read once for a sweep of every notebook, not once per container."""
        around = Around(*host_view(), self.known_peers()), functools.cache(self.resolve)
        self._recent = (time.monotonic(), around)
        return around

    def recent_surroundings(self) -> tuple[Around, Resolve]:
        """The surroundings a starting container is judged by: read again when older than SURROUNDINGS_MAX_AGE.
        Reading them costs a verbose listing of the notebook network, which grows with every server on it: read
        per start, a burst of starts queued behind it (four seconds a container with 900 servers running). A node
        that joined meanwhile is refused by the next sweep, as one that joins after a container started is."""
        if self._recent is None or time.monotonic() - self._recent[0] > SURROUNDINGS_MAX_AGE:
            return self.surroundings()
        return self._recent[1]

    def known_peers(self) -> tuple[ipaddress.IPv4Address, ...]:
        """The swarm's nodes, read again at every sweep (a node that joined since deploy is refused too);
        the last ones read when the engine does not answer, rather than none."""
        try:
            self.peers = tuple(self.docker.swarm_peers(self.policy.network))
        except (OSError, http.client.HTTPException, ValueError, KeyError, AttributeError) as exc:
            log(f"cannot read the swarm's nodes ({exc}); keeping the {len(self.peers)} known")
        return self.peers

    def view_of(self, container: dict, host: Around) -> View:
        networks = []
        for name, net in (container.get("NetworkSettings", {}).get("Networks") or {}).items():
            if net.get("IPAddress") and net.get("IPPrefixLen"):
                subnet = ipaddress.IPv4Network(f"{net['IPAddress']}/{net['IPPrefixLen']}", strict=False)
                if name != "docker_gwbridge":
                    networks.append((subnet, name == self.policy.network))
        return View(tuple(networks), host.local, host.bridges, host.resolvers, host.peers)

    def protect(self, container_id: str, around: tuple[Around, Resolve] | None = None) -> None:
        host, resolve = around or self.recent_surroundings()
        with self.lock:
            try:
                container = self.docker.get(f"/containers/{container_id}/json")
            except OSError as exc:
                log(f"cannot inspect {container_id[:12]}: {exc}")
                return
            pid = container.get("State", {}).get("Pid")  # type: ignore[union-attr]
            if not pid or not container.get("State", {}).get("Running"):  # type: ignore[union-attr]
                self.applied.pop(container_id, None)
                return
            texts = restore_text(self.policy, self.view_of(container, host), resolve)  # type: ignore[arg-type]
            key = json.dumps(texts, sort_keys=True)
            if self.applied.get(container_id) == key:
                return
            name = container.get("Name", "").lstrip("/")  # type: ignore[union-attr]
            try:
                apply(pid, texts, self.policy)
            except subprocess.CalledProcessError as exc:
                failed = exc.cmd[4] if len(exc.cmd) > 4 else exc.cmd[0]
                log(f"could not guard {name} ({container_id[:12]}, pid {pid}): {failed} failed: {(exc.stderr or '').strip() or exc}; "
                    "the gate stays closed, the hub cannot reach it until it is guarded")
                return
            self.applied[container_id] = key
            log(f"guarded {name} ({container_id[:12]}, pid {pid}): {texts['filter'].count(chr(10) + '-A ')} rules")

    def sweep(self) -> None:
        running = self.docker.notebooks(self.policy.deployment)
        around = self.surroundings()
        self.keep_host_rules(around)
        for container_id in running:
            self.protect(container_id, around)
        with self.lock:
            for gone in set(self.applied) - set(running):
                del self.applied[gone]

    def keep_host_rules(self, around: tuple[Around, Resolve]) -> None:
        """Load the host's NFS rules at every sweep (an engine restart or a firewall reload may have
        removed them; loading replaces them in one transaction). Logged when they change."""
        host, resolve = around
        try:
            self.interfaces = tuple(self.docker.bridge_interfaces())
        except (OSError, http.client.HTTPException, ValueError, KeyError, AttributeError) as exc:
            log(f"cannot list Docker's bridges ({exc}); keeping the {len(self.interfaces)} known")
        servers = {d for h in self.policy.hosts for d in _addresses(h, resolve)} | {f"{a}/32" for a in host.peers}
        bridges = {"docker0", "docker_gwbridge", *self.interfaces}
        text = host_rules(self.policy, servers, bridges)
        try:
            install_host_rules(self.policy.deployment, text)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
            error = str(getattr(exc, "stderr", "") or exc).strip()
            if error != self.host_error:
                log(f"could not load the host's NFS rules (tried again at every sweep): {error}")
            self.host_text, self.host_error = "", error
            return
        self.host_error = ""
        if text != self.host_text:
            log(f"host rules: NFS ports {','.join(map(str, self.policy.nfs_ports))} refused to containers, "
                f"forwarded to {len(servers)} addresses of the swarm's hosts and from {len(bridges)} Docker bridges to this host")
            self.host_text = text

    def watch(self) -> None:
        while True:
            try:
                for container_id in self.docker.starts(self.policy.deployment):
                    self.protect(container_id)
            except (OSError, http.client.HTTPException, ValueError) as exc:
                log(f"the Docker event stream ended ({exc}); reconnecting")
            time.sleep(1)
            self.sweep_safely()

    def sweep_safely(self) -> None:
        try:
            self.sweep()
        except (OSError, http.client.HTTPException, ValueError) as exc:
            log(f"could not list the notebooks: {exc}")


def _nsenter(pid: int, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["nsenter", "-t", str(pid), "-n", *argv], input=stdin, capture_output=True, text=True, check=True, timeout=30)


def has_ipv6(pid: int) -> bool:
    """Whether the process's network namespace has IPv6 at all (without it the kernel has no
    /proc/net/if_inet6; --pid host shows us /proc/PID/net of the notebook's namespace)."""
    return os.path.exists(f"/proc/{pid}/net/if_inet6")


def apply(pid: int, texts: dict[str, str], policy: Policy) -> None:
    """Load the ruleset into the container's network namespace; the gate (the REDIRECT) last, so that
    any failure before it (raised) leaves the hub no way in. IPv6 fails closed: only a namespace
    without IPv6 may go without its rules."""
    _nsenter(pid, "iptables-restore", stdin=texts["filter"])
    try:
        _nsenter(pid, "ip6tables-restore", stdin=texts["ip6"])
    except subprocess.CalledProcessError:
        if has_ipv6(pid):
            raise
    _nsenter(pid, "iptables-restore", "--noflush", stdin=texts["nat"])
    if not _gate_hooked(pid):
        _nsenter(pid, "iptables", "-t", "nat", "-A", "PREROUTING", "-j", "DEPLOYER-GATE")


def _gate_hooked(pid: int) -> bool:
    return subprocess.run(["nsenter", "-t", str(pid), "-n", "iptables", "-t", "nat", "-C", "PREROUTING", "-j", "DEPLOYER-GATE"],
                          capture_output=True).returncode == 0


# --- the host's own rules (this process runs in the host's network namespace) --------------------


def _iptables(*argv: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), input=stdin, capture_output=True, text=True, check=check, timeout=30)


def forward_hook() -> str:
    """Where rules on forwarded container traffic go: Docker's DOCKER-USER (Docker keeps it first in
    FORWARD and never flushes it), else FORWARD itself (an engine without its iptables chains)."""
    return "DOCKER-USER" if _iptables("iptables", "-n", "-L", "DOCKER-USER", check=False).returncode == 0 else "FORWARD"


def install_host_rules(deployment: str, text: str) -> None:
    forward, inbound = host_chains(deployment)
    _iptables("iptables-restore", "--noflush", stdin=text)
    for chain, target in ((forward_hook(), forward), ("INPUT", inbound)):
        if _iptables("iptables", "-C", chain, "-j", target, check=False).returncode != 0:
            _iptables("iptables", "-I", chain, "1", "-j", target)


def remove_host_rules(deployment: str) -> None:
    """Undo install_host_rules (destroy, a worker's removal): the hooks, then the chains."""
    for target in host_chains(deployment):
        for chain in ("DOCKER-USER", "FORWARD", "INPUT"):
            for _ in range(16):  # every copy of the hook, bounded
                if _iptables("iptables", "-D", chain, "-j", target, check=False).returncode != 0:
                    break
        if _iptables("iptables", "-n", "-L", target, check=False).returncode == 0:
            _iptables("iptables", "-F", target)
            _iptables("iptables", "-X", target)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--unguard-host"] and len(argv) == 2:  # run by `deployer destroy` once the guard is removed
        try:
            remove_host_rules(argv[1])
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
            log(f"could not remove the host's NFS rules of {argv[1]}: {getattr(exc, 'stderr', '') or exc}")
            return 1
        return 0
    text = os.environ.get("DEPLOYER_NETGUARD_POLICY", "")
    if argv[:1] == ["--policy"] and len(argv) > 1:
        text = open(argv[1]).read()
    if not text:
        log("no policy: set DEPLOYER_NETGUARD_POLICY or pass --policy FILE")
        return 2
    try:
        policy = Policy.from_json(text)
    except (ValueError, KeyError, TargetError) as exc:
        log(f"the policy is not valid: {exc}")
        return 2
    guard = Guard(policy, Docker(os.environ.get("DOCKER_SOCKET", "/var/run/docker.sock")))
    log(f"guarding the notebooks of {policy.deployment} (network {policy.network}, gate {policy.guarded_port} -> {policy.notebook_port})")
    threading.Thread(target=guard.watch, daemon=True, name="events").start()
    while True:  # the sweep catches what the event stream missed and re-resolves host names
        guard.sweep_safely()
        time.sleep(float(os.environ.get("DEPLOYER_NETGUARD_SWEEP", "20")))


if __name__ == "__main__":
    sys.exit(main())
