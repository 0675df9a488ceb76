"""The command line's edge: the ``deployer`` group, its deployment options (before or after the
command), and the one place errors become messages and exit codes.

Both styles work: subcommands (``deployer validate -i prod -t designsafe``) and the
original flags (``deployer -p jupyterhub -i prod -t designsafe -a validate``). The
deployment options may stand before or after the command.
"""

from __future__ import annotations

import functools
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import click
from rich.console import Console

from deployer.config.discovery import DeploymentFiles, discover
from deployer.config.loader import Deployment, Loaded, load
from deployer.config.projects import PROJECTS, Project
from deployer.errors import ConfigError, DeployerError, Problem, UsageError

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
            ctx.invoke(main.get_command(ctx, "execute"))
        else:
            click.echo(ctx.get_help())


# --- context helpers -----------------------------------------------------------------------


def files_of(options: Options) -> DeploymentFiles:
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


def project_of(options: Options, files: DeploymentFiles | None = None) -> Project:
    name = options.get("project") or (files.defaults.get("project") if files else None) or "jupyterhub"
    project = PROJECTS.get(name)
    if project is None:
        raise UsageError(f"unknown project {name!r}; known projects: {', '.join(sorted(PROJECTS))} (see list-projects)")
    return project


def load_files(options: Options, **kwargs: Any) -> Loaded:
    files = files_of(options)
    project = project_of(options, files)
    instance = options.get("instance") or files.defaults.get("instance")
    tenant = options.get("tenant") or files.defaults.get("tenant")
    loaded = load(files, project.name, instance, tenant, options.get("overrides"), **kwargs)
    _print_warnings(loaded.warnings)
    return loaded


def one_deployment(loaded: Loaded) -> Deployment:
    if len(loaded.deployments) != 1:
        names = ", ".join(str(d.target) for d in loaded.deployments)
        raise UsageError(f"this command acts on one deployment; choose one of {names} with -i INSTANCE -t TENANT")
    return loaded.deployments[0]
