"""deploy, update and destroy on real hosts: the phases' plans run over each host's executor.

Each phase is planned from the facts just read (the pure planners of ``phases``) and only its
commands run; after a phase changed something the facts are read again. A second run with
nothing changed runs no changing command and restarts nothing. A run holds the hub's lock
throughout and ends with a line in the hub's audit log. A failure names the host, the command
and its error; everything done before it stays done, so a re-run continues where it stopped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from deployer import __version__
from deployer.config.hubsettings import AUDIT_LOG, Layout, notebook_images
from deployer.config.loader import Deployment
from deployer.config.model import Host
from deployer.errors import DeployerError, PreflightError
from deployer.hosts import backup as backups
from deployer.hosts import ssh
from deployer.hosts.commands import Command, cmd, sh
from deployer.hosts.executor import Executor, RemoteCommandError
from deployer.hosts.lock import HubLock, LockedError, operator
from deployer.hosts.ssh import ConnectError
from deployer.phases import facts as host_facts
from deployer.phases import hub as hub_phases
from deployer.phases import images, members, mountguard, netguard, nfs, pipeline, preflight, teardown
from deployer.phases.base import Context, Facts, Phase, Planned, shown
from deployer.phases.facts import HostFacts


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
    executed: list[tuple[str, Command]] = field(default_factory=list)  # (host, command): every changing command run

    @property
    def changed(self) -> bool:
        return any(r.changes for r in self.results.values())


class Rollout:
    def __init__(self, deployment: Deployment, executors: dict[str, Executor], action: str,
                 progress: Callable[[str], None] = lambda text: None, *, https_port: int = 443, http_port: int = 80,
                 keep_dir: Path | None = None, executor_for: Callable[[Host, Deployment], Executor] = ssh.executor_for):
        self.d = deployment
        self.executor_for = executor_for  # for a worker removed from the servers file, reached as the last deploy did
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

    def run(self, host_id: str, command: Command) -> None:
        """Run one planned command on its host, record it, and say why it failed when it does."""
        ex, result = self.ex[host_id], self.report.results[host_id]
        result.contacted = True
        self.progress(shown(host_id, command))
        self.report.executed.append((host_id, command))
        try:
            if command.source is not None:
                streamed = ex.stream_from(list(command.source), command, timeout=command.timeout or 1800)
                if streamed.source_code != 0:
                    raise images.ImageError(f"`{' '.join(command.source)}` failed on this machine: {streamed.source_error.strip()[-500:]}")
                code = streamed.result.code
                if code != 0:
                    raise RemoteCommandError(ex.host, command, code, streamed.result.stderr)
                for line in streamed.source_error.strip().splitlines()[-1:]:  # how much went over the wire
                    self.progress(f"  {host_id}: {line}")
                    result.notes.append(line)
            else:
                code = ex.run(command, check=command.check, timeout=command.timeout or 600).code
        except RemoteCommandError as error:
            if command.hint:  # what the failure means and how to fix it, then what the host said
                tail = (error.stderr.strip().splitlines() or ["no output"])[-1]
                raise DeployerError(f"{ex.host}: {command.hint}: {tail}") from None
            raise
        if code == 0:
            result.changes.append(command.why or str(command))

    def execute(self, planned: Planned, best_effort: bool = False) -> None:
        """A phase's commands: in order on each host, the hosts in parallel. In a best-effort phase a host's
        failure is noted on its row and the run goes on."""
        for host_id, notes in planned.notes.items():
            for note in notes:
                if note not in self.report.results[host_id].notes:
                    self.report.results[host_id].notes.append(note)

        def on(host_id: str) -> None:
            try:
                for command in planned.commands[host_id]:
                    self.run(host_id, command)
            except DeployerError as error:
                if not best_effort:
                    raise
                self.report.results[host_id].notes.append(f"not done ({error}); went on without it")
                self.progress(f"  {host_id}: not done, going on: {error}")

        self.each(list(planned.commands), on)

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
            "images": [self.d.config.jupyterhub_image, *notebook_images(self.d.config)],
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
        return self.locked(lambda: self._deploy(pipeline.DEPLOY), 2 + len(pipeline.DEPLOY))

    def update(self) -> Report:
        return self.locked(lambda: self._deploy(pipeline.UPDATE), 2 + len(pipeline.UPDATE))

    def restore(self, backup: backups.Backup) -> Report:
        """The backup's files on the hub first (the hub stopped), then a deploy that starts it on them."""
        return self.locked(lambda: self._restore(backup), 3 + len(pipeline.DEPLOY))

    def _restore(self, backup: backups.Backup) -> None:
        self.phase("the hub's database and state from the backup")
        for command in backups.restore_commands(backup, self.layout):
            self.run(self.hub.host_id, command)
        self._deploy(pipeline.DEPLOY)

    def _deploy(self, phases: tuple[Phase, ...]) -> None:
        self.phase("reading every host")
        facts = self.read_facts()
        self.phase("checking ports, paths and swarm membership")
        ctx = Context.of(self.d, self.local_images(), https_port=self.https_port, http_port=self.http_port, local_layers=self.local_layers())
        if phases is pipeline.UPDATE:
            if not facts[self.hub.host_id].leads_swarm:
                raise DeployerError(f"{self.hub.host_id}: no swarm on the hub yet: run `deployer deploy` first "
                                    "(update only rolls out a new hub image or configuration)")
        else:
            problems = preflight.problems(self.d, facts, (self.https_port, self.http_port))
            if problems:
                raise PreflightError(problems)
        for host in members.removed(ctx, facts):  # reached as the last deploy reached them
            self.hosts[host.host_id], self.ex[host.host_id] = host, self.executor_for(host, self.d)
            self.report.results[host.host_id] = HostResult(host.host_id, "removed")
            self.progress(f"{host.host_id} is no longer in the servers file: taking it out of the swarm (its notebooks stop)")
        for phase in phases:
            self.phase(phase.title)
            planned = phase.plan(ctx, facts)
            if phase is hub_phases.SERVICE:
                spec, self.report.self_signed = hub_phases.hub_spec(ctx, facts[self.hub.host_id])
                if self.keep_dir:
                    self.keep(spec.config_files())
            self.execute(planned, phase.best_effort)
            if planned.commands:
                facts = self.read_facts()
                failed = phase.check(ctx, facts)
                if failed:
                    raise RolloutError("\n".join(failed))
            if phase is hub_phases.SERVICE:
                self.report.hub_replaced = any(c.why == hub_phases.REPLACE for _, c in self.report.executed)
                self.report.url = f"https://{self.d.config.jupyterhub_host}"
                self.wait_healthy(120)

    def local_images(self) -> dict[str, str | None]:
        """The images on this machine, which deploy sends to hosts whose copy differs."""
        return images.local_ids(self.d)

    def local_layers(self) -> dict[str, list[str]]:
        """Their layers: a host is sent only those it lacks."""
        return images.local_diff_ids(self.d)

    def read_facts(self) -> Facts:
        """Every host's facts, read in parallel; a host that cannot be reached is recorded as such."""
        facts: Facts = {}

        def read(host_id: str) -> None:
            facts[host_id] = host_facts.gather_one(self.hosts[host_id], self.ex[host_id], self.d)

        self.each([h.host_id for h in self.d.hosts], read)
        return facts

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
        try:
            logs = self.hub_ex.run(cmd("docker", "service", "logs", "--tail", "20", self.layout.hub_service), check=False, timeout=30)
            tail = (logs.stdout + logs.stderr).strip()[-2500:]
        except RemoteCommandError:  # `docker service logs` can hang on a task the swarm is reaping
            tail = "(the hub's logs did not come within 30 s: `deployer logs --hub`)"
        raise DeployerError(f"{self.hub.host_id}: the hub did not answer https://127.0.0.1:{self.https_port}/hub/health on the hub within {timeout:.0f} s; "
                            f"`deployer status` shows its state; last log lines:\n{tail}")

    # --- destroy -------------------------------------------------------------------------------

    def destroy(self, purge_data: bool) -> Report:
        return self.locked(lambda: self._destroy(purge_data), 5 if purge_data else 4)

    def _destroy(self, purge_data: bool) -> None:
        layout, hub = self.layout, self.hub
        self.phase("the hub, the notebooks and the deployment's Docker objects")
        hub_facts = host_facts.gather_one(hub, self.hub_ex, self.d)
        if hub_facts.swarm_state == "active" and hub_facts.manager:
            present = hub_facts.objects or host_facts.read_objects(self.hub_ex, layout, hub_facts.docker_subnets)
            if teardown.remove(layout, self.hub_ex):
                self.report.results[hub.host_id].changes.append("removed the network guard")
            if present.networks or present.secrets or present.configs or present.hub_spec_hash is not None:
                self.report.results[hub.host_id].changes.append("removed the hub, notebooks, secrets, configs and network")

        def unguard(host_id: str) -> None:
            if "removed" in self.ex[host_id].run(netguard.remove_command(layout)).stdout:
                self.report.results[host_id].changes.append("removed the network guard")

        def unmount_guard(host_id: str) -> None:
            if "removed" in self.ex[host_id].run(mountguard.remove_command(layout)).stdout:
                self.report.results[host_id].changes.append("removed the mount guard")
                # Docker never forgets a plugin of this kind (a socket in /run/docker/plugins) until the engine restarts.
                self.report.results[host_id].notes.append(f"the engine keeps {mountguard.driver(layout)}, the removed mount guard's volume "
                                                          "driver, until it restarts: till then `docker volume ls` there waits some 15 s for it")

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
        # Last: leaving removes the notebooks' containers, which the engine lets go of through their volumes' driver.
        self.each([h.host_id for h in self.d.hosts], unmount_guard)
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
                        for label in ("deployer.hub", "deployer.worker", self.layout.worker_label):  # (one by one: a missing one fails)
                            self.hub_ex.run(cmd("docker", "node", "update", "--label-rm", label, node), check=False)
                return

        def leave(host_id: str) -> None:
            state = self.ex[host_id].run(cmd("docker", "info", "--format", "{{.Swarm.LocalNodeState}}"), check=False).stdout.strip()
            if state in ("active", "pending"):
                self.run(host_id, cmd("docker", "swarm", "leave", "--force", why="leave the swarm"))

        self.each([h.host_id for h in self.d.hosts if h.host_id != hub.host_id], leave)
        leave(hub.host_id)
