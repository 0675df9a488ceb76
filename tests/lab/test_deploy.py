"""`deployer deploy`, `update` and `destroy` against three real hosts over real SSH, exactly as an
operator runs them: a hub and two workers, each with its own Docker engine; the tenant (Agave
v2 + TAS) simulated over HTTPS on this machine, reached from the hub's container.

What the lab substitutes: this kernel cannot mount NFS, so the workers do not mount the hub's
export; the share's path is one Docker volume mounted into all three hosts instead (what a
site file system or the NFS mount gives real machines). The NFS *server* side is real: the
hub's nfs-ganesha serves the share, limited to the workers' addresses, and a worker reads it
with a user-space NFS client (nfs-cat).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from conftest import NOTICE
from netprobe import Target, probe, table, tcp, wrong

from deployer.hosts.lock import HubLock
from deployer.hosts.ssh import SSHExecutor
from lab.conftest import LAB_SHARE
from lab.deployment import (
    CLIENT,
    DEPLOYER,
    METRICS_TOKEN,
    NAME,
    SCOPE,
    USERS,
    assert_ran_as_planned,
    deployer,
    fresh_notebook,
    http_login,
    hub_container,
    hub_xsrf,
    notebook_answers,
    notebook_container,
    row,
    running_notebook,
    text,
)
from lab.harness import Lab

pytestmark = pytest.mark.lab

SUBSTITUTION = ("LAB SUBSTITUTION: the workers do not mount the hub's NFS export (this kernel has no NFS client); "
                f"{LAB_SHARE} is one Docker volume mounted into all three lab hosts. The NFS server side is real "
                "(nfs-ganesha on the hub, read from a worker with nfs-cat).")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic"]



@pytest.fixture(autouse=True)
def _notice(request: pytest.FixtureRequest) -> None:
    request.node.user_properties.append((NOTICE, SUBSTITUTION))  # in the run's summary too


@pytest.fixture(scope="module")
def deployed(lab: Lab, site: Path):
    """A fresh deploy of the lab deployment (after the lab tier's other tests, whatever they left)."""
    print(f"\n{SUBSTITUTION}")
    planned = deployer(site, "plan")
    result = deployer(site, "deploy")
    if result.returncode != 0:  # leave the hosts clean for the lab tier's other tests, then say why
        deployer(site, "destroy", "-y", "--purge-data")
        pytest.fail(f"the lab deploy failed:\n{result.stderr[-6000:]}\n{result.stdout[-3000:]}")
    result.planned = planned
    yield result
    if os.environ.get("DEPLOYER_KEEP_LAB") != "1":
        deployer(site, "destroy", "-y", "--purge-data")


def test_fresh_deploy_reports_phases_and_every_host(deployed, lab: Lab) -> None:
    output = deployed.stdout
    for phase in ("reading every host", "swarm: initialise it on the hub", "swarm: the workers join", "swarm: node labels",
                  "the share on the hub: directories, NFS export", "the share on the workers: mounts", "images", "the hub service"):
        assert phase in deployed.stderr
    assert "initialise the swarm on the hub" in row(output, "hub")
    for worker in ("worker1", "worker2"):
        assert "join the swarm as a worker" in row(output, worker)
        assert "send image deployer/jupyteruser:0.2.0" in row(output, worker)
    assert "send image deployer/jupyterhub:0.2.0" in row(output, "hub")
    # plan, run just before, printed exactly what deploy then ran (values made on the way as placeholders)
    ran = assert_ran_as_planned(deployed.planned, deployed)
    assert any(line.startswith("docker swarm join --advertise-addr") and "<worker token>" in line for line in ran["worker1"])
    assert "docker service create" in "\n".join(ran["hub"])
    assert "S3CR3T" not in deployed.stdout + deployed.stderr
    # the notebook image only where notebooks run, the hub image only on the hub
    assert lab.ssh("hub", "docker image inspect deployer/jupyteruser:0.2.0", check=False).returncode != 0
    assert lab.ssh("worker1", "docker image inspect deployer/jupyterhub:0.2.0", check=False).returncode != 0
    labels = text(lab.ssh("hub", "docker node ls --format '{{.Hostname}}' | sort | xargs -n1 docker node inspect --format '{{.Description.Hostname}} {{json .Spec.Labels}}'"))
    assert 'hub {"deployer.hub":"true"}' in labels
    assert f'worker1 {{"deployer.worker":"true","deployer.worker.{NAME}":"true"}}' in labels  # and the label unique to this deployment


def test_second_deploy_changes_nothing_and_restarts_nothing(deployed, lab: Lab, site: Path) -> None:
    before = hub_container(lab)
    ganesha = text(lab.ssh("hub", "cat /var/run/ganesha/ganesha.pid"))
    planned = deployer(site, "plan")
    result = deployer(site, "deploy")
    assert result.returncode == 0, result.stderr
    assert assert_ran_as_planned(planned, result) == {}  # plan printed no command, and deploy ran none
    assert re.search(r"^hub\s+nothing\s", planned.stdout, re.M), planned.stdout
    assert "nothing to change" in result.stdout and "nothing restarted" in result.stdout
    for host in ("hub", "worker1", "worker2"):
        assert re.search(r"\sunchanged\s", row(result.stdout, host))
    assert hub_container(lab) == before
    assert text(lab.ssh("hub", "cat /var/run/ganesha/ganesha.pid")) == ganesha
    status = deployer(site, "status")
    assert re.search(r"^worker1\s+Ready\s+Active\s+worker\s+no\s+0\s*$", status.stdout, re.M), status.stdout
    assert re.search(r"^last run: deploy by \S+@\S+ at \S+: ok$", status.stdout, re.M), status.stdout


def test_secrets_stay_out_of_inspect_process_lists_and_readable_files(deployed, lab: Lab) -> None:
    inspect = text(lab.ssh("hub", f"docker service inspect {NAME}-hub; docker inspect {hub_container(lab)}"))
    assert "S3CR3T" not in inspect and "/run/secrets/oauth_client_secret" not in inspect.split('"Env"')[-1][:2000]
    for host in lab.hosts:
        assert "S3CR3T" not in text(lab.ssh(host, "ps -eo args"))
    state = text(lab.ssh("hub", f"stat -c '%a %n' /srv/deployer/{NAME}/state /srv/deployer/{NAME}/state/* /srv/deployer/{NAME}/state/tls/*"))
    assert state.splitlines()[0].startswith("700 ") and all(line.startswith(("600 ", "700 ")) for line in state.splitlines())
    audit = [json.loads(line) for line in text(lab.ssh("hub", "cat /var/log/deployer/audit.log")).splitlines()]
    assert audit[-1]["action"] == "deploy" and audit[-1]["result"] == "ok" and audit[-1]["operator"].startswith("root@")
    assert "S3CR3T" not in json.dumps(audit)


def test_the_hubs_nfs_export_is_real_and_only_for_the_workers(deployed, lab: Lab) -> None:
    print(f"\n{SUBSTITUTION}")
    url = f"nfs://{lab.hosts['hub']}{LAB_SHARE}/.deployer-share?version=4"
    marker = text(lab.ssh("hub", f"cat {LAB_SHARE}/.deployer-share"))
    assert marker.startswith(NAME)
    served = lab.ssh("worker1", f"timeout 30 nfs-cat {shlex.quote(url)}", check=False, timeout=60)
    assert served.returncode == 0 and text(served) == marker, served.stderr
    refused = lab.ssh("hub", f"timeout 30 nfs-cat {shlex.quote(url)}", check=False, timeout=60)  # the hub is no client of its export
    assert refused.returncode != 0
    conf = text(lab.ssh("hub", f"cat /etc/ganesha/deployer/{NAME}.conf"))
    assert f"Clients = {lab.hosts['worker1']}, {lab.hosts['worker2']};" in conf and "Squash = Root_Squash;" in conf


def test_browser_login_reaches_jupyterlab_on_a_worker_with_the_hubs_token_file(deployed, lab: Lab) -> None:
    from playwright.sync_api import sync_playwright

    hub = lab.hosts["hub"]
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = chromium.new_context(ignore_https_errors=True).new_page()
            page.set_default_timeout(60_000)
            page.goto(f"https://{hub}/")
            page.get_by_role("button", name="Sign in with sim").click()
            page.fill("input[name=username]", "jdoe")
            page.fill("input[name=password]", USERS["jdoe"][0])
            page.locator("form [type=submit]").first.click()
            page.wait_for_url(re.compile(r"/user/jdoe/lab"), timeout=300_000)
            page.locator(".jp-LauncherCard").first.wait_for(timeout=120_000)  # JupyterLab's launcher is up
        finally:
            chromium.close()
    worker, container = notebook_container(lab, "jdoe")
    assert worker in ("worker1", "worker2")
    written_by_hub = json.loads(text(lab.ssh("hub", f"cat {LAB_SHARE}/tokens/sim/jdoe/current")))
    seen_in_container = json.loads(text(lab.ssh(worker, f"docker exec {container} cat /home/jupyter/.agave/current")))
    assert seen_in_container["access_token"] == written_by_hub["access_token"] and seen_in_container["username"] == "jdoe"
    ids = text(lab.ssh(worker, f"docker exec {container} id -u; docker exec {container} id -g")).split()
    assert ids == ["5001", "6001"]
    print(f"notebook of jdoe on {worker}; token file written by the hub on the share, read inside the container")


def test_logs_of_the_hub_and_of_a_users_notebook_come_from_wherever_they_run(deployed, lab: Lab, site: Path) -> None:
    hub = lab.hosts["hub"]
    running_notebook(hub, "jdoe")
    worker, _ = notebook_container(lab, "jdoe")
    shown = deployer(site, "logs", "--hub", "-n", "100")
    assert shown.returncode == 0, shown.stderr
    assert "JupyterHub" in shown.stdout and len(shown.stdout.splitlines()) <= 100
    notebook = deployer(site, "logs", "--user", "jdoe")  # not a terminal: prints and ends
    assert notebook.returncode == 0, notebook.stderr
    assert "jupyterhub-singleuser" in notebook.stdout or "ServerApp" in notebook.stdout, notebook.stdout[-2000:]
    missing = deployer(site, "logs", "--user", "nobody")
    assert missing.returncode == 1 and "nobody has no notebook server in jupyterhub-lab-sim" in missing.stderr
    assert deployer(site, "logs").returncode == 2  # whose log: --hub or --user
    # follow mode: lines that arrive after it started
    follower = subprocess.Popen([DEPLOYER, "-i", "lab", "-t", "sim", "logs", "--hub", "--follow", "-n", "0"], cwd=site,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(follower.stdout.readline, "")), daemon=True).start()
    try:
        time.sleep(3)
        marker = f"/hub/logs-follow-{time.time_ns()}"
        httpx.get(f"https://{hub}{marker}", verify=False, timeout=30)
        deadline = time.monotonic() + 60
        while not any(marker in line for line in lines) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert any(marker in line for line in lines), "".join(lines)
    finally:
        follower.terminate()
        follower.wait(timeout=30)


@pytest.fixture
def prometheus(lab: Lab, tmp_path: Path):
    """A real Prometheus (Debian's) on this machine, scraping the lab hub's /hub/metrics with the token every 2 s."""
    token = tmp_path / "metrics-token"
    token.write_text(METRICS_TOKEN)
    os.chmod(token, 0o600)
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({"global": {"scrape_interval": "2s"}, "scrape_configs": [{
        "job_name": "lab-hub", "scheme": "https", "metrics_path": "/hub/metrics", "tls_config": {"insecure_skip_verify": True},
        "authorization": {"type": "Bearer", "credentials_file": str(token)}, "static_configs": [{"targets": [f"{lab.hosts['hub']}:443"]}]}]}))
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        port = probe_socket.getsockname()[1]
    log = open(tmp_path / "prometheus.log", "wb")
    proc = subprocess.Popen(["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "prometheus.log").read_text()[-2000:]
        time.sleep(0.5)
    yield url
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def prometheus_value(url: str, query: str) -> float:
    result = httpx.get(f"{url}/api/v1/query", params={"query": query}, timeout=10).json()["data"]["result"]
    return float(result[0]["value"][1]) if result else 0.0


def test_a_scraper_with_the_metrics_token_reads_spawn_durations_and_status_shows_the_last_hour(deployed, lab: Lab, site: Path, prometheus: str) -> None:
    hub = lab.hosts["hub"]
    assert httpx.get(f"https://{hub}/hub/metrics", verify=False, timeout=30).status_code == 403  # not without the token
    scraped = httpx.get(f"https://{hub}/hub/metrics", verify=False, timeout=30, headers={"Authorization": f"token {METRICS_TOKEN}"})
    assert scraped.status_code == 200 and "jupyterhub_server_spawn_duration_seconds_bucket" in scraped.text
    deadline = time.monotonic() + 60
    while prometheus_value(prometheus, 'count_over_time(up{job="lab-hub"}[1m])') < 3 or prometheus_value(prometheus, 'up{job="lab-hub"}') != 1:
        assert time.monotonic() < deadline, "Prometheus does not scrape the hub"
        time.sleep(1)
    browser = running_notebook(hub, "jdoe")  # then a spawn Prometheus sees: stop the server, start it again
    xsrf = hub_xsrf(browser)
    browser.delete("/hub/api/users/jdoe/server", headers=xsrf)
    while browser.get("/hub/api/user", headers=xsrf).json().get("servers"):
        assert time.monotonic() < deadline + 120, "jdoe's server did not stop"
        time.sleep(1)
    running_notebook(hub, "jdoe")
    spawned = 'sum(increase(jupyterhub_server_spawn_duration_seconds_count{status="success"}[1h]))'
    deadline = time.monotonic() + 60
    while prometheus_value(prometheus, spawned) < 0.5:
        assert time.monotonic() < deadline, "Prometheus never saw the spawn"
        time.sleep(2)
    status = deployer(site, "status", "-o", f"metrics_prometheus_url={prometheus}")
    assert status.returncode == 0, status.stderr
    shown = re.search(r"^spawns in the last hour: (\d+) succeeded \(p50 ([\d.]+) s, p95 ([\d.]+) s\), (\d+) failed$", status.stdout, re.M)
    assert shown and int(shown.group(1)) >= 1 and 0 < float(shown.group(2)) <= float(shown.group(3)), status.stdout
    assert METRICS_TOKEN not in status.stdout + status.stderr


@pytest.fixture
def outside(lab: Lab):
    """A cloud metadata service (169.254.169.254:80) and "the outside world" (203.0.113.10:8080, a
    documentation address that is not private) on one container of the lab network, routed to from
    every lab host: the probes reach real listeners and no packet leaves this machine."""
    name = f"{lab.prefix}-outside"
    subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    subprocess.run(["docker", "run", "-d", "--name", name, "--network", lab.network, "--cap-add", "NET_ADMIN", "--entrypoint", "sh",
                    "deployer/lab-host:latest", "-c", "ip addr add 169.254.169.254/32 dev lo && ip addr add 203.0.113.10/32 dev lo && "
                    "cd /tmp && (python3 -m http.server 80 & python3 -m http.server 8080 & wait)"], check=True, capture_output=True)
    address = subprocess.run(["docker", "inspect", name, "--format", f'{{{{(index .NetworkSettings.Networks "{lab.network}").IPAddress}}}}'],
                             capture_output=True, text=True, check=True).stdout.strip()
    for host in lab.hosts:
        lab.ssh(host, f"ip route replace 169.254.169.254/32 via {address} && ip route replace 203.0.113.10/32 via {address}")
    yield
    for host in lab.hosts:
        lab.ssh(host, "ip route del 169.254.169.254/32; ip route del 203.0.113.10/32", check=False)
    subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def overlay_ip(lab: Lab, service: str) -> str:
    script = (f"docker inspect $(docker service ps -q --filter desired-state=running {service}) --format '{{{{json .NetworksAttachments}}}}'")
    for attachments in text(lab.ssh("hub", script)).splitlines():
        for a in json.loads(attachments) or []:
            if a["Network"]["Spec"]["Name"] == f"{NAME}-net" and a.get("Addresses"):
                return a["Addresses"][0].split("/")[0]
    raise AssertionError(f"{service} has no address on {NAME}-net")


def test_a_notebook_reaches_the_hub_api_the_tenant_and_the_world_but_no_host_or_other_notebook(deployed, lab: Lab, tenant, outside) -> None:
    hub = lab.hosts["hub"]
    running_notebook(hub, "jdoe")
    running_notebook(hub, "bob")  # bob's tokens are on the share now, and his server runs
    worker, container = notebook_container(lab, "jdoe")
    bob_worker, _ = notebook_container(lab, "bob")
    bob_ip, hub_ip = overlay_ip(lab, f"{NAME}-nb-bob"), overlay_ip(lab, f"{NAME}-hub")
    gateway = urlsplit(tenant.agave_base_url)
    targets = [
        Target("hub API (the URL the server is given: the relay)", "http", True, url=f"http://{NAME}-hubapi:8081/hub/api/"),
        Target("DNS: the hub's service name", "dns", True, host=f"{NAME}-hub"),
        tcp(f"tenant {gateway.hostname}:{gateway.port}", gateway.hostname, gateway.port, allowed=True),
        tcp(f"hub {hub}:443 (its public URL, as from anywhere)", hub, 443, allowed=True),
        Target("outside world 203.0.113.10:8080", "http", True, url="http://203.0.113.10:8080/"),
        Target("cloud metadata 169.254.169.254:80", "http", False, url="http://169.254.169.254/"),
        *[tcp(f"hub {hub}:{port} ({what})", hub, port) for port, what in
          ((2049, "NFS"), (111, "rpcbind"), (2377, "swarm manager"), (7946, "swarm gossip"), (22, "ssh"))],
        *[tcp(f"{w} {lab.hosts[w]}:{port} ({what}{', its own host' if w == worker else ''})", lab.hosts[w], port)
          for w in ("worker1", "worker2") for port, what in ((7946, "swarm gossip"), (22, "ssh"))],
        tcp(f"bob's notebook :8888 (on {bob_worker})", bob_ip, 8888),
        tcp(f"bob's notebook, the hub's gate :8889 (on {bob_worker})", bob_ip, 8889),
        tcp("hub container :443 on the overlay", hub_ip, 443),
    ]
    seen = probe(["docker", "exec", "-i", container], targets, remote=lab.ssh_command(worker))
    # The same from the worker itself: host traffic is not container traffic (its NFS and SSH keep working).
    host_targets = [t for t in targets if not t.name.startswith(("hub API", "DNS", "bob", "hub container"))]
    from_host = probe([], host_targets, remote=lab.ssh_command(worker))

    # A user-space NFS client claiming bob's uid (AUTH_SYS believes it) against the hub's export.
    token = f"nfs://{hub}{LAB_SHARE}/tokens/sim/bob/current?version=4&uid=5002&gid=6002"
    lab.ssh(worker, f"docker cp -L /usr/bin/nfs-cat {container}:/tmp/nfs-cat && "
                    f"for lib in $(ldd /usr/bin/nfs-cat | awk '/libnfs/ {{print $3}}'); do docker cp -L $lib {container}:/tmp/; done")
    spoof_in_notebook = lab.ssh(worker, f"docker exec -e LD_LIBRARY_PATH=/tmp {container} timeout 20 /tmp/nfs-cat {shlex.quote(token)}",
                                check=False, timeout=60)
    spoof_on_host = lab.ssh(worker, f"timeout 20 nfs-cat {shlex.quote(token)}", check=False, timeout=60)
    bobs_file = text(lab.ssh("hub", f"cat {LAB_SHARE}/tokens/sim/bob/current"))
    spoof = Target("spoofed-uid NFS read of bob's token file", "tcp", False)
    seen[spoof.name] = "read it" if spoof_in_notebook.returncode == 0 else "failed"
    from_host[spoof.name] = "read it" if text(spoof_on_host) == bobs_file else f"failed ({spoof_on_host.stderr[-200:]!r})"
    print(f"\nFrom jdoe's notebook (uid 5001) on {worker}, 3-host lab; control: the same from {worker} itself:\n"
          f"{table(targets + [spoof], seen, from_host, f'from {worker} itself')}")
    assert not wrong(targets, seen)
    assert seen[spoof.name] == "failed" and bobs_file not in text(spoof_in_notebook)
    assert from_host[spoof.name] == "read it"  # the worker's own NFS access is untouched
    for t in host_targets:  # every refusal is the guard's: the worker itself reaches each target
        assert t.reached(from_host[t.name]), f"{t.name} is not reachable from {worker} itself ({from_host[t.name]}): the refusal proves nothing"


def test_every_address_of_a_host_is_refused_on_every_port_not_only_its_configured_one(deployed, lab: Lab, site: Path) -> None:
    """A host's other addresses (a public one, here on the hub's interface, reached from the workers) are read
    by deploy and refused to notebooks like the configured address, on every port (its published 443 too:
    notebooks reach the hub by its configured address); the worker itself reaches them."""
    extra = "198.51.100.11"  # TEST-NET-2: a "public" address, which notebooks may otherwise reach (non_private_ips)
    running_notebook(lab.hosts["hub"], "jdoe")
    lab.ssh("hub", f"ip addr add {extra}/32 dev eth0")
    for worker in ("worker1", "worker2"):
        lab.ssh(worker, f"ip route replace {extra}/32 dev eth0")  # on the lab's network: it never leaves this machine
    try:
        changed = deployer(site, "deploy")
        assert changed.returncode == 0, changed.stderr + changed.stdout
        assert "the notebooks' network guard: its image or configuration changed" in row(changed.stdout, "worker1")  # a new policy
        worker, container = notebook_container(lab, "jdoe")
        targets = [tcp(f"hub's other address {extra}:{port} ({what})", extra, port) for port, what in
                   ((22, "ssh"), (2049, "NFS"), (7946, "swarm gossip"), (443, "the hub's published port"))]
        from_host = probe([], targets, remote=lab.ssh_command(worker))
        assert all(t.reached(from_host[t.name]) for t in targets), f"not reachable from {worker} itself, so a refusal proves nothing: {from_host}"
        deadline = time.monotonic() + 60  # the replaced guard applies its new rules at its start
        while True:
            seen = probe(["docker", "exec", "-i", container], targets, remote=lab.ssh_command(worker))
            if not wrong(targets, seen) or time.monotonic() > deadline:
                break
            time.sleep(1)
        print(f"\nFrom jdoe's notebook on {worker}, the hub's other address:\n{table(targets, seen, from_host, f'from {worker} itself')}")
        assert not wrong(targets, seen)
    finally:
        lab.ssh("hub", f"ip addr del {extra}/32 dev eth0", check=False)
        for worker in ("worker1", "worker2"):
            lab.ssh(worker, f"ip route del {extra}/32 dev eth0", check=False)
        restored = deployer(site, "deploy")
        assert restored.returncode == 0, restored.stderr + restored.stdout


def test_an_unguarded_container_on_a_worker_cannot_claim_a_uid_over_nfs_but_the_worker_itself_can(deployed, lab: Lab) -> None:
    """Defence in depth for the share: a container without the notebook label (no guard in its namespace),
    started with a plain `docker run` on a worker, on the deployment's overlay network or the default
    bridge, cannot reach the hub's NFS server (the guard's host rules: DOCKER-USER for its forwarded
    packets); the worker's own NFS traffic is untouched."""
    hub, worker = lab.hosts["hub"], "worker1"
    running_notebook(hub, "bob")  # bob's token files are on the share
    token = f"nfs://{hub}{LAB_SHARE}/tokens/sim/bob/current?version=4&uid=5002&gid=6002"
    bobs_file = text(lab.ssh("hub", f"cat {LAB_SHARE}/tokens/sim/bob/current"))  # (the hub may rewrite it: see worker_reads)
    seen = {}
    for network in (f"{NAME}-net", "bridge"):
        name = f"unguarded-{network}"
        lab.ssh(worker, f"docker rm -f {name} >/dev/null 2>&1; docker run -d --name {name} --network {network} --entrypoint sleep deployer/jupyteruser:0.2.0 600 && "
                        f"docker cp -L /usr/bin/nfs-cat {name}:/tmp/nfs-cat && "
                        f"for lib in $(ldd /usr/bin/nfs-cat | awk '/libnfs/ {{print $3}}'); do docker cp -L $lib {name}:/tmp/; done")
        try:
            seen[network] = lab.ssh(worker, f"docker exec -e LD_LIBRARY_PATH=/tmp {name} timeout 20 /tmp/nfs-cat {shlex.quote(token)}", check=False, timeout=60)
        finally:
            lab.ssh(worker, f"docker rm -f {name}", check=False)
    from_host = worker_reads(lab, worker, token, f"{LAB_SHARE}/tokens/sim/bob/current")
    print(f"\nspoofed-uid NFS read of bob's token file on {worker}: " + "; ".join(
        f"from an unguarded container on {n}: {'read it' if bobs_file in text(r) else f'failed ({r.returncode})'}" for n, r in seen.items())
        + f"; from {worker} itself: {'read it' if from_host.returncode == 0 else 'failed'}")
    assert from_host.returncode == 0, from_host.stderr[-500:]  # the worker's own NFS access is untouched
    hooks = text(lab.ssh(worker, "iptables -S DOCKER-USER; iptables -S INPUT"))
    assert "-j DEPLOYER-NFS-F-" in hooks and "-j DEPLOYER-NFS-I-" in hooks, hooks  # the guard's host rules, hooked
    for network, result in seen.items():
        assert result.returncode != 0 and bobs_file not in text(result), f"an unguarded container on {network} read bob's token file over NFS"


def worker_reads(lab: Lab, worker: str, url: str, path: str) -> subprocess.CompletedProcess:
    """The worker's own nfs-cat of the share's file, returncode 0 when it read what the hub has there. The hub
    rewrites token files when it refreshes them, so the file is read on the hub before and after; and
    nfs-ganesha in the lab now and then answers a new client NFS4ERR_STALE for its pseudo root: an answer
    of the server (so no firewall stood in the way), asked again a few times, bounded."""
    for _ in range(5):
        before = text(lab.ssh("hub", f"cat {path}"))
        result = lab.ssh(worker, f"timeout 20 nfs-cat {shlex.quote(url)}", check=False, timeout=60)
        if text(result) in (before, text(lab.ssh("hub", f"cat {path}"))):
            return subprocess.CompletedProcess(result.args, 0, result.stdout, result.stderr)
        if b"NFS4ERR_STALE" not in result.stderr:
            break
        time.sleep(2)
    return subprocess.CompletedProcess(result.args, result.returncode or 1, result.stdout, result.stderr)


def test_the_operators_egress_rules_reach_running_notebooks(deployed, lab: Lab, site: Path, outside) -> None:
    """notebook_egress_deny and notebook_egress_allow_rules, changed by a deploy, apply to a notebook
    that is already running (the replaced guard re-applies its rules), without touching the hub."""
    worker, container = notebook_container(lab, "jdoe")
    world, metadata = Target("outside world", "http", True, url="http://203.0.113.10:8080/"), Target("metadata", "http", False, url="http://169.254.169.254/")
    hub_before = hub_container(lab)
    try:
        change = "notebook_egress_deny=[203.0.113.10:8080]&notebook_egress_allow_rules={cloud_metadata_server: true}"
        planned = deployer(site, "plan", "-o", change)
        changed = deployer(site, "deploy", "-o", change)
        assert changed.returncode == 0, changed.stderr + changed.stdout
        # a configuration change: plan named the guards' replacement on each worker and nothing else, as deploy ran it
        ran = assert_ran_as_planned(planned, changed)
        assert set(ran) == {"worker1", "worker2"} and all(any(line.startswith("docker rm --force") for line in ran[w]) for w in ran)
        assert "the notebooks' network guard: its image or configuration changed" in row(changed.stdout, worker)
        assert hub_container(lab) == hub_before
        deadline = time.monotonic() + 30  # the new guard applies at its start
        while True:
            seen = probe(["docker", "exec", "-i", container], [world, metadata], remote=lab.ssh_command(worker))
            if seen == {"outside world": "blocked", "metadata": "http 200"} or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert seen == {"outside world": "blocked", "metadata": "http 200"}, seen
    finally:
        restored = deployer(site, "deploy")
        assert restored.returncode == 0, restored.stderr + restored.stdout
    assert probe(["docker", "exec", "-i", container], [world, metadata], remote=lab.ssh_command(worker)) == {"outside world": "http 200", "metadata": "blocked"}


def test_a_rebuilt_image_is_planned_then_sent_and_its_containers_replaced_as_deploy_runs_it(deployed, lab: Lab, site: Path) -> None:
    """An image rebuilt under the same tag on this machine: plan names the send and the guards'
    replacement on each worker, deploy runs exactly that, the hub is not touched."""
    image = "deployer/netguard:0.2.0"
    original = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", image], capture_output=True, text=True, check=True).stdout.strip()
    hub_before = hub_container(lab)
    try:
        subprocess.run(["docker", "build", "-q", "-t", image, "-"], input=f"FROM {image}\nLABEL deployer.test=rebuilt-{time.time_ns()}\n",
                       capture_output=True, text=True, check=True)
        planned = deployer(site, "plan")
        deployed_again = deployer(site, "deploy")
        ran = assert_ran_as_planned(planned, deployed_again)
        assert set(ran) == {"worker1", "worker2"}, ran
        layers = len(json.loads(subprocess.run(["docker", "image", "inspect", "--format", "{{json .RootFS.Layers}}", image],
                                               capture_output=True, text=True, check=True).stdout))
        for worker in ("worker1", "worker2"):
            # only a label changed: every layer is on the workers already, so only the image's configuration travels
            assert re.fullmatch(rf"\S+ -m deployer\.hosts\.layers {re.escape(image)} {layers} \| docker load --quiet    "
                                rf"# send image {re.escape(image)} from this machine \(docker save \| ssh docker load\)", ran[worker][0]), ran[worker][0]
            sent = re.search(rf"^  {worker}: sent ([\d.]+) MB of {re.escape(image)} \({layers} of its layers", deployed_again.stderr, re.M)
            assert sent and float(sent.group(1)) < 1.0, deployed_again.stderr
            assert ran[worker][1].startswith("docker rm --force") and ran[worker][2].startswith("docker run --detach")
        assert hub_container(lab) == hub_before
    finally:
        subprocess.run(["docker", "tag", original, image], check=True)
        restored = deployer(site, "deploy")
        assert restored.returncode == 0, restored.stderr + restored.stdout


def test_update_replaces_the_hub_and_keeps_the_running_notebook(deployed, lab: Lab, site: Path) -> None:
    hub = lab.hosts["hub"]
    browser = running_notebook(hub, "jdoe")
    worker, container = notebook_container(lab, "jdoe")
    old_hub = hub_container(lab)
    result = deployer(site, "update", "-o", "cull_idle_notebook_timeout=7200")
    assert result.returncode == 0, result.stderr + result.stdout
    assert "the hub was replaced (running notebooks were not touched)" in result.stdout
    assert hub_container(lab) not in ("", old_hub)
    assert notebook_container(lab, "jdoe") == (worker, container)
    deadline = time.monotonic() + 60
    while not notebook_answers(browser, "jdoe"):  # the new hub restores the proxy's routes
        assert time.monotonic() < deadline, "the notebook does not answer through the new hub"
        time.sleep(1)
    again = deployer(site, "update", "-o", "cull_idle_notebook_timeout=7200")
    assert again.returncode == 0 and "nothing to change" in again.stdout


def test_a_dead_worker_stops_its_servers_and_the_user_starts_again_on_a_live_one(deployed, lab: Lab, site: Path) -> None:
    """A worker's machine stops (its container: engine, sshd, notebooks). Swarm keeps reporting the task as
    running; the hub counts the server as stopped within a minute, tells the user why, and a new start
    runs on the other worker with the user's files. Meanwhile `deployer status` names the stranded user."""
    hub = lab.hosts["hub"]
    browser = fresh_notebook(hub, "jdoe")
    dead, _ = notebook_container(lab, "jdoe")
    alive = "worker2" if dead == "worker1" else "worker1"
    note = f"written before {dead} died {time.time_ns()}"
    lab.ssh(alive, f"printf %s {shlex.quote(note)} > {LAB_SHARE}/data/jdoe/before-the-crash.txt && chown 5001:6001 {LAB_SHARE}/data/jdoe/before-the-crash.txt")
    xsrf = hub_xsrf(browser)
    subprocess.run(["docker", "stop", "-t", "1", lab.container(dead)], check=True, capture_output=True)
    died = time.monotonic()
    try:
        listed = ""
        while f"node {dead} is Down: the servers of jdoe run nowhere" not in listed:
            assert time.monotonic() - died < 60, f"deployer status never named jdoe on the down node:\n{listed}"
            listed = deployer(site, "status").stdout
        while browser.get("/hub/api/user", headers=xsrf).json().get("servers"):
            assert time.monotonic() - died < 60, "the hub still counts jdoe's server as running a minute after its worker died"
            time.sleep(1)
        print(f"\nthe hub counted the server as stopped {time.monotonic() - died:.0f} s after {dead} died")
        page = browser.get("/hub/user/jdoe/lab")
        assert page.status_code == 424 and f"The machine running your server ({dead}) went down" in page.text, page.text[-2000:]
        browser.post("/hub/api/users/jdoe/server", headers=xsrf)
        deadline = time.monotonic() + 240
        while not notebook_answers(browser, "jdoe"):
            assert time.monotonic() < deadline, "jdoe's new server did not start"
            time.sleep(2)
        container = text(lab.ssh(alive, f"docker ps -q --filter label=com.docker.swarm.service.name={NAME}-nb-jdoe"))  # (the dead one cannot be asked)
        assert container, f"jdoe's new server does not run on {alive}"
        assert text(lab.ssh(alive, f"docker exec {container} cat /home/jupyter/permanent/before-the-crash.txt")) == note
    finally:
        subprocess.run(["docker", "start", lab.container(dead)], check=True, capture_output=True)
        deadline = time.monotonic() + 180
        while lab.ssh("hub", f"docker node inspect {dead} --format '{{{{.Status.State}}}}'", check=False).stdout.decode().strip() != "ready":
            assert time.monotonic() < deadline, f"{dead} did not come back into the swarm"
            time.sleep(2)


def test_a_worker_removed_from_the_servers_file_is_taken_out_cleanly_and_joins_again_when_added(deployed, lab: Lab, site: Path) -> None:
    hub = lab.hosts["hub"]
    settled = deployer(site, "deploy")  # the files' configuration (an earlier test updated the hub with -o): then only the removal changes
    assert settled.returncode == 0, settled.stderr + settled.stdout
    browser = fresh_notebook(hub, "jdoe")
    xsrf = hub_xsrf(browser)
    leaving, _ = notebook_container(lab, "jdoe")
    staying = "worker2" if leaving == "worker1" else "worker1"
    # The notebook tasks Swarm runs on a worker, as the hub sees them (a container the swarm is still cleaning up
    # after an earlier test, of a service that no longer exists, is not one of them).
    notebooks = (f'ids=$(docker service ls -q --filter name={NAME}-nb-); [ -z "$ids" ] || '
                 f'docker service ps -q --filter desired-state=running --filter node={{}} $ids | sort')
    servers = (site / "site.hosts").read_text()
    smaller = yaml.safe_load(servers)
    smaller[SCOPE]["hosts"] = [h for h in smaller[SCOPE]["hosts"] if h["host_id"] != leaving]
    hub_before, staying_before = hub_container(lab), text(lab.ssh("hub", notebooks.format(staying)))
    try:
        (site / "site.hosts").write_text(yaml.safe_dump(smaller))
        planned = deployer(site, "plan")
        removed = deployer(site, "deploy")
        ran = assert_ran_as_planned(planned, removed)
        assert ran["hub"][0].endswith(f"# take out {leaving} (removed from the servers file): drain it, stopping its notebooks, and remove its worker label")
        assert f"{leaving} is no longer in the servers file: taking it out of the swarm" in removed.stderr
        assert "leave the swarm" in row(removed.stdout, leaving) and re.search(rf"^{leaving}\s+removed\s+changed", removed.stdout, re.M)
        assert text(lab.ssh(leaving, "docker info --format '{{.Swarm.LocalNodeState}}'")) == "inactive"
        assert leaving not in text(lab.ssh("hub", "docker node ls --format '{{.Hostname}}'")).split()
        assert not text(lab.ssh(leaving, f"docker ps -aq --filter label=deployer={NAME}"))  # its guard is gone
        assert not text(lab.ssh(leaving, "iptables-save | grep DEPLOYER-NFS || true"))  # and the guard's host rules
        export = text(lab.ssh("hub", f"cat /etc/ganesha/deployer/{NAME}.conf"))
        assert lab.hosts[leaving] not in export and lab.hosts[staying] in export  # the share no longer exported to it
        assert hub_container(lab) == hub_before and text(lab.ssh("hub", notebooks.format(staying))) == staying_before  # nothing else touched
        deadline = time.monotonic() + 60
        while browser.get("/hub/api/user", headers=xsrf).json().get("servers"):
            assert time.monotonic() < deadline, "the hub still counts jdoe's server as running"
            time.sleep(1)
        page = browser.get("/hub/user/jdoe/lab")
        assert page.status_code == 424 and f"The machine running your server ({leaving}) was taken out of service" in page.text, page.text[-2000:]

        (site / "site.hosts").write_text(servers)
        planned = deployer(site, "plan")
        added = deployer(site, "deploy")
        ran = assert_ran_as_planned(planned, added)
        assert "join the swarm as a worker" in row(added.stdout, leaving) and "the notebooks' network guard" in row(added.stdout, leaving)
        deadline = time.monotonic() + 60  # the new guard's first sweep loads its host rules again
        while "DEPLOYER-NFS-F-" not in text(lab.ssh(leaving, "iptables -S DOCKER-USER")):
            assert time.monotonic() < deadline, f"no host NFS rules on {leaving} after it joined again"
            time.sleep(1)
        labels = text(lab.ssh("hub", f"docker node inspect {leaving} --format '{{{{json .Spec.Labels}}}}'"))
        assert labels == f'{{"deployer.worker":"true","deployer.worker.{NAME}":"true"}}'
        assert hub_container(lab) == hub_before and text(lab.ssh("hub", notebooks.format(staying))) == staying_before
    finally:
        (site / "site.hosts").write_text(servers)


def test_a_second_run_waits_for_the_lock(deployed, lab: Lab, site: Path) -> None:
    ex = SSHExecutor("hub", lab.hosts["hub"], key=lab.key_path, known_hosts=site / "known_hosts")
    with HubLock(ex, NAME, "deploy"):
        result = deployer(site, "deploy")
    assert result.returncode == 1
    assert "hub: another run holds the lock of jupyterhub-lab-sim: deploy by " in result.stderr
    assert "refused (lock)" in row(result.stdout, "hub")
    for worker in ("worker1", "worker2"):  # never reached: the table does not call them unchanged
        assert "not contacted" in row(result.stdout, worker)


def test_an_unreachable_worker_is_named(deployed, lab: Lab, site: Path) -> None:
    subprocess.run(["docker", "exec", lab.container("worker2"), "pkill", "-x", "sshd"], check=True)
    try:
        result = deployer(site, "deploy")
    finally:
        subprocess.run(["docker", "exec", lab.container("worker2"), "/usr/sbin/sshd"], check=True)
    assert result.returncode == 1
    assert "error: worker2 (root@10.99.0.13:22): cannot connect over SSH" in result.stderr
    assert "unreachable" in row(result.stdout, "worker2") and "Traceback" not in result.stderr


def test_a_missing_image_is_named_with_its_host_and_the_fix(deployed, lab: Lab, site: Path) -> None:
    before = hub_container(lab)
    result = deployer(site, "deploy", "-o", "jupyter_user_image=deployer/no-such-image:9")
    assert result.returncode == 1
    for worker in ("worker1", "worker2"):
        assert f"{worker}: image deployer/no-such-image:9 is not on this machine and `docker pull deployer/no-such-image:9` failed there" in result.stderr
        assert "failed at images" in row(result.stdout, worker)
    assert "Traceback" not in result.stderr and hub_container(lab) == before  # the hub was not touched


def test_a_backup_restored_onto_a_wiped_hub_brings_users_back_still_logged_in(deployed, lab: Lab, site: Path, tmp_path: Path) -> None:
    hub = lab.hosts["hub"]
    browser = http_login(hub, "bob")
    xsrf = hub_xsrf(browser)
    assert browser.get("/hub/api/user", headers=xsrf).json()["name"] == "bob"
    env = {**os.environ, "DEPLOYER_BACKUP_PASSPHRASE": "lab passphrase"}
    run = lambda *args, **kw: subprocess.run([DEPLOYER, "-i", "lab", "-t", "sim", *args], cwd=site, capture_output=True, text=True,  # noqa: E731
                                             timeout=900, **kw)
    archive = tmp_path / "lab.backup"
    made = run("backup", "--encrypt", "--file", str(archive), env=env)
    assert made.returncode == 0, made.stderr + made.stdout
    assert "data/jupyterhub.sqlite" in made.stdout and "state/cookie_secret" in made.stdout and "encrypted" in made.stdout
    assert (archive.stat().st_mode & 0o777) == 0o600 and CLIENT[1].encode() not in archive.read_bytes()
    wiped = deployer(site, "destroy", "-y", "--purge-data")
    assert wiped.returncode == 0, wiped.stderr + wiped.stdout
    # nothing of the hub is left (only the lab's share volume is mounted there)
    assert lab.ssh("hub", f"test -e /srv/deployer/{NAME}/state || test -e /srv/deployer/{NAME}/hub-data", check=False).returncode != 0
    wrong = run("restore", "-y", str(archive), env={**env, "DEPLOYER_BACKUP_PASSPHRASE": "not it"})
    assert wrong.returncode == 1 and f"{archive}: wrong passphrase, or the file is damaged" in wrong.stderr and "Traceback" not in wrong.stderr
    restored = run("restore", "-y", str(archive), env=env)
    assert restored.returncode == 0, restored.stderr + restored.stdout
    assert "restore jupyterhub.lab.sim" in restored.stderr or "restore of jupyterhub.lab.sim done" in restored.stdout
    answer = browser.get("/hub/api/user", headers=xsrf)  # the cookie from before the wipe
    assert answer.status_code == 200 and answer.json()["name"] == "bob", answer.text


def clean(lab: Lab) -> dict[str, str]:
    """What Deployer could have left on each host."""
    script = (f"docker info --format '{{{{.Swarm.LocalNodeState}}}}'; docker ps -aq | wc -l; docker network ls -q --filter name={NAME} | wc -l; "
              f"ss -Hltn | grep -c ':2049 ' || true; ls /etc/ganesha; ls -A {LAB_SHARE} | wc -l; "
              "pgrep -x -r R,S,D rpcbind | wc -l; pgrep -x -r R,S,D dbus-daemon | wc -l; "  # live ones, not zombies
              "iptables-save | grep -c DEPLOYER-NFS || true; "  # the guard's host NFS rules
              f"ls /srv/deployer/{NAME} 2>/dev/null | tr '\\n' ' '")
    return {host: text(lab.ssh(host, script)) for host in lab.hosts}


def test_destroy_leaves_the_hosts_clean_then_a_killed_deploy_completes_on_rerun(deployed, lab: Lab, site: Path) -> None:
    result = deployer(site, "destroy", "-y", "--purge-data")
    assert result.returncode == 0, result.stderr + result.stdout
    # No swarm, container, network, NFS server, its helpers or data; the packaged ganesha.conf back; only the
    # share's (lab volume's) mount point is left.
    for host, left in clean(lab).items():
        # ... and no rpcbind or dbus-daemon left running (deploy started them for nfs-ganesha on the hub), no host NFS rules
        assert left.split("\n") == ["inactive", "0", "0", "0", "ganesha.conf", "vfs.conf", "0", "0", "0", "0", "share"], f"{host}: {left}"
    assert "leave the swarm" in row(result.stdout, "worker1")

    # Interrupted while sending an image (the worker has to get it again), then run again.
    lab.ssh("worker2", "docker image rm deployer/jupyteruser:0.2.0")
    proc = subprocess.Popen([DEPLOYER, "-i", "lab", "-t", "sim", "deploy"], cwd=site, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if "] images" in line:
            time.sleep(2)
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    rerun = deployer(site, "deploy")
    assert rerun.returncode == 0, rerun.stderr + rerun.stdout
    assert "send image deployer/jupyteruser:0.2.0" in row(rerun.stdout, "worker2")
    assert lab.ssh("worker2", "docker image inspect deployer/jupyteruser:0.2.0", check=False).returncode == 0
    assert httpx.get(f"https://{lab.hosts['hub']}/hub/health", verify=False, timeout=30).status_code == 200
    assert deployer(site, "deploy").stdout.count("nothing to change") == 1
