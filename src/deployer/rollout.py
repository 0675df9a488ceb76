"""deploy, update and destroy on real hosts: phases run over each host's executor.

Every phase reads what is there, then runs only the commands that change something (the
pure functions of ``cluster``, ``nfs``, ``hubservice``); a second run with nothing changed
runs no changing command and restarts nothing. A run holds the hub's lock throughout and
ends with a line in the hub's audit log. A failure names the host, the command and its
error; everything done before it stays done, so a re-run continues where it stopped.
"""

from __future__ import annotations

import json
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from deployer import __version__
from deployer.config.hubsettings import AUDIT_LOG, Layout
from deployer.config.loader import Deployment
from deployer.errors import DeployerError, PreflightError
from deployer.hosts import cluster
from deployer.hosts.cluster import Executor, HostFacts
from deployer.hosts.commands import Command, cmd, sh
from deployer.hosts.lock import HubLock, LockedError, operator
from deployer.hosts.ssh import ConnectError
from deployer.hosts.state import HostStateDir
from deployer.phases import hubphase, images, netguard, nfs
from deployer.phases.hubservice import network_commands, object_commands, service_commands, stale_commands


def health_command(https_port: int) -> Command:
    """Asks the hub itself whether JupyterHub answers (the operator's machine may not reach its port)."""
    return sh('curl -ksf -o /dev/null "$1" 2>/dev/null || python3 -c '
              '"import ssl, sys, urllib.request as u; u.urlopen(sys.argv[1], context=ssl._create_unverified_context(), timeout=5)" "$1" 2>/dev/null',
              f"https://127.0.0.1:{https_port}/hub/health")


class RolloutError(DeployerError):
    """One or more hosts failed; each line names the host."""


@dataclass
class HostResult:
    host_id: str
    roles: str
    changes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    unreachable: bool = False
    contacted: bool = False  # a command ran there (facts read at least)
    locked: bool = False  # another run held the lock (the hub)
    failed_at: str = ""  # the phase it failed in

    @property
    def outcome(self) -> str:
        """What the table says, true for hosts the run never reached too."""
        if self.unreachable:
            return "unreachable"
        if self.locked:
            return "refused (lock)"
        if self.error:
            return f"failed at {self.failed_at}" if self.failed_at else "failed"
        if not self.contacted:
            return "not contacted"
        return "changed" if self.changes else "unchanged"


@dataclass
class Report:
    action: str
    results: dict[str, HostResult]
    url: str = ""
    self_signed: bool = False
    hub_replaced: bool = False
    seconds: float = 0.0
    commands: dict[str, int] = field(default_factory=dict)  # host -> remote commands run
    phases: list[tuple[str, float]] = field(default_factory=list)  # (phase, seconds it took)

    @property
    def changed(self) -> bool:
        return any(r.changes for r in self.results.values())


class Rollout:
    def __init__(self, deployment: Deployment, executors: dict[str, Executor], action: str,
                 progress: Callable[[str], None] = lambda text: None, *, https_port: int = 443, http_port: int = 80,
                 keep_dir: Path | None = None):
        self.d = deployment
        self.keep_dir = keep_dir  # -k: a copy of the hub's generated files (never a secret) for debugging
        self.https_port, self.http_port = https_port, http_port  # where the hub is published on its host
        self.ex = executors
        self.action = action
        self.progress = progress
        self.layout = Layout.of(deployment)
        self.hub = deployment.hub
        self.hosts = {h.host_id: h for h in deployment.hosts}
        self.hub_ex = executors[self.hub.host_id]
        self.report = Report(action, {h.host_id: HostResult(h.host_id, ",".join(h.roles)) for h in deployment.hosts})
        self._phase = 0
        self._phases = 0
        self._current: tuple[str, float] | None = None

    # --- running -------------------------------------------------------------------------------

    def phase(self, text: str) -> None:
        now = time.monotonic()
        self._close_phase(now)
        self._phase += 1
        self._current = (text, now)
        self.progress(f"[{self._phase}/{self._phases}] {text}")

    def _close_phase(self, now: float) -> None:
        if self._current is not None:
            self.report.phases.append((self._current[0], now - self._current[1]))
            self._current = None

    def run(self, host_id: str, command: Command, **kwargs):
        """Run a changing command and record it in the host's result."""
        self.report.results[host_id].contacted = True
        result = self.ex[host_id].run(command, **kwargs)
        self.report.results[host_id].changes.append(command.why or str(command))
        return result

    def each(self, host_ids: list[str], work: Callable[[str], None]) -> None:
        """``work`` on several hosts in parallel; every host's failure is recorded, then raised together."""
        if not host_ids:
            return
        with ThreadPoolExecutor(len(host_ids)) as pool:
            futures = {h: pool.submit(work, h) for h in host_ids}
            errors = []
            for host_id, future in futures.items():
                result = self.report.results[host_id]
                try:
                    future.result()
                    result.contacted = True
                except ConnectError as error:
                    result.unreachable = True
                    result.error = str(error)
                    errors.append(str(error))
                except DeployerError as error:
                    result.contacted = True
                    result.error, result.failed_at = str(error), self._current[0] if self._current else ""
                    errors.append(str(error))
        if errors:
            raise RolloutError("\n".join(errors))

    def _finish(self, started: float, error: BaseException | None) -> None:
        self._close_phase(time.monotonic())
        self.report.seconds = time.monotonic() - started
        self.report.commands = {h: getattr(ex, "count", 0) for h, ex in self.ex.items()}
        entry = {
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "operator": operator(), "action": self.action,
            "deployment": str(self.d.target), "deployer": __version__, "result": "failed" if error else "ok",
            "changes": {h: r.changes for h, r in self.report.results.items() if r.changes},
            "images": [self.d.config.jupyterhub_image, self.d.config.jupyter_user_image],
        }
        if error:
            entry["error"] = str(error).splitlines()[0][:500]
        try:  # the audit line must not hide the run's own outcome
            self.hub_ex.run(sh('umask 077; mkdir -p "$(dirname "$1")"; cat >>"$1"', AUDIT_LOG,
                               input=(json.dumps(entry, sort_keys=True) + "\n").encode(), why="audit log"))
        except DeployerError:
            pass

    def locked(self, body: Callable[[], None], phases: int) -> Report:
        self._phases = phases
        started = time.monotonic()
        self.progress(f"{self.action} {self.d.target}: {len(self.d.hosts)} hosts, lock on the hub {self.hub.host_id}")
        try:
            with HubLock(self.hub_ex, self.layout.name, self.action):
                error: BaseException | None = None
                try:
                    body()
                except BaseException as exc:  # recorded in the audit log, then raised as it was
                    error = exc
                    raise
                finally:
                    self._finish(started, error)
        except ConnectError as exc:
            result = self.report.results.get(exc.host) or self.report.results[self.hub.host_id]
            result.unreachable, result.error = True, str(exc)
            raise
        except LockedError as exc:
            self.report.results[self.hub.host_id].locked = True
            self.report.results[self.hub.host_id].error = str(exc)
            raise
        except DeployerError as exc:  # a failure on the hub outside the parallel phases (labels, the hub service)
            hub = self.report.results[self.hub.host_id]
            if not any(r.error for r in self.report.results.values()):
                hub.error, hub.failed_at, hub.contacted = str(exc), self.report.phases[-1][0] if self.report.phases else "", True
            raise
        return self.report

    # --- deploy and update ---------------------------------------------------------------------

    def deploy(self) -> Report:
        return self.locked(lambda: self._deploy(full=True), 8)

    def update(self) -> Report:
        return self.locked(lambda: self._deploy(full=False), 5)

    def _deploy(self, full: bool) -> None:
        self.phase("reading every host")
        facts = self.gather()
        self.phase("checking ports, paths and swarm membership")
        local_images = {image: images.local_id(image) for image in (self.d.config.jupyterhub_image, self.d.config.jupyter_user_image, self.d.config.network_guard_image)}
        if not full:
            hub_facts = facts[self.hub.host_id]
            if not (hub_facts.swarm_state == "active" and hub_facts.manager):
                raise DeployerError(f"{self.hub.host_id}: no swarm on the hub yet: run `deployer deploy` first (update only rolls out a new hub image or configuration)")
        else:
            problems = cluster.problems(self.d, facts, (self.https_port, self.http_port))
            if problems:
                raise PreflightError(problems)
            self.phase("Docker engines")
            self.engines(facts)
            self.phase("swarm: init, join, node labels")
            self.swarm(facts)
            self.phase("the share: directories, NFS export, worker mounts")
            self.share()
        self.phase("images")
        self.images(facts, local_images)
        self.phase("the notebooks' network guard on every worker")
        self.guards()
        self.phase("the hub service")
        self.hub_service()

    def gather(self) -> dict[str, HostFacts]:
        facts: dict[str, HostFacts] = {}

        def read(host_id: str) -> None:
            facts[host_id] = cluster.gather_one(self.hosts[host_id], self.ex[host_id], self.d)

        self.each([h.host_id for h in self.d.hosts], read)
        return facts

    def engines(self, facts: dict[str, HostFacts]) -> None:
        def install(host_id: str) -> None:
            self.run(host_id, cluster.INSTALL_DOCKER, timeout=1200)
            facts[host_id] = cluster.gather_one(self.hosts[host_id], self.ex[host_id], self.d)

        self.each([h for h, f in facts.items() if f.docker is None], install)

    def swarm(self, facts: dict[str, HostFacts]) -> None:
        hub, hub_facts = self.hub, facts[self.hub.host_id]
        if not (hub_facts.swarm_state == "active" and hub_facts.manager):
            self.run(hub.host_id, cmd("docker", "swarm", "init", "--advertise-addr", hub.address, why="initialise the swarm on the hub"))
        joining = [w.host_id for w in self.d.workers if w.host_id != hub.host_id and facts[w.host_id].swarm_state not in ("active", "pending")]
        if joining:
            token = self.hub_ex.run(cmd("docker", "swarm", "join-token", "-q", "worker")).stdout.strip()

            def join(host_id: str) -> None:
                host = self.hosts[host_id]
                ex = self.ex[host_id]
                reach = ex.run(sh('timeout 5 bash -c "exec 3<>/dev/tcp/$1/$2"', hub.address, "2377"), check=False)
                if reach.code != 0:
                    raise DeployerError(f"{host_id}: cannot reach the hub's swarm port {hub.address}:2377 (TCP); open 2377/tcp, 7946/tcp+udp "
                                        "and 4789/udp between the hosts (firewall, security group) and check the hub's private_ip")
                argv = ("docker", "swarm", "join", "--advertise-addr", host.address, "--token", token, f"{hub.address}:2377")
                # The token is only on the worker's command line (docker has no other way to take it), never in our output.
                shown = " ".join(argv).replace(token, "<worker token>")
                self.run(host_id, Command(argv, why="join the swarm as a worker", shown=shown), timeout=120)

            self.each(joining, join)
        self.labels()

    def labels(self) -> None:
        node_ids = {}
        for host in self.d.hosts:
            node_ids[host.host_id] = self.ex[host.host_id].run(cmd("docker", "info", "--format", "{{.Swarm.NodeID}}")).stdout.strip()
        inspected = self.hub_ex.run(cmd("docker", "node", "inspect", *node_ids.values(), "--format", "{{.ID}} {{json .Spec.Labels}}")).stdout
        labels = {line.split(" ", 1)[0]: json.loads(line.split(" ", 1)[1]) or {} for line in inspected.splitlines() if line.strip()}
        for host in self.d.hosts:
            have = labels.get(node_ids[host.host_id], {})
            missing = [f"deployer.{role}=true" for role in host.roles if have.get(f"deployer.{role}") != "true"]
            if missing:
                argv = ["docker", "node", "update"] + sum((["--label-add", m] for m in missing), []) + [node_ids[host.host_id]]
                self.report.results[host.host_id].changes.append(f"label the node {', '.join(missing)}")
                self.hub_ex.run(cmd(*argv))

    def share(self) -> None:
        layout, hub = self.layout, self.hub
        for command in hubphase.directory_commands(self.d, layout, hubphase.missing_on(self.hub_ex)):
            self.run(hub.host_id, command)
        marker = self.hub_ex.run(nfs.marker_command(layout, f"{layout.name} {secrets.token_hex(16)}")).stdout.strip()
        others = [w for w in self.d.workers if w.host_id != hub.host_id]
        if not others:
            return
        kernel = self.d.config.use_stock_nfs
        server = nfs.ServerFacts.read(self.hub_ex, layout, kernel)
        for command in nfs.server_commands(layout, [w.address for w in others], server, kernel=kernel):
            self.run(hub.host_id, command, timeout=1200)

        def mount(host_id: str) -> None:
            ex, result = self.ex[host_id], self.report.results[host_id]
            if ex.run(nfs.read_marker(layout)).stdout.strip() == marker:
                result.notes.append("sees the share")
                return
            has_client = ex.run(sh('command -v mount.nfs4 >/dev/null || [ -x /sbin/mount.nfs4 ]'), check=False).code == 0
            for command in nfs.mount_commands(layout, hub.address, has_client=has_client):
                self.run(host_id, command, timeout=1200)
            if ex.run(nfs.read_marker(layout)).stdout.strip() != marker:
                raise DeployerError(f"{host_id}: mounted {hub.address}:{layout.share_dir} but does not see the hub's files there; "
                                    f"check the NFS export on {hub.host_id} and that {host_id}'s address {next(h for h in others if h.host_id == host_id).address} is the one it connects from")

        self.each([w.host_id for w in others], mount)

    def images(self, facts: dict[str, HostFacts], local: dict[str, str | None]) -> None:
        def provide(host_id: str) -> None:
            ex = self.ex[host_id]
            for image in cluster.wanted_images(self.d, self.hosts[host_id]):
                remote = facts[host_id].images.get(image) if image in facts[host_id].images else images.image_id(ex, image)
                if images.needs(local.get(image), remote):
                    how = images.provide(ex, image, local.get(image))
                    self.report.results[host_id].changes.append(f"{how} image {image}")
                    facts[host_id].images[image] = images.image_id(ex, image)

        self.each([h.host_id for h in self.d.hosts], provide)

    def guards(self) -> None:
        def guard(host_id: str) -> None:
            for command in hubphase.guard_commands(self.d, self.layout, self.ex[host_id], https_port=self.https_port, http_port=self.http_port):
                self.run(host_id, command)

        self.each([w.host_id for w in self.d.workers], guard)

    def hub_service(self) -> None:
        layout, hub, ex = self.layout, self.hub, self.hub_ex
        state = HostStateDir(ex, f"{layout.state_root}/{layout.name}/state")
        image_id = images.image_id(ex, self.d.config.jupyterhub_image) or ""
        spec, self.report.self_signed = hubphase.hub_spec(self.d, layout, state, image_id=image_id,
                                                          https_port=self.https_port, http_port=self.http_port)
        if self.keep_dir:
            self.keep(spec.config_files())
        for command in hubphase.proxy_commands(self.d, layout, ex):
            self.run(hub.host_id, command)
        facts = hubphase.read_facts(ex, layout)
        for command in network_commands(layout, facts) + object_commands(spec, facts) + service_commands(spec, facts):
            self.run(hub.host_id, command)
            if command.argv[:3] == ("docker", "service", "rm"):
                self.report.hub_replaced = True
                hubphase.wait_until_gone(ex, layout.hub_service)
        self.report.url = f"https://{self.d.config.jupyterhub_host}"
        self.wait_healthy(120)
        for command in stale_commands(spec, facts):
            if ex.run(command, check=False).code == 0:
                self.report.results[hub.host_id].changes.append(command.why)

    def keep(self, files: dict[str, str]) -> None:
        """The generated files the hub service gets (its Docker configs; public), written for reading."""
        self.keep_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for path, content in files.items():
            (self.keep_dir / path.lstrip("/").replace("/", "_")).write_text(content)
        self.progress(f"kept the hub's generated files in {self.keep_dir} (-k)")

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.hub_ex.run(health_command(self.https_port), check=False, timeout=30).code == 0:
                return
            time.sleep(1)
        logs = self.hub_ex.run(cmd("docker", "service", "logs", "--tail", "20", self.layout.hub_service), check=False)
        tail = (logs.stdout + logs.stderr).strip()[-2500:]
        raise DeployerError(f"{self.hub.host_id}: the hub did not answer https://127.0.0.1:{self.https_port}/hub/health on the hub within {timeout:.0f} s; "
                            f"`deployer status` shows its state; last log lines:\n{tail}")

    # --- destroy -------------------------------------------------------------------------------

    def destroy(self, purge_data: bool) -> Report:
        return self.locked(lambda: self._destroy(purge_data), 5 if purge_data else 4)

    def _destroy(self, purge_data: bool) -> None:
        layout, hub = self.layout, self.hub
        self.phase("the hub, the notebooks and the deployment's Docker objects")
        hub_facts = cluster.gather_one(hub, self.hub_ex, self.d)
        if hub_facts.swarm_state == "active" and hub_facts.manager:
            present = hubphase.read_facts(self.hub_ex, layout)
            if hubphase.remove(layout, self.hub_ex):
                self.report.results[hub.host_id].changes.append("removed the network guard")
            if present.networks or present.secrets or present.configs or present.hub_spec_hash is not None:
                self.report.results[hub.host_id].changes.append("removed the hub, notebooks, secrets, configs and network")

        def unguard(host_id: str) -> None:
            if "removed" in self.ex[host_id].run(netguard.remove_command(layout)).stdout:
                self.report.results[host_id].changes.append("removed the network guard")

        self.each([h.host_id for h in self.d.hosts], unguard)
        self.phase("the share: worker mounts and the NFS export")
        others = [w.host_id for w in self.d.workers if w.host_id != hub.host_id]

        def unmount(host_id: str) -> None:
            if "unmounted" in self.ex[host_id].run(nfs.unmount_command(layout)).stdout:
                self.report.results[host_id].changes.append("unmounted the share")

        self.each(others, unmount)
        kernel = self.d.config.use_stock_nfs
        for command in nfs.unexport_commands(layout, nfs.ServerFacts.read(self.hub_ex, layout, kernel), kernel=kernel):
            self.run(hub.host_id, command)
        self.phase("the swarm")
        self.leave_swarm(hub_facts)
        if purge_data:
            self.phase(f"user data and the hub's state under {layout.state_root}/{layout.name}")
            root = f"{layout.state_root}/{layout.name}"
            self.run(hub.host_id, sh('[ -d "$2" ] && find "$2" -xdev -mindepth 1 -delete; rm -rf --one-file-system "$1"; rmdir "$3" 2>/dev/null; true',
                                     root, layout.share_dir, layout.state_root, why="delete the users' data, tokens and the hub's database"))
            self.each(others, lambda h: self.ex[h].run(sh('rmdir "$1" "$2" "$3" 2>/dev/null; true', layout.share_dir, root, layout.state_root)))
        self.phase("done")

    def leave_swarm(self, hub_facts: HostFacts) -> None:
        """Leave the swarm on every host when nothing else runs in it; else only drop our labels."""
        hub = self.hub
        if hub_facts.swarm_state != "active":
            return
        if hub_facts.manager:
            others = self.hub_ex.run(cmd("docker", "service", "ls", "--format", "{{.Name}}")).stdout.split()
            if others:
                self.report.results[hub.host_id].notes.append(f"swarm kept: other services run in it ({', '.join(others[:5])})")
                for host in self.d.hosts:
                    node = self.ex[host.host_id].run(cmd("docker", "info", "--format", "{{.Swarm.NodeID}}")).stdout.strip()
                    if node:
                        self.hub_ex.run(cmd("docker", "node", "update", "--label-rm", "deployer.hub", "--label-rm", "deployer.worker", node), check=False)
                return

        def leave(host_id: str) -> None:
            state = self.ex[host_id].run(cmd("docker", "info", "--format", "{{.Swarm.LocalNodeState}}"), check=False).stdout.strip()
            if state in ("active", "pending"):
                self.run(host_id, cmd("docker", "swarm", "leave", "--force", why="leave the swarm"))

        self.each([h.host_id for h in self.d.hosts if h.host_id != hub.host_id], leave)
        leave(hub.host_id)
