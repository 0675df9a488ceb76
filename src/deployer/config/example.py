"""``deployer init``: a commented example deployment, the living documentation of every key."""

from __future__ import annotations

import os
import secrets
from importlib import resources
from pathlib import Path

from deployer.errors import UsageError

FILES = ("deployment.yml", "site.hosts", "site.configs", "site.passwords")


def example_text(name: str) -> str:
    return resources.files("deployer").joinpath("example", name).read_text(encoding="utf-8")


#: Deployment directories belong in version control (as TACC kept theirs); secrets and state do not.
GITIGNORE = "# Secrets and Deployer's generated state (cookie secret, auth-state key, self-signed TLS)\n*.passwords\n.deployer/\n"


def write_example(directory: Path, *, force: bool = False) -> list[Path]:
    """Write the commented example; never overwrite without ``force``."""
    return _write(directory, {**{name: example_text(name) for name in FILES}, ".gitignore": GITIGNORE}, force)


def _write(directory: Path, files: dict[str, str], force: bool) -> list[Path]:
    """Write ``files``; never overwrite without ``force``, never leave a secret world-readable."""
    existing = [directory / name for name in files if (directory / name).exists()]
    if existing and not force:
        names = ", ".join(str(p) for p in existing)
        raise UsageError(f"{names} already exist{'s' if len(existing) == 1 else ''}; pass --force to overwrite")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "extras").mkdir(exist_ok=True)
        written = []
        for name, text in files.items():
            path = directory / name
            mode = 0o600 if name.endswith(".passwords") else 0o644
            # Create with the final mode so the secret file is never briefly world-readable.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.chmod(path, mode)
            written.append(path)
    except OSError as exc:
        raise UsageError(f"cannot write the example into {directory}: {exc.strerror or exc}") from None
    return written

LOCAL_NAME = "jupyterhub-local-dev"


def local_example(password: str) -> dict[str, str]:
    """A deployment whose hub and worker are this machine, with the local-dev login."""
    share = f"/srv/deployer/{LOCAL_NAME}/share"
    return {
        "deployment.yml": "# A hub on this machine only (deployer init --local).\nproject: jupyterhub\ninstance: local\ntenant: dev\n"
                          "servers: site.hosts\nconfigs: site.configs\npasswords: site.passwords\n",
        "site.hosts": "# This machine is both the hub and the worker; Deployer reaches it without SSH.\n"
                      "jupyterhub.local.dev:\n  hosts:\n    - host_id: this-machine\n      ssh_host: 127.0.0.1\n      roles: [hub, worker]\n",
        "site.configs": "jupyterhub.local.dev:\n"
                        "  # LOCAL USE ONLY: any username logs in with the shared password in site.passwords.\n"
                        "  # For a real hub use the tenant login (see 'deployer init' without --local).\n"
                        "  login: local-dev\n"
                        "  tenant: dev\n"
                        "  jupyterhub_host: 127.0.0.1\n"
                        "  jupyterhub_image: deployer/jupyterhub:0.2.0\n"
                        "  jupyter_user_image: deployer/jupyteruser:0.2.0\n"
                        "  volume_mounts:\n"
                        f"    - {share}/data/{{username}}:/home/jupyter/permanent:rw\n"
                        "  notebook_memory_limit: 2G\n"
                        "  cull_idle_notebook_timeout: 3600\n",
        "site.passwords": f"# The shared password of the local-dev login. Keep this file private.\njupyterhub.local.dev:\n  local_dev_password: {password}\n",
        ".gitignore": GITIGNORE,
    }


def write_local_example(directory: Path, *, force: bool = False) -> list[Path]:
    return _write(directory, local_example(secrets.token_urlsafe(18)), force)
