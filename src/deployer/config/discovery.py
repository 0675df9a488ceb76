"""Finding the deployment files, with the rules of the original Deployer.

Each file comes from its command-line flag, else from ``deployment.yml`` (or the
file given with ``-d``), else from the first file in the working directory with
the matching extension (``.hosts``, ``.configs``, ``.passwords``). The extras
directory defaults to ``extras/`` when it exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deployer.config import yamlfile
from deployer.errors import ConfigError, Problem

DEPLOYMENT_FILE = "deployment.yml"
EXTENSIONS = {"servers": ".hosts", "configs": ".configs", "passwords": ".passwords"}
FLAGS = {"servers": "-s", "configs": "-c", "passwords": "-z", "extras": "-e"}
#: Keys a deployment.yml may hold: file locations, and defaults for -p/-i/-t/-a.
DEPLOYMENT_KEYS = ("project", "instance", "tenant", "action", "servers", "configs", "passwords", "extras")


@dataclass
class DeploymentFiles:
    workdir: Path
    servers: Path | None = None
    configs: Path | None = None
    passwords: Path | None = None
    extras: Path | None = None
    deployment: Path | None = None
    #: project/instance/tenant/action named in deployment.yml
    defaults: dict[str, str] = field(default_factory=dict)
    warnings: list[Problem] = field(default_factory=list)

    def name(self, path: Path) -> str:
        """How messages name a file: relative to the working directory when inside it."""
        try:
            return str(path.resolve().relative_to(self.workdir.resolve()))
        except ValueError:
            return str(path)


def _read_deployment_file(path: Path, source: str) -> dict[str, Any]:
    try:
        data = yamlfile.load(path, source)
    except yamlfile.YamlProblem as exc:
        raise ConfigError([exc.problem]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([Problem(source, "", "must be a mapping of keys such as configs: site.configs")])
    problems = []
    for key, value in data.items():
        if key not in DEPLOYMENT_KEYS:
            problems.append(Problem(source, str(key), f"unknown key; allowed: {', '.join(DEPLOYMENT_KEYS)}"))
        elif not isinstance(value, str) or not value.strip():
            problems.append(Problem(source, key, "must be a non-empty string"))
    if problems:
        raise ConfigError(problems)
    return data


def discover(
    workdir: Path,
    *,
    deployment: str | None = None,
    servers: str | None = None,
    configs: str | None = None,
    passwords: str | None = None,
    extras: str | None = None,
) -> DeploymentFiles:
    files = DeploymentFiles(workdir=workdir)
    flags = {"servers": servers, "configs": configs, "passwords": passwords, "extras": extras}

    dep_path = workdir / (deployment or DEPLOYMENT_FILE)
    named: dict[str, Any] = {}
    if deployment and not dep_path.is_file():
        raise ConfigError([Problem(deployment, "", "deployment file not found (given with -d)")])
    if dep_path.is_file():
        files.deployment = dep_path
        named = _read_deployment_file(dep_path, files.name(dep_path))
        files.defaults = {k: named[k] for k in ("project", "instance", "tenant", "action") if k in named}

    for kind in ("servers", "configs", "passwords", "extras"):
        if flags[kind]:
            path = workdir / flags[kind]
        elif kind in named:
            path = dep_path.parent / named[kind]
        elif kind == "extras":
            path = workdir / "extras"
            if not path.is_dir():
                continue
        else:
            candidates = sorted(p for p in workdir.glob(f"*{EXTENSIONS[kind]}") if p.is_file())
            if not candidates:
                continue
            path = candidates[0]
            if len(candidates) > 1:
                others = ", ".join(p.name for p in candidates[1:])
                files.warnings.append(
                    Problem(path.name, "", f"using this {kind} file; also found {others}: name the one "
                            f"you mean with {FLAGS[kind]} or in {DEPLOYMENT_FILE}")
                )
        setattr(files, kind, path)
    return files
