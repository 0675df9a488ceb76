"""From the deployment files to validated :class:`Deployment` objects.

Everything wrong is collected and raised at once as a :class:`ConfigError`; nothing
here touches a host. Messages name the file, the scope and the key path, and never
contain a secret value.
"""

from __future__ import annotations

import difflib
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from deployer.config import certs, overrides
from deployer.config.discovery import DeploymentFiles
from deployer.config.model import HOST_KEYS, LOCAL_HOSTS, SECRET_KEYS, Host, JupyterHubConfig, cross_check
from deployer.config.projects import PROJECTS
from deployer.config.scopes import Layered, Origin, Target, merge
from deployer.config.sources import (
    DEFAULT,
    DERIVED,
    Sources,
    describe,
    missing_origin,
    read_sources,
    resolve_ssh_key,
    targets_of,
)
from deployer.errors import ConfigError, Problem, UsageError


@dataclass
class Deployment:
    """One validated deployment: a target, its configuration and its servers."""

    target: Target
    config: JupyterHubConfig
    hosts: list[Host]
    files: DeploymentFiles
    origins: dict[str, Origin] = field(default_factory=dict)
    host_origins: dict[str, Origin] = field(default_factory=dict)
    #: Every secret value of the files (under whatever key it was put): never shown, wherever it appears.
    secrets: frozenset[str] = field(default=frozenset(), repr=False)

    @property
    def hub(self) -> Host:
        return next(h for h in self.hosts if h.has("hub"))

    @property
    def workers(self) -> list[Host]:
        return [h for h in self.hosts if h.has("worker")]

    def ssh_key_path(self, host: Host) -> Path | None:
        return resolve_ssh_key(host.ssh_key, self.files.servers) if host.ssh_key else None

    def known_hosts_path(self, host: Host) -> Path | None:
        return resolve_ssh_key(host.ssh_known_hosts, self.files.servers) if host.ssh_known_hosts else None


@dataclass
class Loaded:
    deployments: list[Deployment]
    warnings: list[Problem]


def _resolve_pem_files(layered: Layered, files: DeploymentFiles, problems: list[Problem]) -> None:
    """``jupyterhub_cert``/``jupyterhub_key`` hold PEM text, or name a file in the extras directory."""
    for key in ("jupyterhub_cert", "jupyterhub_key", "tenant_ca_bundle", "jupyterhub_acme_ca_bundle"):
        value = layered.values.get(key)
        if not isinstance(value, str) or value.lstrip().startswith("-----BEGIN") or "\n" in value.strip():
            continue
        origin = layered.origins[key]
        shown = f" {value!r}" if key not in SECRET_KEYS else ""
        if files.extras is None:
            problems.append(Problem(origin.source, origin.path(key), f"is not PEM text, and there is no extras directory to find the file{shown} in; paste the PEM or pass -e DIR"))
            continue
        path = (files.extras / value).resolve()
        if files.extras.resolve() not in path.parents:
            problems.append(Problem(origin.source, origin.path(key), f"the file{shown} must be inside the extras directory {files.name(files.extras)}"))
        elif not path.is_file():
            problems.append(Problem(origin.source, origin.path(key), f"is not PEM text and no file{shown} exists in the extras directory {files.name(files.extras)}"))
        else:
            layered.values[key] = path.read_text(encoding="utf-8", errors="replace")


def _derive(layered: Layered, target: Target) -> None:
    """Values the operator may leave out: the tenant from ``-t``."""
    if "tenant" not in layered.values and target.tenant:
        layered.set("tenant", target.tenant, Origin(DERIVED, f"the deployment's tenant scope {target}"))


#: Keys ``deployer oauth-client create`` may find missing: it is about to produce them.
CLIENT_KEYS = ("jupyterhub_oauth_client_id", "jupyterhub_oauth_client_secret")
UNREGISTERED = "(not registered yet)"


def _config_for(target: Target, src: Sources, override_pairs: list[tuple[str, Any]], problems: list[Problem], warnings: list[Problem], *, unregistered_client: bool = False) -> tuple[JupyterHubConfig | None, dict[str, Origin]]:
    layered = merge(target, src.scoped_files())
    warnings += layered.warnings
    overrides.apply(layered, override_pairs)
    _derive(layered, target)
    local_dev = layered.values.get("login") == "local-dev"
    if unregistered_client or local_dev:
        why = "the local-dev login (no OAuth client)" if local_dev else "a client not registered yet"
        for key in CLIENT_KEYS:
            if key not in layered.values:
                layered.set(key, UNREGISTERED, Origin(DERIVED, why))
    _resolve_pem_files(layered, src.files, problems)

    def report(key: str, rest: tuple = (), message: str = "", error: bool = True) -> None:
        origin = layered.origins.get(key) or missing_origin(key, src, target)
        (problems if error else warnings).append(Problem(origin.source, origin.path(key, *rest), message))

    try:
        config = JupyterHubConfig.model_validate(layered.values)
    except ValidationError as exc:
        for error in exc.errors():
            key, rest = str(error["loc"][0]), tuple(error["loc"][1:])
            origin = layered.origins.get(key)
            # Whatever the key, a value from the passwords file is treated as a secret: never shown.
            from_passwords = bool(src.passwords and origin and origin.source == src.passwords.source)
            report(key, rest, describe(error, key, src, target, hide_value=from_passwords))
        return None, layered.origins

    for finding in cross_check(config):
        key, *rest = finding.key.split("/")
        report(key, tuple(rest), finding.message, finding.error)
    origin = layered.origins.get("notebook_secret_env")
    if origin is not None and not (src.passwords and origin.source == src.passwords.source):
        report("notebook_secret_env", (), "holds secret values: move it to the passwords file (chmod 600); put plain values in notebook_env")
    for key in ("tenant_ca_bundle", "jupyterhub_acme_ca_bundle"):
        bundle = getattr(config, key)
        if bundle and not certs.is_ca_bundle(bundle.encode()):
            report(key, (), "not a PEM bundle of certificates (expected -----BEGIN CERTIFICATE----- blocks)")
    if config.jupyterhub_cert and config.jupyterhub_key:
        result = certs.check(config.jupyterhub_cert.encode(), config.jupyterhub_key.get_secret_value().encode(), config.hub_address.host)
        for message in result.cert_errors:
            report("jupyterhub_cert", (), message)
        for message in result.key_errors:
            report("jupyterhub_key", (), message)
        for message in result.warnings:
            report("jupyterhub_cert", (), message, error=False)

    origins = dict(layered.origins)
    if "jupyterhub_tenant_base_url" not in origins and config.login != "local-dev":
        origins["jupyterhub_tenant_base_url"] = Origin(DERIVED, "the tenant registry")
    for key in JupyterHubConfig.model_fields:
        origins.setdefault(key, Origin(DEFAULT, ""))
    return config, origins


# --- servers -------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class HostOrigin(Origin):
    """A host's entry, and the keys it inherits from elsewhere in the servers file (key -> its path there)."""

    inherited: dict[str, str] = field(default_factory=dict)

    def path(self, *keys: object) -> str:
        if keys and str(keys[0]) in self.inherited:
            return "/".join([self.inherited[str(keys[0])], *(str(k) for k in keys[1:])])
        return super().path(*keys)


def _hosts_for(target: Target, src: Sources, problems: list[Problem], warnings: list[Problem]) -> tuple[list[Host], dict[str, Origin]]:
    scoped = src.servers
    if scoped is None:
        return [], {}
    merged: dict[str, dict[str, Any]] = {}
    origins: dict[str, Origin] = {}
    for scope in target.scopes():
        stanza = scoped.stanzas.get(scope)
        if stanza is None:
            continue
        hosts = stanza.get("hosts", [])
        if not isinstance(hosts, list):
            problems.append(Problem(scoped.source, f"{scope}/hosts", "must be a list of hosts (each with host_id and ssh_host)"))
            continue
        defaults = {k: v for k, v in stanza.items() if k != "hosts"}
        first_seen: dict[str, int] = {}
        for index, entry in enumerate(hosts):
            origin = Origin(scoped.source, f"{scope}/hosts/{index}")
            if not isinstance(entry, dict):
                problems.append(Problem(origin.source, origin.scope, "must be a mapping with host_id, ssh_host and roles"))
                continue
            host_id = entry.get("host_id")
            if not isinstance(host_id, str) or not host_id:
                problems.append(Problem(origin.source, origin.path("host_id"), "required: give every host a unique host_id"))
                continue
            if host_id in first_seen:
                problems.append(Problem(origin.source, origin.path("host_id"), f'duplicate host_id "{host_id}" (also at {scope}/hosts/{first_seen[host_id]}); host ids must be unique'))
                continue
            first_seen[host_id] = index
            for key in entry:
                close = difflib.get_close_matches(str(key), HOST_KEYS, n=1, cutoff=0.8)
                if key not in HOST_KEYS and close:
                    warnings.append(Problem(origin.source, origin.path(key), f"kept as a free-form label; did you mean {close[0]}?"))
            merged[host_id] = {**src.server_globals, **merged.get(host_id, {}), **defaults, **entry}
            # A value set once for every host (a global, a scope default) is reported where it is written,
            # once, not as hosts/N/key of every host (a path that is not in the file).
            inherited = dict(origins[host_id].inherited) if host_id in origins else {k: k for k in src.server_globals}
            inherited.update({k: f"{scope}/{k}" for k in defaults})
            for key in entry:
                inherited.pop(key, None)
            origins[host_id] = HostOrigin(origin.source, origin.scope, inherited)

    hosts: list[Host] = []
    for host_id, values in merged.items():
        origin = origins[host_id]
        try:
            hosts.append(Host.model_validate(values))
        except ValidationError as exc:
            for error in exc.errors():
                key = str(error["loc"][0])
                message = error["msg"] if error["type"] == "deployer" else describe(error, key, src, target)
                if error["type"] == "missing":
                    message = "required key is missing"
                problems.append(Problem(origin.source, origin.path(*error["loc"]), message))
    return hosts, origins


def _check_hosts(target: Target, hosts: list[Host], origins: dict[str, Origin], src: Sources, problems: list[Problem], warnings: list[Problem]) -> None:
    source = src.servers.source if src.servers else "servers"
    if not origins:
        scopes = " or ".join(f"{s}:" for s in reversed(target.scopes()))
        problems.append(Problem(source, str(target), f"no hosts for this deployment; add a {scopes} stanza with a hosts: list"))
        return
    if not hosts:
        return  # each host already has its own problem
    hubs = [h for h in hosts if h.has("hub")]
    if not hubs:
        problems.append(Problem(source, str(target), "no host has the hub role; give exactly one host roles: [hub]"))
    elif len(hubs) > 1:
        ids = ", ".join(h.host_id for h in hubs)
        problems.append(Problem(source, str(target), f"{len(hubs)} hosts have the hub role ({ids}); a deployment has exactly one hub"))
    if not any(h.has("worker") for h in hosts):
        problems.append(Problem(source, str(target), "no host has the worker role; notebooks run on workers, so give at least one host roles: [worker]"))
    by_ip: dict[str, str] = {}
    for host in hosts:
        origin = origins[host.host_id]
        if not host.roles:
            warnings.append(Problem(origin.source, origin.path("roles"), "no roles: this host takes no part in the deployment"))
        if host.gpus and not host.has("worker"):  # GPUs serve notebooks, which run on workers only
            problems.append(Problem(origin.source, origin.path("gpus"), "only a worker's GPUs are used (notebooks run on workers): "
                                    "add worker to this host's roles, or remove gpus"))
        elif isinstance(host.gpus, int):
            warnings.append(Problem(origin.source, origin.path("gpus"), "a count names the GPUs by index (0, 1, ...), and indexes move when a "
                                    "card is added, removed or fails; list the GPU UUIDs to pin each notebook to its devices"))
        if not host.private_ip and ":" in host.ssh_host:  # an IPv6 literal would carry swarm and NFS traffic
            problems.append(Problem(origin.source, origin.path("ssh_host"), "is an IPv6 address and no private_ip is set: swarm and NFS "
                                    "traffic would use it, which is not supported yet; set private_ip to the host's IPv4 address"))
        if host.private_ip:
            if host.private_ip in by_ip:
                problems.append(Problem(origin.source, origin.path("private_ip"), f"{host.private_ip} is also the private_ip of {by_ip[host.private_ip]}; each host needs its own address"))
            by_ip[host.private_ip] = host.host_id
        if host.ssh_key:
            key_path = resolve_ssh_key(host.ssh_key, src.files.servers)
            if not key_path.is_file():
                problems.append(Problem(origin.source, origin.path("ssh_key"), f"file not found: {key_path} (paths are relative to the servers file's directory)"))
            elif stat.S_IMODE(key_path.stat().st_mode) & 0o077:
                warnings.append(Problem(origin.source, origin.path("ssh_key"), f"{key_path} is readable by group or others, and ssh will refuse it; run: chmod 600 {key_path}"))


# --- entry point ---------------------------------------------------------------------------


def load(files: DeploymentFiles, project: str, instance: str | None = None, tenant: str | None = None, override_text: str | None = None, *, unregistered_client: bool = False) -> Loaded:
    """Load, merge and validate every deployment the arguments select.

    ``unregistered_client`` accepts a deployment without an OAuth client id/secret yet.
    """
    if project not in PROJECTS:
        raise UsageError(f"unknown project {project!r}; known projects: {', '.join(sorted(PROJECTS))}")
    src = read_sources(files, project)
    override_pairs: list[tuple[str, Any]] = []
    if override_text:
        override_pairs, bad = overrides.parse(override_text)
        src.problems += bad
        for key, _ in override_pairs:
            if key in SECRET_KEYS:
                src.warnings.append(Problem(overrides.SOURCE, key, "is a secret: on the command line it is visible to other users (ps) and kept in shell history; put it in the passwords file"))
    if src.problems:  # unreadable files: nothing below would be meaningful
        raise ConfigError(src.problems, warnings=src.warnings)

    problems: list[Problem] = []
    warnings: list[Problem] = list(src.warnings)
    secrets = secret_values(src, override_pairs)
    deployments = []
    selected = targets_of(src, project, instance, tenant)
    problems += _name_collisions(src, project, selected)
    problems += _name_lengths(src, selected)
    for target in selected:
        config, origins = _config_for(target, src, override_pairs, problems, warnings, unregistered_client=unregistered_client)
        hosts, host_origins = _hosts_for(target, src, problems, warnings)
        _check_hosts(target, hosts, host_origins, src, problems, warnings)
        if config is not None and config.login == "local-dev":
            remote = [h.host_id for h in hosts if h.ssh_host not in LOCAL_HOSTS]
            if remote:
                origin = origins.get("login") or Origin(src.configs.source if src.configs else "configs", str(target))
                problems.append(Problem(origin.source, origin.path("login"), f"local-dev is for a hub on this machine only, but {', '.join(remote)} "
                                        "is remote: use login: tenant, or ssh_host: localhost"))
        if config is not None:
            deployments.append(Deployment(target, config, hosts, files, origins, host_origins, secrets))
    if problems:
        raise ConfigError(scrub(_unique(problems), secrets), warnings=scrub(_unique(warnings), secrets))
    return Loaded(deployments, scrub(_unique(warnings), secrets))


def secret_values(src: Sources, override_pairs: list[tuple[str, Any]]) -> frozenset[str]:
    """Every value of the passwords file (whatever its key) and of a secret key anywhere. A value shorter
    than 4 characters is not a secret worth the name and would mask ordinary words."""
    found: set[str] = set()

    def collect(value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                collect(v)
        elif isinstance(value, list):
            for v in value:
                collect(v)
        elif isinstance(value, str) and len(value.strip()) >= 4:
            found.add(value.strip())

    if src.passwords:
        collect(src.passwords.stanzas)
    for scoped in [f for f in (src.configs,) if f is not None]:
        for stanza in scoped.stanzas.values():
            collect({k: v for k, v in stanza.items() if k in SECRET_KEYS})
    collect({k: v for k, v in override_pairs if k in SECRET_KEYS})
    return frozenset(found)


def scrub(problems: list[Problem], secrets: frozenset[str]) -> list[Problem]:
    """The problems with every secret value replaced by ***, longest first (a secret may contain another)."""
    ordered = sorted(secrets, key=len, reverse=True)

    def clean(text: str) -> str:
        for secret in ordered:
            text = text.replace(secret, "***")
        return text

    return [Problem(p.source, clean(p.path), clean(p.message)) for p in problems]


def _name_collisions(src: Sources, project: str, selected: list[Target]) -> list[Problem]:
    """Scopes whose Docker names would be the same ('.' becomes '-': jupyterhub.prod.tacc.prod and
    jupyterhub.prod-tacc.prod): their services, secrets, networks and share would be shared."""
    files = [f for f in (src.configs, src.passwords, src.servers) if f is not None]
    every = {t for f in files for t in f.targets() if t.project == project and t.tenant}
    problems = []
    for target in selected:
        name = str(target).replace(".", "-")
        for other in sorted(every, key=str):
            if other != target and str(other).replace(".", "-") == name:
                source = next((f.source for f in files if any(s in f.stanzas for s in target.scopes()[1:])), "configs")
                problems.append(Problem(source, str(target), f"deploys under the same Docker names ({name}-...) as {other}; "
                                                             "rename one of the two scopes"))
    return problems


def _name_lengths(src: Sources, selected: list[Target]) -> list[Problem]:
    """Docker names the deployment itself would produce, checked before any host is touched
    (``docker config create`` failed after engines, swarm and NFS had already been changed)."""
    from deployer.config.hubsettings import Layout
    from deployer.phases.hubservice import name_problems  # late: hubservice imports this module's types

    source = src.configs.source if src.configs else "configs"
    return [Problem(source, str(target), message)
            for target in selected for message in name_problems(Layout(str(target).replace(".", "-")))]


def _unique(problems: list[Problem]) -> list[Problem]:
    """The same problem found for several deployments is reported once."""
    return list(dict.fromkeys(problems))


def tenant_summary(config: JupyterHubConfig) -> str:
    if config.login == "local-dev":
        return "local-dev login with a shared password (LOCAL USE ONLY)"
    info = config.tenant_info
    return f"tenant {info.id} ({info.flavour.value}, {info.base_url})"

