"""What a notebook can reach on this machine's hub (hub and worker on one host): the hub API, DNS and
the tenant, and nothing of the host, the other notebooks or the hub's other ports.

Every refused target on the host is shown reachable from an unguarded container on the same overlay
network (the control), so a "refused" is the guard's doing and not a closed port; but for the share's NFS
ports, which the guard's host rules refuse to every container (the control), and this machine reaches."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from netprobe import Target, probe, table, tcp, wrong

from deployer.phases import nfs
from swarm.conftest import NAME, Site, docker
from swarm.helpers import _redeploy, _stop, failure_message, http_login, notebook_container, spawn

pytestmark = pytest.mark.swarm

NETWORK = f"{NAME}-net"
HUB_SERVICE = f"{NAME}-hub"
#: The host's NFS, rpcbind, sshd and Docker API ports: nothing listens on them on this machine, so the
#: test does (dockerd's own 2377 and 7946 are real).
HOST_PORTS = (2049, 111, 22, 2375, 2376, 20048)


@pytest.fixture
def host_listeners():
    """TCP listeners on every address of this machine for HOST_PORTS (those free); closed after."""
    sockets = []
    for port in HOST_PORTS:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            s.close()
            continue  # taken: something of the host's own listens there, which serves as well
        s.listen(16)
        sockets.append(s)

    def accept(s: socket.socket) -> None:
        while True:
            try:
                conn, _ = s.accept()
                conn.close()
            except OSError:
                return

    for s in sockets:
        threading.Thread(target=accept, args=(s,), daemon=True).start()
    yield
    for s in sockets:
        s.close()


def task_ip(service: str) -> str:
    for _ in range(60):
        tasks = docker("service", "ps", service, "--filter", "desired-state=running", "-q")
        for task in tasks.split():
            attachments = json.loads(docker("inspect", task, "--format", "{{json .NetworksAttachments}}") or "null") or []
            for a in attachments:
                if a["Network"]["Spec"]["Name"] == NETWORK and a.get("Addresses"):
                    return a["Addresses"][0].split("/")[0]
        time.sleep(1)
    raise AssertionError(f"no address of {service} on {NETWORK}")


def test_a_notebook_reaches_the_hub_api_dns_and_the_tenant_and_nothing_else(hub, site, gateway_ip, host_listeners) -> None:
    for user in ("jdoe", "alice"):
        assert spawn(http_login(user), user) == "ready"
    jdoe, alice = notebook_container("jdoe"), notebook_container("alice")
    alice_ip, hub_ip = task_ip(f"{NAME}-nb-alice"), task_ip(HUB_SERVICE)
    tenant = urlsplit(site.tenant.agave_base_url)
    targets = [
        Target("hub API (the URL the server is given: the relay)", "http", True, url=f"http://{HUB_SERVICE}api:8081/hub/api/"),
        Target("DNS: the hub's service name", "dns", True, host=HUB_SERVICE),
        tcp(f"tenant {tenant.hostname}:{tenant.port}", tenant.hostname, tenant.port, allowed=True),
        tcp("alice's notebook server :8888", alice_ip, 8888),
        tcp("alice's notebook, the hub's gate :8889", alice_ip, 8889),
        tcp("hub container :443 (proxy)", hub_ip, 443),
        tcp("hub container :8001 (proxy API)", hub_ip, 8001),
        *[tcp(f"host {gateway_ip}:{port}", gateway_ip, port) for port in (*HOST_PORTS, 2377, 7946)],
        tcp("host 172.17.0.1:2377 (docker0)", "172.17.0.1", 2377),
        tcp("cloud metadata 169.254.169.254:80", "169.254.169.254", 80),
    ]
    seen = probe(["docker", "exec", "-i", jdoe], targets)
    # The control: the same probe from a container on the same network that is not a notebook.
    control = probe(["docker", "run", "--rm", "-i", "--network", NETWORK, "--entrypoint", "", "deployer/jupyteruser:0.2.0"],
                    [t for t in targets if t.name.startswith(("host", "hub container"))])
    print(f"\nFrom jdoe's notebook (uid 5001) on this machine's hub:\n{table(targets, seen, control, 'an unguarded container')}")
    assert not wrong(targets, seen)
    for t in targets:
        if t.name.startswith("host") and t.port in nfs.ports(kernel=False):
            # The guard's host rules: no container reaches the share's NFS ports on its own host, a notebook or not;
            # the host itself does (so the notebook's refusal is still no closed port).
            assert control[t.name] == "blocked", f"{t.name}: an unguarded container reaches the host's NFS port: {control[t.name]}"
            socket.create_connection((t.host, t.port), timeout=10).close()
        elif t.name.startswith("host"):
            assert control[t.name] == "open", f"{t.name} is not listening, so its refusal proves nothing: {control[t.name]}"
    assert control["hub container :443 (proxy)"] == "open"
    # alice's own server still works through the hub (the gate is the hub's way in).
    assert spawn(http_login("alice"), "alice") == "ready"
    # The rules are in the notebooks' own namespaces and the user cannot touch them (no CAP_NET_ADMIN).
    # SO_MARK (36) needs CAP_NET_ADMIN, as changing the firewall does.
    mark = subprocess.run(["docker", "exec", jdoe, "python3", "-c", "import socket; socket.socket().setsockopt(socket.SOL_SOCKET, 36, 1)"],
                          capture_output=True, text=True)
    assert mark.returncode != 0 and "Operation not permitted" in mark.stderr, mark
    assert docker("exec", alice, "id", "-u") == "5003"


def test_without_its_guard_a_notebook_is_never_routed_to(hub, site) -> None:
    """The hub reaches notebooks only through the gate the guard opens: with the guard stopped, a new
    server is refused with a clear page and its service removed, never served unguarded."""
    guard = f"{NAME}-netguard"
    _stop("jdoe")
    docker("stop", guard)
    try:
        page = failure_message(spawn(http_login("jdoe"), "jdoe", timeout=240))
        assert "the network protection on" in page and "did not come up" in page, page
        assert not docker("service", "ls", "--filter", f"name={NAME}-nb-jdoe", "-q")
    finally:
        docker("start", guard)
    assert spawn(http_login("jdoe"), "jdoe") == "ready"


# --- a connection opened before the guard's rules loaded ---------------------------------------

EARLY_IMAGE = "deployer/jupyteruser-early:0.2.0"
#: The test image's entrypoint: before the notebook's own, it connects to the test's listener (bash's
#: /dev/tcp: one connect(2), no interpreter to start, so it is in before the guard acts on the start
#: event) and leaves a sender on that connection, which reports in the container's log when a send fails.
EARLY_CONNECT = r"""#!/bin/bash
if exec 3<>"/dev/tcp/$EARLY_HOST/$EARLY_PORT"; then
    printf 'early 0\n' >&3
    python3 /usr/local/bin/early-send.py &
    exec 3>&-
else
    echo "early-connect: not connected" >&2
fi
exec /usr/local/bin/deployer-entrypoint "$@"
"""
#: Numbered lines every 0.2 s; the last number handed to the kernel in /tmp/early-sent. IP_RECVERR (11):
#: an ICMP error for the connection (the guard's REJECT) fails the next send instead of being retried.
EARLY_SEND = """import socket, sys, time
s = socket.socket(fileno=3)
s.setsockopt(socket.IPPROTO_IP, 11, 1)
n = 0
while True:
    n += 1
    try:
        s.sendall(b"early %d\\n" % n)
    except OSError as exc:
        print(f"early-connect: refused at line {n}: {exc}", file=sys.stderr, flush=True)
        break
    with open("/tmp/early-sent.new", "w") as f:
        f.write(str(n))
    __import__("os").replace("/tmp/early-sent.new", "/tmp/early-sent")
    time.sleep(0.2)
"""


class Listener:
    """A TCP listener on an address notebooks are refused; it keeps every line each connection sent."""

    def __init__(self, host: str):
        self.sock = socket.socket()
        self.sock.bind((host, 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.connections: list[list[str]] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            lines: list[str] = []
            self.connections.append(lines)
            threading.Thread(target=self._read, args=(conn, lines), daemon=True).start()

    @staticmethod
    def _read(conn: socket.socket, lines: list[str]) -> None:
        with conn, conn.makefile("r") as stream:
            for line in stream:
                lines.append(line.strip())

    def close(self) -> None:
        self.sock.close()


def _numbers(lines: list[str]) -> list[int]:
    return [int(m.group(1)) for line in lines if (m := re.fullmatch(r"early (\d+)", line))]


@pytest.fixture
def early_image(hub, site: Site, gateway_ip: str) -> Iterator[Listener]:
    """The deployment's notebooks run the test image, which connects to a listener on this machine's
    gateway address (refused to notebooks: it is the host's) as the container starts."""
    listener = Listener(gateway_ip)
    with tempfile.TemporaryDirectory() as context:
        for name, text, mode in (("early-connect", EARLY_CONNECT, 0o755), ("early-send.py", EARLY_SEND, 0o644)):
            (Path(context) / name).write_text(text)
            (Path(context) / name).chmod(mode)
        (Path(context) / "Dockerfile").write_text(
            "FROM deployer/jupyteruser:0.2.0\n"
            f"ENV EARLY_HOST={gateway_ip} EARLY_PORT={listener.port}\n"
            "COPY early-connect early-send.py /usr/local/bin/\n"
            'ENTRYPOINT ["setpriv", "--no-new-privs", "--", "tini", "-g", "--", "/usr/local/bin/early-connect"]\n'
            'CMD ["jupyterhub-singleuser"]\n')
        subprocess.run(["docker", "build", "-q", "-t", EARLY_IMAGE, context], check=True, capture_output=True, timeout=300)
    _stop("jdoe")
    try:
        _redeploy(site, f"jupyter_user_image={EARLY_IMAGE}")
        yield listener
    finally:
        listener.close()
        _stop("jdoe")
        _redeploy(site, None)
        docker("rmi", EARLY_IMAGE, check=False)


def test_a_connection_opened_before_the_guards_rules_loaded_is_dead_once_the_server_is_ready(early_image: Listener) -> None:
    """A connection made as the container starts, before the guard acts on Docker's start event, to a
    destination the rules refuse: it carried bytes before, and carries none once the server is ready
    (the rules load before the gate opens) — it is judged as a new connection would be."""
    for _attempt in range(3):  # the guard may be first: the connect is then refused, and there is nothing to test
        known = len(early_image.connections)
        assert spawn(http_login("jdoe"), "jdoe") == "ready"
        container = notebook_container("jdoe")
        at_ready = docker("exec", container, "cat", "/tmp/early-sent", check=False)  # the last line sent so far
        if len(early_image.connections) > known and at_ready.isdigit():
            lines = early_image.connections[-1]
            break
        assert "early-connect: not connected" in _stderr_of(container), _stderr_of(container)[-2000:]
        _stop("jdoe")
    else:
        pytest.fail("in 3 starts the notebook never connected before the guard's rules were in: nothing to test")
    deadline = time.monotonic() + 60
    while True:  # until the sender is refused (the rules judged the connection), or a line sent after ready arrives
        after = [n for n in _numbers(lines) if n > int(at_ready)]
        assert not after, f"lines sent after the server was ready reached the listener: {after[:5]}: the connection opened before the rules survived them"
        log = _stderr_of(container)
        if "early-connect: refused" in log:
            break
        assert time.monotonic() < deadline, f"the sender was not refused within 60 s (last line sent {at_ready}, received {lines[-3:]})"
        time.sleep(0.5)
    assert lines and lines[0] == "early 0", lines  # bytes went through before the rules
    refused = next(line for line in log.splitlines() if "early-connect: refused" in line)
    print(f"\nbefore the rules: {len(lines)} line(s) reached the listener, none sent after the server was ready; then {refused}")


def _stderr_of(container: str) -> str:
    return subprocess.run(["docker", "logs", container], capture_output=True, text=True, timeout=60).stderr
