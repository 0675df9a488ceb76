"""The ``deployer`` command line.

Both styles work: subcommands (``deployer validate -i prod -t designsafe``) and the
original flags (``deployer -p jupyterhub -i prod -t designsafe -a validate``). The
deployment options may stand before or after the command.
"""

from deployer.cli import files, hosts  # noqa: F401  (each registers its commands on main)
from deployer.cli.app import main

__all__ = ["main", "run"]


def run() -> None:  # console-script entry point
    main(prog_name="deployer")
