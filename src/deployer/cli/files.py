"""Commands on the operator's files: validate, config, init, version, the project's actions
(and ``-a ACTION``, the original style), registering the hub's OAuth client."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click
from rich.table import Table

from deployer import __version__
from deployer.cli.app import (
    DeployerGroup,
    Options,
    deployment_options,
    files_of,
    load_files,
    main,
    one_deployment,
    out,
    project_of,
    reported,
)
from deployer.config import render
from deployer.config.example import write_example, write_local_example
from deployer.config.loader import tenant_summary
from deployer.config.oauth_clients import register
from deployer.config.passwords_file import set_values
from deployer.config.projects import PROJECTS
from deployer.errors import UsageError


@main.command()
@deployment_options
@reported
def validate() -> None:
    """Check the deployment files; report every problem at once (exit status 2)."""
    loaded = load_files(click.get_current_context().obj)
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
    loaded = load_files(click.get_current_context().obj)
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
    project = project_of(click.get_current_context().obj)
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
    files = files_of(options)
    project = project_of(options, files)
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
    deployment = one_deployment(load_files(options, unregistered_client=True))
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
