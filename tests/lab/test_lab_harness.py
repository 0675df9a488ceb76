"""The lab harness itself: real SSH to every host, a swarm formed by hand, images moved onto a
host, and an NFS export served by one host and read by another (in user space: the kernel here
has no NFS)."""

from __future__ import annotations

import shlex
import subprocess
import time

import pytest

from lab.harness import BASE, Lab

pytestmark = pytest.mark.lab

EXPORT_PATH = "/srv/nfs/lab-export"  # /srv is a volume: a real filesystem, as ganesha's VFS needs
PSEUDO = "/lab-export"


def wait_for(what: str, probe, timeout: float = 60, interval: float = 1):
    """Calls ``probe`` until it returns something true; fails with its last value after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f}s (last: {value!r})")
        time.sleep(interval)


def text(result) -> str:
    return result.stdout.decode(errors="replace").strip()


def test_every_host_answers_docker_info_over_ssh(lab: Lab):
    assert set(lab.hosts) == {"hub", "worker1", "worker2"}
    assert lab.key_path.stat().st_mode & 0o077 == 0
    for host, ip in lab.hosts.items():
        info = text(lab.ssh(host, "docker info --format '{{.Name}} {{.Driver}} {{.ServerVersion}}'", timeout=60))
        name, driver, _version = info.split()
        assert (name, driver) == (host, "overlay2")
        # The host's own address on the lab network is the one tests and Deployer use.
        assert ip in text(lab.ssh(host, "ip -4 -o addr show", timeout=30))


def test_password_login_is_refused(lab: Lab):
    """Root logs in by key only."""
    config = text(lab.ssh("hub", "sshd -T", timeout=30)).lower().splitlines()
    assert "passwordauthentication no" in config
    assert "permitrootlogin without-password" in config or "permitrootlogin prohibit-password" in config


@pytest.fixture
def swarm(lab: Lab):
    """A 3-node swarm formed by hand over SSH: hub is the manager; left again afterwards."""
    hub_ip = lab.hosts["hub"]
    workers = [h for h in lab.hosts if h != "hub"]
    try:
        lab.ssh("hub", f"docker swarm init --advertise-addr {hub_ip} --listen-addr {hub_ip}:2377", timeout=60)
        token = text(lab.ssh("hub", "docker swarm join-token -q worker", timeout=30))
        for worker in workers:
            lab.ssh(worker, f"docker swarm join --advertise-addr {lab.hosts[worker]} --token {shlex.quote(token)} {hub_ip}:2377",
                    timeout=90)
        yield lab
    finally:
        for host in [*workers, "hub"]:
            lab.ssh(host, "docker swarm leave --force", check=False, timeout=60)


def test_a_swarm_forms_over_ssh(swarm: Lab):
    def ready_nodes():
        lines = text(swarm.ssh("hub", "docker node ls --format '{{.Hostname}} {{.Status}}'", timeout=30)).splitlines()
        nodes = dict(line.split() for line in lines)
        return nodes if nodes == {"hub": "Ready", "worker1": "Ready", "worker2": "Ready"} else None

    wait_for("three Ready swarm nodes", ready_nodes, timeout=60)
    for worker in ("worker1", "worker2"):
        state = text(swarm.ssh(worker, "docker info --format '{{.Swarm.LocalNodeState}} {{.Swarm.NodeAddr}}'", timeout=30))
        assert state == f"active {swarm.hosts[worker]}"


def test_load_image_puts_the_image_on_a_worker(lab: Lab):
    image_id = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", BASE],
                              capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    lab.load_image("worker1", BASE)
    assert text(lab.ssh("worker1", f"docker image inspect --format '{{{{.Id}}}}' {BASE}", timeout=60)) == image_id
    # ... and runs there, in the worker's own engine.
    assert text(lab.ssh("worker1", f"docker run --rm {BASE} cat /etc/hostname", timeout=120)) != "worker1"
    assert lab.ssh("worker2", f"docker image inspect {BASE}", check=False, timeout=60).returncode != 0


GANESHA_CONF = f"""\
NFS_CORE_PARAM {{ Protocols = 4; }}
NFSV4 {{ Graceless = true; }}
EXPORT {{
    Export_Id = 1;
    Path = {EXPORT_PATH};
    Pseudo = {PSEUDO};
    Access_Type = RW;
    Squash = No_Root_Squash;
    Protocols = 4;
    CLIENT {{ Clients = {{subnet}}; }}
    FSAL {{ Name = VFS; }}
}}
"""


@pytest.fixture
def nfs_server(lab: Lab):
    """nfs-ganesha on the hub, exporting EXPORT_PATH (NFSv4) to the lab subnet."""
    conf = GANESHA_CONF.replace("{subnet}", str(lab.subnet))
    lab.ssh("hub", "mkdir -p /etc/ganesha && cat >/etc/ganesha/lab.conf", input=conf.encode(), timeout=30)
    lab.ssh("hub", f"""set -e
        mkdir -p /var/run/ganesha /run/dbus {EXPORT_PATH}
        pgrep -x -r R,S,D rpcbind >/dev/null || rpcbind -w
        pgrep -x -r R,S,D dbus-daemon >/dev/null || {{ rm -f /run/dbus/pid; dbus-daemon --system --fork; }}
        setsid ganesha.nfsd -F -L /var/log/ganesha-lab.log -f /etc/ganesha/lab.conf -p /var/run/ganesha/lab.pid \
            </dev/null >/dev/null 2>&1 &
    """, timeout=60)

    def listening():
        return ":2049 " in text(lab.ssh("hub", "ss -Hltn", timeout=30))

    try:
        deadline = time.monotonic() + 60
        while not listening():
            if time.monotonic() > deadline:
                log = text(lab.ssh("hub", "tail -n 30 /var/log/ganesha-lab.log", check=False, timeout=30))
                pytest.fail(f"ganesha.nfsd did not listen on 2049 within 60s:\n{log}")
            time.sleep(1)
        yield lab.hosts["hub"]
    finally:
        lab.ssh("hub", "kill $(cat /var/run/ganesha/lab.pid) 2>/dev/null; rm -rf /srv/nfs", check=False, timeout=30)


def test_a_worker_reads_a_file_the_hub_serves_over_nfs(lab: Lab, nfs_server: str):
    content = f"written on the hub at {time.time()}\n"
    lab.ssh("hub", f"cat >{EXPORT_PATH}/greeting.txt", input=content.encode(), timeout=30)
    url = f"nfs://{nfs_server}{PSEUDO}/greeting.txt?version=4"

    def read():
        result = lab.ssh("worker1", f"timeout 30 nfs-cat {shlex.quote(url)}", check=False, timeout=60)
        return result.stdout.decode(errors="replace") if result.returncode == 0 else None

    assert wait_for(f"worker1 reads {url}", read, timeout=60, interval=2) == content
    listing = text(lab.ssh("worker1", f"timeout 30 nfs-ls {shlex.quote(f'nfs://{nfs_server}{PSEUDO}?version=4')}", timeout=60))
    assert "greeting.txt" in listing
