"""What a notebook can reach on this machine's hub (hub and worker on one host): the hub API, DNS and
the tenant, and nothing of the host, the other notebooks or the hub's other ports.

Every refused target on the host is shown reachable from an unguarded container on the same overlay
network (the control), so a "refused" is the guard's doing and not a closed port."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from urllib.parse import urlsplit

import pytest

from netprobe import Target, probe, table, tcp, wrong
from swarm.conftest import NAME, docker
from swarm.test_notebooks import _stop, failure_message, http_login, notebook_container, spawn

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
        if t.name.startswith("host"):
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
