"""Commands on the hosts: plan, deploy, update, status, destroy; every one through the same facts,
planners and Rollout, whether the hosts are this machine or reached over SSH."""

from __future__ import annotations

import os
import sys

import click
from rich.console import Console
from rich.table import Table

from deployer import rollout
from deployer.cli.app import (
    deployment_options,
    err,
    load_files,
    main,
    one_deployment,
    out,
    reported,
)
from deployer.config.hubsettings import Layout
from deployer.config.loader import Deployment
from deployer.config.model import LOCAL_HOSTS
from deployer.errors import DeployerError, PreflightError, UsageError
from deployer.hosts import backup as backups
from deployer.hosts import logs as hub_logs
from deployer.hosts import metrics
from deployer.hosts.ssh import SSHExecutor, executor_for
from deployer.hosts.status import certificate as certificate_status
from deployer.hosts.status import last_run
from deployer.hosts.status import read as status_of
from deployer.phases import images, preflight
from deployer.phases.base import Context, sequence, shown
from deployer.phases.facts import gather
from deployer.phases.pipeline import plan_all


@main.command()
@deployment_options
@reported
def deploy() -> None:
    """Bring every host to the configured state: engines, swarm, share, images, guards, the hub."""
    _rollout(one_deployment(load_files(click.get_current_context().obj)), "deploy")


@main.command()
@deployment_options
@reported
def update() -> None:
    """Roll out a new hub image or configuration; running notebooks keep running."""
    _rollout(one_deployment(load_files(click.get_current_context().obj)), "update")


def _check_local(deployment: Deployment) -> None:
    """This machine is a host like any other, but not mixed with remote ones under a loopback name."""
    local = [h.ssh_host in LOCAL_HOSTS for h in deployment.hosts]
    if any(local) and not all(local):
        names = ", ".join(h.host_id for h in deployment.hosts if h.ssh_host in LOCAL_HOSTS)
        raise UsageError(f"{names}: ssh_host is this machine ({'/'.join(sorted(LOCAL_HOSTS))}) but other hosts are remote; "
                         "give every host the address the others reach it at (a hub on this machine alone needs all hosts local)")


def _rollout(deployment: Deployment, action: str, purge_data: bool = False, restored: backups.Backup | None = None) -> None:
    """Every deployment, on this machine or over SSH, goes through the one Rollout."""
    _check_local(deployment)
    executors = {h.host_id: executor_for(h, deployment) for h in deployment.hosts}
    keep = deployment.files.workdir / ".deployer" / Layout.of(deployment).name / "generated" \
        if click.get_current_context().obj.get("keep_tempfiles") else None
    roll = rollout.Rollout(deployment, executors, action, progress=lambda text: err.print(text, markup=False), keep_dir=keep)
    try:
        if action == "destroy":
            report = roll.destroy(purge_data)
        elif action == "update":
            report = roll.update()
        elif restored is not None:
            report = roll.restore(restored)
        else:
            report = roll.deploy()
    finally:
        _results_table(roll.report)
        if roll.report.phases:
            err.print("time per phase: " + "; ".join(f"{name} {seconds:.1f} s" for name, seconds in roll.report.phases), markup=False)
        for ex in roll.ex.values():  # (with those of removed workers the run reached)
            if isinstance(ex, SSHExecutor):
                ex.close()
    if action == "destroy":
        out.print(f"destroyed {deployment.target} in {report.seconds:.1f} s", markup=False)
        return
    if not report.changed:
        out.print(f"nothing to change: the hub already runs as configured, and every host matches the configuration "
                  f"({report.seconds:.1f} s; nothing restarted)", markup=False)
    else:
        replaced = "; the hub was replaced (running notebooks were not touched)" if report.hub_replaced else ""
        out.print(f"{action} of {deployment.target} done in {report.seconds:.1f} s{replaced}", markup=False)
    out.print(f"hub: {report.url}", markup=False)
    if deployment.config.jupyterhub_tls == "acme":
        out.print(f"TLS: a certificate from {deployment.config.jupyterhub_acme_directory} (HTTP-01 on port 80); the hub serves its "
                  "self-signed one until it is issued: `deployer status` shows the certificate and any error", markup=False)
    elif report.self_signed:
        out.print(f"TLS: self-signed certificate (kept on the hub under {Layout.of(deployment).state_root}); "
                  "browsers will warn until you supply jupyterhub_cert/jupyterhub_key", markup=False)
    if deployment.config.login == "local-dev":
        passwords = deployment.files.name(deployment.files.passwords) if deployment.files.passwords else "the passwords file"
        out.print(f"login (LOCAL USE ONLY): any username, with the password local_dev_password in {passwords}", markup=False)


def _results_table(report: "rollout.Report") -> None:
    table = Table(box=None, show_header=True, pad_edge=False, title=f"{report.action}: result per host", title_justify="left")
    for column in ("host", "roles", "result", "commands", "what changed"):
        table.add_column(column)
    for result in report.results.values():
        what = "; ".join(result.changes) or "; ".join(result.notes) or "-"
        table.add_row(result.host_id, result.roles, result.outcome, str(report.commands.get(result.host_id, "")), what)
    out.print(table)


@main.command()
@deployment_options
@reported
def plan() -> None:
    """Show what deploy would run on each host (every command, with its reason); change nothing."""
    deployment = one_deployment(load_files(click.get_current_context().obj))
    executors = {h.host_id: executor_for(h, deployment) for h in deployment.hosts}
    err.print(f"reading the state of {len(executors)} host{'s' if len(executors) != 1 else ''}", markup=False)
    facts = gather(deployment, executors)
    ctx = Context.of(deployment, images.local_ids(deployment), local_layers=images.local_diff_ids(deployment))
    plans = plan_all(ctx, facts)
    out.print("deploy would run, phase by phase (a <placeholder> is a value an earlier phase makes):", markup=False)
    for phase, planned in plans:
        if planned.commands:
            out.print(f"{phase.title}:", markup=False)
            for host_id, commands in planned.commands.items():
                for command in commands:
                    out.print(shown(host_id, command), markup=False)
    table = Table(box=None, show_header=True, pad_edge=False)
    table.add_column("host")
    table.add_column("would change")
    table.add_column("already right")
    merged = sequence(*(planned for _, planned in plans))
    for host_id in [h.host_id for h in deployment.hosts] + [h for h in merged.commands if h not in {x.host_id for x in deployment.hosts}]:
        changes = "; ".join(c.why for c in merged.commands.get(host_id, [])) or "nothing"
        table.add_row(host_id, changes, "; ".join(merged.notes.get(host_id, [])))
    # Off a terminal (a pipe, a log, a script reading it) each host's row stays on one line, however long.
    (out if sys.stdout.isatty() else Console(highlight=False, soft_wrap=True, width=100_000)).print(table)
    problems = preflight.problems(deployment, facts)
    if problems:
        raise PreflightError(problems)


@main.command()
@deployment_options
@reported
def status() -> None:
    """Nodes and their roles and health, the hub, and notebooks per node."""
    deployment = one_deployment(load_files(click.get_current_context().obj))
    hub = deployment.hub
    current = status_of(executor_for(hub, deployment), Layout.of(deployment))
    if not current.swarm:
        out.print(f"no swarm on the hub {hub.host_id} yet: run 'deployer deploy'", markup=False)
        return
    table = Table(box=None, show_header=True, pad_edge=False)
    for column in ("node", "state", "availability", "roles", "manager", "notebooks"):
        table.add_column(column)
    for node in current.nodes:
        users = current.notebooks.get(node.hostname, [])
        table.add_row(node.hostname, node.state, node.availability, ",".join(node.roles) or "-", "yes" if node.manager else "no",
                      f"{len(users)}" + (f" ({', '.join(sorted(users))})" if users else ""))
    out.print(table)
    for node in current.nodes:
        stranded = current.notebooks.get(node.hostname, [])
        if node.state.lower() != "ready" and stranded:
            out.print(f"node {node.hostname} is {node.state}: the servers of {', '.join(sorted(stranded))} run nowhere; the hub counts them "
                      "as stopped and their users can start them again on a worker that is up", markup=False)
    out.print(f"hub service: {current.hub_state}", markup=False)
    if current.network:
        net = current.network
        out.print(f"notebook network: {net.subnet}, {net.in_use:,} of {net.addresses:,} addresses in use, {net.left:,} left", markup=False)
    if deployment.config.jupyterhub_tls == "acme":
        out.print(certificate_status(executor_for(hub, deployment), Layout.of(deployment)), markup=False)
    if deployment.config.metrics_prometheus_url:
        try:
            out.print(str(metrics.last_hour(deployment.config.metrics_prometheus_url)), markup=False)
        except DeployerError as error:  # the rest of the status stands
            out.print(f"spawn metrics: {error}", markup=False)
    last = last_run(executor_for(hub, deployment), str(deployment.target))
    if last:
        out.print(f"last run: {last.get('action')} by {last.get('operator')} at {last.get('time')}: {last.get('result')}", markup=False)


@main.command()
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--purge-data", is_flag=True, help="Also delete the users' data, tokens and the hub's database on the share.")
@deployment_options
@reported
def destroy(yes: bool, purge_data: bool) -> None:
    """Remove the hub, the notebooks and the deployment's Docker objects (user data kept unless --purge-data)."""
    deployment = one_deployment(load_files(click.get_current_context().obj))
    _check_local(deployment)
    layout = Layout.of(deployment)
    what = f"the hub, every notebook and the Docker objects of {deployment.target}"
    what += f", and ALL user data under {layout.state_root}/{layout.name}" if purge_data else f" (user data under {layout.share_dir} is kept)"
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError(f"this removes {what}; not on a terminal: pass -y to confirm")
        click.confirm(f"Remove {what}?", abort=True)
    what += "; the share's NFS export and mounts; the guards; and the swarm (unless other services run in it)"
    _rollout(deployment, "destroy", purge_data)
    out.print(f"removed {what}", markup=False)


@main.command()
@click.option("--hub", "hub_log", is_flag=True, help="The hub's log.")
@click.option("--user", metavar="NAME", help="The log of NAME's notebook server, wherever it runs.")
@click.option("--server", metavar="NAME", default="", help="With --user: the log of that named server (allow_named_servers).")
@click.option("-n", "--tail", default=200, show_default=True, type=click.IntRange(0), help="Lines of the past to show.")
@click.option("-f/-F", "--follow/--no-follow", default=None, help="Keep printing new lines (default: on a terminal).")
@deployment_options
@reported
def logs(hub_log: bool, user: str | None, server: str, tail: int, follow: bool | None) -> None:
    """The hub's log (--hub) or a user's notebook log (--user NAME [--server NAME]), from whichever host runs it."""
    if hub_log == bool(user):
        raise UsageError("say whose log: --hub, or --user NAME")
    if server and not user:
        raise UsageError("--server names one of a user's servers: give --user NAME too")
    deployment = one_deployment(load_files(click.get_current_context().obj))
    layout = Layout.of(deployment)
    ex = executor_for(deployment.hub, deployment)
    service = hub_logs.hub_service(ex, layout) if hub_log else hub_logs.notebook_service(ex, layout, user, server)
    follow = sys.stdout.isatty() if follow is None else follow
    command = hub_logs.logs_command(service, tail, follow)
    if not follow:
        sys.stdout.write(ex.run(command, timeout=120).stdout)
        return
    proc = ex.hold(command)
    try:
        for line in iter(proc.stdout.readline, b""):
            sys.stdout.write(line.decode(errors="replace"))
            sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _passphrase(confirm: bool) -> str:
    given = os.environ.get("DEPLOYER_BACKUP_PASSPHRASE")
    if given:
        return given
    if not sys.stdin.isatty():
        raise UsageError("not on a terminal: give the backup's passphrase in DEPLOYER_BACKUP_PASSPHRASE")
    return click.prompt("Backup passphrase", hide_input=True, confirmation_prompt=confirm)


@main.command()
@click.option("--file", "path", metavar="FILE", help="Where to write it (default: <deployment>-<time>.backup here).")
@click.option("--encrypt", is_flag=True, help="Encrypt with a passphrase (DEPLOYER_BACKUP_PASSPHRASE, else asked twice).")
@click.option("--force", is_flag=True, help="Replace FILE if it exists.")
@deployment_options
@reported
def backup(path: str | None, encrypt: bool, force: bool) -> None:
    """The hub's databases, its kept state and the deployment's secrets, in one archive (0600)."""
    deployment = one_deployment(load_files(click.get_current_context().obj))
    layout = Layout.of(deployment)
    passphrase = _passphrase(confirm=True) if encrypt else None
    collected = backups.collect(executor_for(deployment.hub, deployment), deployment, layout)
    path = path or f"{layout.name}-{collected.made.replace(':', '')}.backup"
    data = backups.pack(collected, passphrase)
    backups.write_private(path, data, force)
    kept = ", ".join(sorted(collected.files))
    how = "encrypted" if encrypt else "NOT encrypted: it holds the deployment's secrets; keep it like the passwords file"
    out.print(f"backed up {deployment.target} to {path} ({len(data) // 1024 + 1} KiB, 0600, {how}): {kept}, and the deployment's secrets",
              markup=False)


@main.command()
@click.argument("path", metavar="FILE")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@deployment_options
@reported
def restore(path: str, yes: bool) -> None:
    """Put a backup's databases and state on the hub, then deploy: users come back still logged in."""
    deployment = one_deployment(load_files(click.get_current_context().obj))
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror}") from None
    restored = backups.unpack(data, _passphrase(confirm=False) if data.startswith(backups.MAGIC) else None, path)
    if restored.deployment != str(deployment.target):
        raise UsageError(f"{path} is a backup of {restored.deployment}, not of {deployment.target}; choose the deployment with -i/-t")
    what = f"the hub's database and state of {deployment.target} on {deployment.hub.host_id} with the backup made {restored.made}"
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError(f"this replaces {what}; not on a terminal: pass -y to confirm")
        click.confirm(f"Replace {what}? The hub restarts.", abort=True)
    _rollout(deployment, "restore", restored=restored)
