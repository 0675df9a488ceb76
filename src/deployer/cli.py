"""The ``deployer`` command line: the only place errors become messages and exit codes.

Both styles work: subcommands (``deployer validate -i prod -t designsafe``) and the
original flags (``deployer -p jupyterhub -i prod -t designsafe -a validate``). The
deployment options may stand before or after the command.
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import click
from rich.console import Console
from rich.table import Table

from deployer import __version__, rollout
from deployer.config import render
from deployer.config.discovery import DeploymentFiles, discover
from deployer.config.example import write_example, write_local_example
from deployer.config.hubsettings import Layout
from deployer.config.loader import Deployment, Loaded, load, tenant_summary
from deployer.config.model import LOCAL_HOSTS
from deployer.config.oauth_clients import register
from deployer.config.passwords_file import set_values
from deployer.config.projects import PROJECTS, Project
from deployer.errors import ConfigError, DeployerError, PreflightError, Problem, UsageError
from deployer.hosts import cluster
from deployer.hosts.ssh import SSHExecutor, executor_for
from deployer.hosts.status import last_run
from deployer.hosts.status import read as status_of
from deployer.phases import images

# Off a terminal (pipes, CI logs) rich would wrap at 80 columns; give tables room instead.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, soft_wrap=True, width=None if sys.stderr.isatty() else 160)

EXIT_INTERNAL = 70


@dataclass
class Options:
    """Deployment options gathered from the group and the subcommand (the later wins)."""

    values: dict[str, Any] = field(default_factory=dict)
    verbose: int = 0

    def get(self, name: str) -> Any:
        return self.values.get(name)


_OPTIONS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (("-p", "--project"), {"help": "Project to act on (default: from deployment.yml, else jupyterhub)."}),
    (("-i", "--instance"), {"help": "Instance, e.g. prod, staging, dev."}),
    (("-t", "--tenant"), {"help": "Tenant scope, e.g. designsafe, sd2e."}),
    (("-a", "--action"), {"help": "Action to execute (see list-actions)."}),
    (("-s", "--servers"), {"help": "Servers file (*.hosts)."}),
    (("-c", "--configs"), {"help": "Configs file (*.configs)."}),
    (("-z", "--passwords"), {"help": "Passwords file (*.passwords), same shape as the configs file."}),
    (("-e", "--extras"), {"help": "Directory of extra files (certificates, ...)."}),
    (("-o", "--overrides"), {"help": "Overrides 'key1=value1&key2=value2', winning over every file."}),
    (("-d", "--deployment"), {"help": "Deployment file naming the others (default: deployment.yml)."}),
    (("-C", "--directory"), {"help": "Working directory holding the deployment files (default: .).", "type": click.Path(file_okay=False)}),
    (("-k", "--keep-tempfiles", "--keep_tempfiles"), {"is_flag": True, "default": None, "help": "Keep a copy of the hub's generated files (hub.json, jupyterhub_config.py; never a secret) in .deployer/<name>/generated."}),
    (("-v", "--verbose"), {"count": True, "help": "More output; -vv adds tracebacks."}),
]


def deployment_options(func: Callable) -> Callable:
    """Attach the shared deployment options to a command; they merge into ``ctx.obj``."""
    for decls, kwargs in reversed(_OPTIONS):
        name = decls[1].lstrip("-").replace("-", "_")
        func = click.option(*decls, name, expose_value=False, callback=_remember, **kwargs)(func)
    return func


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    options: Options = ctx.ensure_object(Options)
    if param.name == "verbose":
        options.verbose = max(options.verbose, value or 0)
    elif value is not None:
        options.values[param.name] = value
    return value


def reported(func: Callable) -> Callable:
    """Run a command, turning Deployer errors into one-line messages and exit codes."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        options = click.get_current_context().ensure_object(Options)
        try:
            return func(*args, **kwargs)
        except ConfigError as exc:
            _print_warnings(exc.warnings)
            err.print(f"error: {exc}:", style="bold red", markup=False)
            for problem in exc.problems:
                err.print(f"  {problem}", markup=False)
            _traceback(options)
            sys.exit(exc.exit_code)
        except DeployerError as exc:
            err.print(f"error: {exc}", style="bold red", markup=False)
            _traceback(options)
            sys.exit(exc.exit_code)
        except (click.exceptions.Exit, click.ClickException, SystemExit, KeyboardInterrupt):
            raise
        except Exception as exc:  # a bug: say so plainly, traceback only on request
            err.print(f"internal error: {type(exc).__name__}: {exc}", style="bold red", markup=False)
            if options.verbose < 2:
                err.print("  run again with -vv for the traceback, and please report it", markup=False)
            _traceback(options)
            sys.exit(EXIT_INTERNAL)

    return wrapper


def _traceback(options: Options) -> None:
    if options.verbose >= 2:
        err.print(traceback.format_exc(), markup=False)


def _print_warnings(warnings: list[Problem]) -> None:
    for warning in warnings:
        err.print(f"warning: {warning}", style="yellow", markup=False)


class DeployerGroup(click.Group):
    """Accepts the original underscore names (``list_actions``) and runs ``-a`` without a command."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, cmd_name.replace("_", "-"))

    def resolve_command(self, ctx: click.Context, args: list[str]):
        name, cmd, rest = super().resolve_command(ctx, args)
        return (cmd.name if cmd else name), cmd, rest


@click.group(cls=DeployerGroup, invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@deployment_options
# For the original style, `deployer ... -a destroy -y`: kept in ctx.obj like the options above.
@click.option("-y", "--yes", "yes", is_flag=True, default=None, expose_value=False, callback=_remember, help="For -a destroy: do not ask.")
@click.option("--purge-data", "purge_data", is_flag=True, default=None, expose_value=False, callback=_remember, help="For -a destroy: delete user data too.")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Stand up TACC-style multi-tenant JupyterHubs on a Docker Swarm.

    \b
    Typical use, in a directory holding the deployment files:
      deployer init mysite && cd mysite
      deployer validate
      deployer config -i prod -t designsafe
      deployer -p jupyterhub -i prod -t designsafe -a validate
    """
    if ctx.invoked_subcommand is None:
        if ctx.obj.get("action"):
            ctx.invoke(execute)
        else:
            click.echo(ctx.get_help())


# --- context helpers -----------------------------------------------------------------------


def _files(options: Options) -> DeploymentFiles:
    workdir = Path(options.get("directory") or ".")
    if not workdir.is_dir():
        raise UsageError(f"working directory not found: {workdir}")
    return discover(
        workdir,
        deployment=options.get("deployment"),
        servers=options.get("servers"),
        configs=options.get("configs"),
        passwords=options.get("passwords"),
        extras=options.get("extras"),
    )


def _project(options: Options, files: DeploymentFiles | None = None) -> Project:
    name = options.get("project") or (files.defaults.get("project") if files else None) or "jupyterhub"
    project = PROJECTS.get(name)
    if project is None:
        raise UsageError(f"unknown project {name!r}; known projects: {', '.join(sorted(PROJECTS))} (see list-projects)")
    return project


def _load(options: Options, **kwargs: Any) -> Loaded:
    files = _files(options)
    project = _project(options, files)
    instance = options.get("instance") or files.defaults.get("instance")
    tenant = options.get("tenant") or files.defaults.get("tenant")
    loaded = load(files, project.name, instance, tenant, options.get("overrides"), **kwargs)
    _print_warnings(loaded.warnings)
    return loaded


def _one(loaded: Loaded) -> Deployment:
    if len(loaded.deployments) != 1:
        names = ", ".join(str(d.target) for d in loaded.deployments)
        raise UsageError(f"this command acts on one deployment; choose one of {names} with -i INSTANCE -t TENANT")
    return loaded.deployments[0]


# --- commands ------------------------------------------------------------------------------


@main.command()
@deployment_options
@reported
def validate() -> None:
    """Check the deployment files; report every problem at once (exit status 2)."""
    loaded = _load(click.get_current_context().obj)
    for deployment in loaded.deployments:
        config = deployment.config
        workers = deployment.workers
        out.print(
            f"ok {deployment.target}: {tenant_summary(config)}, hub {config.jupyterhub_host} on {deployment.hub.host_id}, "
            f"{len(workers)} worker{'s' if len(workers) != 1 else ''}, {len(config.volume_mounts)} volume mount{'s' if len(config.volume_mounts) != 1 else ''}",
            markup=False,
        )


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of annotated YAML.")
@deployment_options
@reported
def config(as_json: bool) -> None:
    """Print the merged configuration, each value with its origin; secrets as ***."""
    loaded = _load(click.get_current_context().obj)
    if as_json:
        out.print(render.to_json(loaded.deployments), markup=False)
        return
    out.print("---\n".join(render.to_yaml(d) for d in loaded.deployments), markup=False, end="")


@main.command()
@click.argument("target_dir", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite files that already exist.")
@click.option("--local", is_flag=True, help="A hub on this machine only, with the local-dev login (a generated shared password).")
@deployment_options
@reported
def init(target_dir: Path, force: bool, local: bool) -> None:
    """Write a commented example deployment into DIR (it validates as written)."""
    written = (write_local_example if local else write_example)(target_dir, force=force)
    for path in written:
        out.print(f"wrote {path}", markup=False)
    out.print(f"next: edit the files, then run 'deployer -C {target_dir} validate'", markup=False)


@main.command()
@deployment_options
def version() -> None:
    """Print Deployer's version."""
    out.print(f"deployer {__version__}", markup=False)


@main.command("list-projects")
@deployment_options
def list_projects() -> None:
    """List the projects Deployer can manage."""
    for project in PROJECTS.values():
        out.print(f"{project.name}\t{project.summary}", markup=False)


@main.command("list-actions")
@deployment_options
@reported
def list_actions() -> None:
    """List the actions of a project (-p) and whether this version offers them."""
    project = _project(click.get_current_context().obj)
    table = Table(box=None, show_header=True, pad_edge=False)
    table.add_column("action")
    table.add_column("status")
    table.add_column("what it does")
    for action in project.actions:
        table.add_row(action.name, "available" if action.available else "not available yet", action.summary)
    out.print(table)


@main.command()
@click.option("-y", "--yes", is_flag=True, help="For -a destroy: do not ask for confirmation.")
@click.option("--purge-data", is_flag=True, help="For -a destroy: also delete the users' data.")
@deployment_options
@reported
def execute(yes: bool, purge_data: bool) -> None:
    """Execute the action given with -a (the original command style)."""
    options: Options = click.get_current_context().obj
    files = _files(options)
    project = _project(options, files)
    name = options.get("action") or files.defaults.get("action")
    if not name:
        raise UsageError("no action: pass -a ACTION (see 'deployer -p jupyterhub list-actions')")
    action = project.action(name)
    if action is None:
        raise UsageError(f"project {project.name} has no action {name!r}; actions: {', '.join(a.name for a in project.actions)}")
    ctx = click.get_current_context()
    yes, purge_data = yes or bool(options.get("yes")), purge_data or bool(options.get("purge_data"))
    if action.name == "destroy":
        ctx.invoke(main.get_command(ctx, action.name), yes=yes, purge_data=purge_data)
        return
    if yes or purge_data:
        raise UsageError(f"-y and --purge-data belong to -a destroy, not -a {action.name}")
    ctx.invoke(main.get_command(ctx, action.name))


@main.group("oauth-client", cls=DeployerGroup)
def oauth_client() -> None:
    """The hub's OAuth client at its tenant."""


@oauth_client.command("create")
@click.option("--name", help="Client name at the tenant (default: jupyterhub-<instance>-<tenant>).")
@click.option("-y", "--yes", is_flag=True, help="Register and write the passwords file without asking.")
@deployment_options
@reported
def oauth_client_create(name: str | None, yes: bool) -> None:
    """Register the hub's OAuth client with the tenant and store its id and secret.

    The callback is https://<jupyterhub_host>/hub/oauth_callback. The service account's
    name and password are asked for (or read from DEPLOYER_SERVICE_ACCOUNT and
    DEPLOYER_SERVICE_PASSWORD); the client secret is written to the passwords file
    (mode 0600) and never shown.
    """
    options: Options = click.get_current_context().obj
    deployment = _one(_load(options, unregistered_client=True))
    config = deployment.config
    tenant = config.tenant_info
    name = name or f"jupyterhub-{deployment.target.instance}-{deployment.target.tenant}".replace(".", "-")
    files = deployment.files
    passwords = files.passwords or files.workdir / f"{(files.configs or Path('site.configs')).stem}.passwords"
    out.print(f"client {name} at {tenant.id} ({tenant.flavour.value}, {tenant.base_url}), callback {config.callback_url}", markup=False)
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError("not on a terminal: pass --yes to register the client and write its secret to the passwords file")
        click.confirm(f"Register it and write its id and secret to {files.name(passwords)} under {deployment.target}?", abort=True)
    account = os.environ.get("DEPLOYER_SERVICE_ACCOUNT") or click.prompt("Service account")
    password = os.environ.get("DEPLOYER_SERVICE_PASSWORD") or click.prompt("Service account password", hide_input=True)
    client = register(tenant, name, config.callback_url, account, password)
    set_values(passwords, str(deployment.target), {"jupyterhub_oauth_client_id": client.client_id, "jupyterhub_oauth_client_secret": client.client_secret})
    out.print(f"registered client id {client.client_id}; id and secret written to {files.name(passwords)} under {deployment.target} (the secret is not shown)", markup=False)


@main.command()
@deployment_options
@reported
def deploy() -> None:
    """Bring every host to the configured state: engines, swarm, share, images, guards, the hub."""
    _rollout(_one(_load(click.get_current_context().obj)), "deploy")


@main.command()
@deployment_options
@reported
def update() -> None:
    """Roll out a new hub image or configuration; running notebooks keep running."""
    _rollout(_one(_load(click.get_current_context().obj)), "update")


def _check_local(deployment: Deployment) -> None:
    """This machine is a host like any other, but not mixed with remote ones under a loopback name."""
    local = [h.ssh_host in LOCAL_HOSTS for h in deployment.hosts]
    if any(local) and not all(local):
        names = ", ".join(h.host_id for h in deployment.hosts if h.ssh_host in LOCAL_HOSTS)
        raise UsageError(f"{names}: ssh_host is this machine ({'/'.join(sorted(LOCAL_HOSTS))}) but other hosts are remote; "
                         "give every host the address the others reach it at (a hub on this machine alone needs all hosts local)")


def _rollout(deployment: Deployment, action: str, purge_data: bool = False) -> None:
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
        else:
            report = roll.deploy()
    finally:
        _results_table(roll.report)
        if roll.report.phases:
            err.print("time per phase: " + "; ".join(f"{name} {seconds:.1f} s" for name, seconds in roll.report.phases), markup=False)
        for ex in executors.values():
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
    if report.self_signed:
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
    """Show what deploy would change on each host; change nothing."""
    deployment = _one(_load(click.get_current_context().obj))
    executors = {h.host_id: executor_for(h, deployment) for h in deployment.hosts}
    err.print(f"reading the state of {len(executors)} host{'s' if len(executors) != 1 else ''}", markup=False)
    facts = cluster.gather(deployment, executors)
    config = deployment.config
    local_images = {image: images.local_id(image) for image in (config.jupyterhub_image, config.jupyter_user_image, config.network_guard_image)}
    layout = Layout.of(deployment)
    result = cluster.plan(deployment, facts, layout, local_images)
    table = Table(box=None, show_header=True, pad_edge=False)
    table.add_column("host")
    table.add_column("would change")
    table.add_column("already right")
    for host in deployment.hosts:
        changes = "; ".join(c.why for c in result.commands.get(host.host_id, [])) or "nothing"
        table.add_row(host.host_id, changes, "; ".join(result.notes.get(host.host_id, [])))
    out.print(table)
    others = [w.host_id for w in deployment.workers if w.host_id != deployment.hub.host_id]
    if others:
        server = "the kernel NFS server" if config.use_stock_nfs else "nfs-ganesha"
        out.print(f"share: {deployment.hub.host_id} exports {layout.share_dir} with {server} to {', '.join(others)} only; "
                  "a worker that does not see it yet mounts it (fstab)", markup=False)
    out.print("hub service: deploy compares its spec hash and replaces it only when the configuration changed", markup=False)
    if result.problems:
        raise PreflightError(result.problems)


@main.command()
@deployment_options
@reported
def status() -> None:
    """Nodes and their roles and health, the hub, and notebooks per node."""
    deployment = _one(_load(click.get_current_context().obj))
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
    out.print(f"hub service: {current.hub_state}", markup=False)
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
    deployment = _one(_load(click.get_current_context().obj))
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


def run() -> None:  # console-script entry point
    main(prog_name="deployer")
