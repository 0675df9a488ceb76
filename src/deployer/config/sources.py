"""Reading the deployment files into their scoped layers, and describing a problem at the key it is
about (``file: scope/key``, the value shown unless it is a secret)."""

from __future__ import annotations

import difflib
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deployer.config import yamlfile
from deployer.config.discovery import DeploymentFiles
from deployer.config.model import SECRET_KEYS, JupyterHubConfig
from deployer.config.options import NESTED_KEYS
from deployer.config.projects import PROJECTS
from deployer.config.scopes import Origin, ScopedFile, Target, split_scoped_file
from deployer.errors import Problem, UsageError

SERVER_GLOBALS = ("ssh_user", "ssh_key", "ssh_port", "ssh_known_hosts")
DERIVED = "derived"
DEFAULT = "default"


@dataclass
class Sources:
    files: DeploymentFiles
    configs: ScopedFile | None = None
    passwords: ScopedFile | None = None
    servers: ScopedFile | None = None
    server_globals: dict[str, Any] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    def scoped_files(self) -> list[ScopedFile]:
        return [f for f in (self.configs, self.passwords) if f is not None]


def resolve_ssh_key(ssh_key: str, servers_file: Path | None) -> Path:
    """``ssh_key`` is relative to the servers file's directory (as in the original), ``~`` expands."""
    path = Path(ssh_key).expanduser()
    if not path.is_absolute() and servers_file is not None:
        path = servers_file.parent / path
    return path


def read_sources(files: DeploymentFiles, project: str) -> Sources:
    src = Sources(files, warnings=list(files.warnings))
    if files.configs is None:
        src.problems.append(Problem("configs", "", f"no configs file: pass -c FILE, name it in deployment.yml, or add a *.configs file to {files.workdir}"))
    if files.servers is None:
        src.problems.append(Problem("servers", "", f"no servers file: pass -s FILE, name it in deployment.yml, or add a *.hosts file to {files.workdir}"))
    if files.extras is not None and not files.extras.is_dir():
        src.problems.append(Problem(files.name(files.extras), "", "extras directory not found (given with -e or in deployment.yml)"))

    for kind, globals_allowed in (("configs", ()), ("passwords", ()), ("servers", SERVER_GLOBALS)):
        path = getattr(files, kind)
        if path is None:
            continue
        name = files.name(path)
        try:
            data = yamlfile.load(path, name)
        except yamlfile.YamlProblem as exc:
            src.problems.append(exc.problem)
            continue
        scoped, globals_ = split_scoped_file(data, name, PROJECTS, globals_allowed=globals_allowed)
        src.problems += scoped.problems
        src.warnings += scoped.warnings
        setattr(src, kind, scoped)
        if kind == "servers":
            src.server_globals = globals_
        if kind == "passwords":
            check_passwords_mode(path, name, src.warnings)
        if kind == "configs":
            for scope, stanza in scoped.stanzas.items():
                for key in stanza:
                    if key in SECRET_KEYS:
                        src.warnings.append(Problem(name, f"{scope}/{key}", "is a secret: move it to the passwords file (chmod 600) so it is not shared with the configs"))
    return src


def check_passwords_mode(path: Path, name: str, warnings: list[Problem]) -> None:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return
    if mode & 0o077:
        warnings.append(Problem(name, "", f"readable by group or others (mode {mode:04o}); run: chmod 600 {path}"))


def targets_of(src: Sources, project: str, instance: str | None, tenant: str | None) -> list[Target]:
    files = [f for f in (src.configs, src.passwords, src.servers) if f is not None]
    found: set[Target] = set()
    for scoped in files:
        found |= {t for t in scoped.targets() if t.project == project and t.tenant}
    if instance:
        wanted = Target(project, instance, tenant)
        if not any(scope in f.stanzas for f in files for scope in wanted.scopes()[1:]):
            names = ", ".join(f.source for f in files)
            known = ", ".join(str(t) for t in sorted(found, key=str)) or "none"
            raise UsageError(f"no stanza for {wanted} in {names}; deployments found: {known}")
        if tenant:
            return [wanted]
    if instance:
        found = {t for t in found if t.instance == instance} or {Target(project, instance, None)}
    if tenant:
        found = {t for t in found if t.tenant == tenant}
    if not found:
        raise UsageError(
            f"no {project}.<instance>.<tenant> stanza found in the deployment files; "
            "name the deployment with -i INSTANCE -t TENANT, or add such a stanza"
        )
    return sorted(found, key=str)


# --- configuration -------------------------------------------------------------------------


def missing_origin(key: str, src: Sources, target: Target) -> Origin:
    if key in SECRET_KEYS and src.passwords is not None:
        return Origin(src.passwords.source, str(target))
    return Origin(src.configs.source if src.configs else "configs", str(target))


def short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def describe(error: dict[str, Any], key: str, src: Sources, target: Target, *, hide_value: bool = False) -> str:
    kind = error["type"]
    if kind == "missing":
        if key in SECRET_KEYS:
            where = src.passwords.source if src.passwords else "a passwords file (<name>.passwords, chmod 600)"
        else:
            where = src.configs.source if src.configs else "the configs file"
        return f"required key is missing; set it in {where} under {target} or a more general scope"
    if kind == "extra_forbidden":
        nested = len(error.get("loc", ())) > 1
        field = str(error["loc"][-1]) if nested else key
        close = difflib.get_close_matches(field, NESTED_KEYS.get(key, ()) if nested else JupyterHubConfig.model_fields, n=1)
        hint = f"; did you mean {close[0]}?" if close else "; see the example written by 'deployer init' for every key"
        return f"unknown key{hint}"
    message = error["msg"]
    if kind != "deployer":
        message = message.replace("Input should be", "must be")
        message = message[0].lower() + message[1:]
        value = error.get("input")
        if key not in SECRET_KEYS and not hide_value and isinstance(value, (str, int, float, bool)):
            message += f", got {short(value)}"
    return message
