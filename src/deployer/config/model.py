"""The typed deployment configuration: what every key means and which values it accepts.

Field validators check one value at a time and raise messages that say what is
wrong and what to write instead. Checks that span several keys live in
:func:`cross_check` (configuration) and :func:`check_hosts` (servers), so each
finding can be reported at the key it is about.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from deployer_hub import mounts, netguard, tenants
from deployer_hub.gpus import KIND as GPU_KIND
from deployer_hub.tenants import Flavour
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, field_validator

from deployer import __version__
from deployer.config.address import HubAddress
from deployer.config.options import Cpus, Env, GroupNames, Profile, ProjectMounts, SecretEnv, Usernames
from deployer.config.values import (
    DEFAULT_PIDS_LIMIT,
    DEFAULT_TAS_MIN_ID,
    DEFAULT_USERNAME_CLAIM,
    HubHost,
    Image,
    MemorySize,
    Mount,
    OptionalSecret,
    PosixId,
    Secret,
    UidRange,
    _base_url,
    _egress_rules,
    _egress_targets,
    _email,
    _identifier,
    _pids_limit,
    _private_ip,
    _query_url,
    _ssh_host,
    _subnet,
    _tas_min_id,
    _tenant_id,
    _username_claim,
    fail,
)

DEFAULT_HUB_IMAGE = f"deployer/jupyterhub:{__version__}"  # as scripts/build-images tags them
DEFAULT_USER_IMAGE = "taccsciapps/jupyteruser-base:latest"
DEFAULT_NETGUARD_IMAGE = f"deployer/netguard:{__version__}"
DEFAULT_ACME_DIRECTORY = "https://acme-v02.api.letsencrypt.org/directory"
DEFAULT_CULL_TIMEOUT = 86400
DEFAULT_START_TIMEOUT = 180

#: Keys whose values are secrets: kept in the passwords file, never printed.
SECRET_KEYS = frozenset({"jupyterhub_oauth_client_secret", "tas_role_pass", "jupyterhub_key", "local_dev_password", "jupyterhub_metrics_token",
                         "notebook_secret_env"})
#: ssh_host values that mean "this machine": the only hosts the local-dev login may run on.
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
#: Per-user template variables that need TAS.
TAS_TEMPLATE_VARIABLES = mounts.TAS_VARIABLES




# --- the JupyterHub project configuration --------------------------------------------------


class JupyterHubConfig(BaseModel):
    """Every key of a ``jupyterhub`` deployment (see the example that ``deployer init`` writes)."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    tenant: Annotated[str, PlainValidator(_tenant_id)]
    tenant_type: Flavour | None = None
    #: true: the tenant's usernames are case-insensitive (Alice is alice), so the hub lower-cases them.
    #: false: a username not already in the hub's form (lower-case a-z 0-9 . _ @ + -) is refused at login.
    tenant_case_insensitive: bool = False
    #: tenant_type oidc only: the claim of the provider's user info that is the username.
    oidc_username_claim: Annotated[str, PlainValidator(_username_claim)] = DEFAULT_USERNAME_CLAIM
    #: tenant: the tenant's OAuth server. local-dev: a shared password, for a hub on this machine only.
    login: Literal["tenant", "local-dev"] = "tenant"
    local_dev_password: OptionalSecret = None
    jupyterhub_tenant_base_url: Annotated[str | None, PlainValidator(lambda v: None if v is None else _base_url(v))] = None
    jupyterhub_host: HubHost
    jupyterhub_oauth_client_id: str = Field(min_length=1)
    jupyterhub_oauth_client_secret: Secret
    jupyterhub_cert: str | None = None
    jupyterhub_key: OptionalSecret = None
    #: Where the hub's certificate comes from: jupyterhub_cert/key when given, else self-signed; or an ACME CA
    #: (Let's Encrypt unless jupyterhub_acme_directory says otherwise) over HTTP-01 on port 80.
    jupyterhub_tls: Literal["self-signed", "acme"] | None = None
    jupyterhub_acme_email: Annotated[str | None, PlainValidator(_email)] = None
    jupyterhub_acme_directory: Annotated[str, PlainValidator(_base_url)] = DEFAULT_ACME_DIRECTORY
    #: CA certificates for the directory's HTTPS (a private ACME server); PEM text or a file in the extras directory.
    jupyterhub_acme_ca_bundle: str | None = None
    jupyterhub_acme_renew_days: int = Field(default=30, ge=1, le=60, strict=True)
    volume_mounts: list[Mount] = Field(default_factory=list)
    jupyterhub_image: Image = DEFAULT_HUB_IMAGE
    jupyter_user_image: Image = DEFAULT_USER_IMAGE
    jupyteruser_uid: PosixId = None
    jupyteruser_gid: PosixId = None
    #: Without TAS: each user's own uid (and a gid of the same number) from this range, kept by the hub.
    notebook_uid_range: UidRange = None
    use_tas_uid: bool = False
    use_tas_gid: bool = False
    tas_role_account: str | None = Field(default=None, min_length=1)
    tas_role_pass: OptionalSecret = None
    tas_base_url: Annotated[str, PlainValidator(_base_url)] = tenants.DEFAULT_TAS_BASE_URL
    #: The smallest uid/gid accepted from TAS (0 never is).
    tas_min_id: Annotated[int, PlainValidator(_tas_min_id)] = DEFAULT_TAS_MIN_ID
    tenant_ca_bundle: str | None = None
    cull_idle_notebook_timeout: int = Field(default=DEFAULT_CULL_TIMEOUT, ge=0, strict=True)  # strict: true is not 1
    notebook_memory_limit: MemorySize = None
    #: Seconds a notebook may take to start (its task scheduled and running, then answering) before the spawn fails.
    notebook_start_timeout: int = Field(default=DEFAULT_START_TIMEOUT, ge=60, le=3600, strict=True)
    notebook_node_down_timeout: int = Field(default=15, ge=5, le=30, strict=True)
    #: Most processes and threads in one notebook container (0: no limit).
    notebook_pids_limit: Annotated[int, PlainValidator(_pids_limit)] = DEFAULT_PIDS_LIMIT
    notebook_offer_lab: bool = True
    use_stock_nfs: bool = False
    #: What notebooks may reach besides the hub API and the tenant (z2jh's egressAllowRules).
    notebook_egress_allow_rules: Annotated[dict[str, bool], PlainValidator(_egress_rules)] = Field(default_factory=lambda: dict(netguard.ALLOW_RULES))
    notebook_egress_allow: Annotated[tuple[str, ...], PlainValidator(_egress_targets)] = ()
    notebook_egress_deny: Annotated[tuple[str, ...], PlainValidator(_egress_targets)] = ()
    #: The notebook network's IPv4 subnet (hub, relay, one address per node, one per server). Unset: a free /19 of
    #: 10.128.0.0/9 for a new network; an existing one is kept. Changing it needs every server stopped.
    notebook_network_subnet: Annotated[str | None, PlainValidator(_subnet)] = None
    #: The per-host firewall of the notebook containers.
    network_guard_image: Image = DEFAULT_NETGUARD_IMAGE
    #: A token (passwords file) that lets a scraper read /hub/metrics (scope read:metrics, nothing else).
    jupyterhub_metrics_token: OptionalSecret = None
    #: A Prometheus that scrapes this hub: `deployer status` shows the last hour's spawns from it.
    metrics_prometheus_url: Annotated[str | None, PlainValidator(_query_url)] = None
    #: Hub admins (the admin panel: every user's server); admin_groups needs tenant_groups_claim.
    admin_users: Usernames = ()
    admin_groups: GroupNames = ()
    #: The key of the tenant's user profile (OIDC: the claim) that lists the user's groups.
    tenant_groups_claim: Annotated[str | None, PlainValidator(lambda v: None if v is None else _username_claim(v))] = None
    #: Server profiles offered on the spawn page (each optionally limited to users or groups).
    notebook_profiles: list[Profile] = Field(default_factory=list)
    notebook_memory_guarantee: MemorySize = None
    notebook_cpu_limit: Cpus = None
    notebook_cpu_guarantee: Cpus = None
    allow_named_servers: bool = False
    named_server_limit_per_user: int = Field(default=0, ge=0, le=1000, strict=True)
    #: Each of the user's projects mounted at every spawn (a static mapping or the tenant's projects API).
    project_mounts: ProjectMounts | None = None
    #: Environment variables in every notebook (plain values; visible in `docker inspect`).
    notebook_env: Env = Field(default_factory=dict)
    #: Secret ones (passwords file): Docker secrets, exported by the image's entrypoint.
    notebook_secret_env: SecretEnv = Field(default_factory=dict)

    @field_validator("notebook_profiles", mode="before")
    @classmethod
    def _profiles_list(cls, value: Any) -> Any:
        if value is None:
            return []
        if not isinstance(value, list):
            fail("must be a list of profiles, each a mapping with at least a name")
        return value

    @property
    def uses_groups(self) -> bool:
        return bool(self.admin_groups or any(p.groups for p in self.notebook_profiles)
                    or (self.project_mounts and any(p.groups for p in self.project_mounts.projects)))

    @field_validator("volume_mounts", mode="before")
    @classmethod
    def _mounts_list(cls, value: Any) -> Any:
        if value is None:
            return []
        if not isinstance(value, list):
            fail("must be a list of host_path:container_path:mode strings")
        return value

    @property
    def uses_tas(self) -> bool:
        return self.use_tas_uid or self.use_tas_gid

    @property
    def flavour(self) -> Flavour:
        return self.tenant_type or tenants.default_flavour(self.tenant) or Flavour.AGAVE

    @property
    def tenant_info(self) -> tenants.Tenant:
        """The tenant with its base URL: the configured one, else the registry's."""
        if self.jupyterhub_tenant_base_url:
            standard = tenants.lookup(self.tenant, self.flavour)
            tacc = standard.tacc_identity if standard else False
            return tenants.Tenant(self.tenant, self.flavour, self.jupyterhub_tenant_base_url, tacc)
        found = tenants.lookup(self.tenant, self.flavour)
        if found is None:  # cross_check reports this before anyone asks
            raise LookupError(f"tenant {self.tenant!r} has no base URL")
        return found

    @property
    def hub_address(self) -> HubAddress:
        return HubAddress.parse(self.jupyterhub_host)

    @property
    def callback_url(self) -> str:
        return f"https://{self.hub_address.netloc}/hub/oauth_callback"


@dataclass(frozen=True)
class Finding:
    key: str
    message: str
    error: bool = True


def cross_check(cfg: JupyterHubConfig) -> list[Finding]:
    """Checks that involve several keys. Certificate checks live in the loader (they read files)."""
    found: list[Finding] = []
    if cfg.login == "local-dev":
        if cfg.local_dev_password is None:
            found.append(Finding("local_dev_password", "required because login is local-dev: set the shared password in the passwords file"))
        elif len(cfg.local_dev_password.get_secret_value()) < 12:
            found.append(Finding("local_dev_password", "must be at least 12 characters"))
        if cfg.uses_tas:
            found.append(Finding("login", "the local-dev login has no tenant identity, so TAS cannot be used: set use_tas_uid/use_tas_gid to false"))
        return found  # no tenant is contacted: the tenant checks below do not apply
    flavour = cfg.flavour
    standard = tenants.lookup(cfg.tenant, flavour) if flavour is not Flavour.OIDC else None
    if cfg.jupyterhub_tenant_base_url is None and standard is None:
        if flavour is Flavour.OIDC:
            why = "tenant_type oidc needs the provider's issuer URL"
        else:
            known = ", ".join(sorted(tenants.AGAVE_TENANTS))
            why = f"{cfg.tenant!r} is not a standard tenant (standard Agave v2 tenants: {known})"
        found.append(Finding("jupyterhub_tenant_base_url", f"required: {why}; set jupyterhub_tenant_base_url to its base URL"))
    if "oidc_username_claim" in cfg.model_fields_set and flavour is not Flavour.OIDC:
        found.append(Finding("oidc_username_claim", f"only applies to OpenID Connect tenants (tenant_type: oidc); tenant {cfg.tenant!r} "
                                                    f"is {flavour.value}, whose username comes from its profile: remove the key"))

    if cfg.jupyterhub_tls == "acme":
        if cfg.jupyterhub_acme_email is None:
            found.append(Finding("jupyterhub_acme_email", "required because jupyterhub_tls is acme: the CA's contact for this hub's certificates (expiry notices)"))
        if cfg.jupyterhub_cert is not None:
            found.append(Finding("jupyterhub_cert", "the certificate comes from the ACME CA (jupyterhub_tls: acme): remove jupyterhub_cert and jupyterhub_key, or jupyterhub_tls"))
    else:
        if cfg.jupyterhub_tls == "self-signed" and cfg.jupyterhub_cert is not None:
            found.append(Finding("jupyterhub_cert", "jupyterhub_tls is self-signed: remove jupyterhub_cert and jupyterhub_key, or jupyterhub_tls"))
        for key in ("jupyterhub_acme_email", "jupyterhub_acme_directory", "jupyterhub_acme_ca_bundle", "jupyterhub_acme_renew_days"):
            if key in cfg.model_fields_set:
                found.append(Finding(key, "ignored: jupyterhub_tls is not acme", error=False))

    if (cfg.jupyterhub_cert is None) != (cfg.jupyterhub_key is None):
        have, missing = ("jupyterhub_cert", "jupyterhub_key") if cfg.jupyterhub_key is None else ("jupyterhub_key", "jupyterhub_cert")
        found.append(Finding(missing, f"required because {have} is set: give both, or neither for a self-signed pair"))

    if cfg.uses_tas:
        which = " and ".join(k for k in ("use_tas_uid", "use_tas_gid") if getattr(cfg, k))
        for key in ("tas_role_account", "tas_role_pass"):
            if getattr(cfg, key) is None:
                where = "in the passwords file" if key == "tas_role_pass" else ""
                found.append(Finding(key, f"required because {which} is true: set the TAS role account's {'password' if key == 'tas_role_pass' else 'name'} {where}".rstrip()))
        if standard is not None and not standard.tacc_identity:
            tacc = ", ".join(sorted(t for t, v in tenants.AGAVE_TENANTS.items() if v.tacc_identity))
            found.append(Finding(
                "use_tas_uid" if cfg.use_tas_uid else "use_tas_gid",
                f"tenant {cfg.tenant!r} does not use TACC's identity provider, so its users are not in TAS "
                f"(TAS tenants: {tacc}, and Tapis v3 tacc, designsafe); set use_tas_uid/use_tas_gid to false",
            ))
        for key, flag in (("jupyteruser_uid", "use_tas_uid"), ("jupyteruser_gid", "use_tas_gid")):
            if getattr(cfg, key) is not None and getattr(cfg, flag):
                found.append(Finding(key, f"ignored: {flag} is true, so notebooks run with the user's TAS id", error=False))
    elif "tas_min_id" in cfg.model_fields_set:
        found.append(Finding("tas_min_id", "ignored: use_tas_uid and use_tas_gid are false, so no id comes from TAS", error=False))
    if cfg.notebook_uid_range is not None:
        if cfg.uses_tas:
            found.append(Finding("notebook_uid_range", "TAS gives each user's ids (use_tas_uid/use_tas_gid): remove notebook_uid_range, or TAS integration"))
        for key in ("jupyteruser_uid", "jupyteruser_gid"):
            if getattr(cfg, key) is not None:
                found.append(Finding(key, f"{key} runs every notebook with one id, notebook_uid_range gives each user their own: keep one of them"))
        if cfg.login == "local-dev":
            found.append(Finding("notebook_uid_range", "the local-dev login keeps no users' identities, so it cannot give them their own ids: "
                                                       "remove notebook_uid_range (or use a tenant login)"))

    for key, index, mount in all_mounts(cfg):
        tas_vars = mount.variables & TAS_TEMPLATE_VARIABLES
        if tas_vars and not cfg.uses_tas:
            var = "{" + sorted(tas_vars)[0] + "}"
            found.append(Finding(f"{key}/{index}", f"{var} needs TAS integration: set use_tas_uid and use_tas_gid to true (with tas_role_account and tas_role_pass), or remove {var}"))
    seen: dict[str, int] = {}
    for index, mount in enumerate(cfg.volume_mounts):
        target = mount.container_path.rstrip("/")
        if target in seen:
            found.append(Finding(f"volume_mounts/{index}", f"container_path {mount.container_path!r} is already used by volume_mounts/{seen[target]}; each mount needs its own container path"))
        seen.setdefault(target, index)
    if not cfg.volume_mounts:
        found.append(Finding("volume_mounts", "no mounts: users' files are lost when their notebook server stops; mount a per-user directory such as /data/{username}:/home/jupyter/permanent:rw", error=False))
    found += server_options_check(cfg)
    return found


def all_mounts(cfg: JupyterHubConfig) -> list[tuple[str, int, mounts.VolumeMount]]:
    """(key, index, mount) of every volume_mounts entry: the deployment's and each profile's."""
    return [("volume_mounts", i, m) for i, m in enumerate(cfg.volume_mounts)] + [
        (f"notebook_profiles/{p}/volume_mounts", i, m) for p, profile in enumerate(cfg.notebook_profiles) for i, m in enumerate(profile.volume_mounts)]


def server_options_check(cfg: JupyterHubConfig) -> list[Finding]:
    """Profiles, groups, resources, named servers and project mounts, against each other and the rest."""
    found: list[Finding] = []
    if cfg.uses_groups and cfg.tenant_groups_claim is None:
        key = "admin_groups" if cfg.admin_groups else next(
            (f"notebook_profiles/{i}/groups" for i, p in enumerate(cfg.notebook_profiles) if p.groups), "project_mounts/projects")
        why = "the local-dev login has no groups" if cfg.login == "local-dev" else "set tenant_groups_claim to the key of the tenant's user profile that lists them (e.g. groups)"
        found.append(Finding(key, f"groups need the tenant's groups: {why}"))
    if cfg.tenant_groups_claim is not None and cfg.login == "local-dev":
        found.append(Finding("tenant_groups_claim", "the local-dev login has no tenant, so no groups: remove the key"))

    def resources(key: str, memory: tuple[int | None, int | None], cpus: tuple[float | None, float | None]) -> None:
        (mem_limit, mem_guarantee), (cpu_limit, cpu_guarantee) = memory, cpus
        if mem_limit and mem_guarantee and mem_guarantee > mem_limit:
            found.append(Finding(f"{key}memory_guarantee", "must not be more than the memory limit"))
        if cpu_limit and cpu_guarantee and cpu_guarantee > cpu_limit:
            found.append(Finding(f"{key}cpu_guarantee", "must not be more than the CPU limit"))

    resources("notebook_", (cfg.notebook_memory_limit, cfg.notebook_memory_guarantee), (cfg.notebook_cpu_limit, cfg.notebook_cpu_guarantee))
    targets = {m.container_path.rstrip("/"): "volume_mounts" for m in cfg.volume_mounts}
    seen: dict[str, int] = {}
    for index, profile in enumerate(cfg.notebook_profiles):
        at = f"notebook_profiles/{index}/"
        if profile.name in seen:
            found.append(Finding(f"{at}name", f"{profile.name!r} is also the name of notebook_profiles/{seen[profile.name]}; each profile needs its own name"))
        seen.setdefault(profile.name, index)
        resources(at, (profile.memory_limit or cfg.notebook_memory_limit, profile.memory_guarantee or cfg.notebook_memory_guarantee),
                  (profile.cpu_limit or cfg.notebook_cpu_limit, profile.cpu_guarantee or cfg.notebook_cpu_guarantee))
        own: set[str] = set()
        for m_index, mount in enumerate(profile.volume_mounts):
            target = mount.container_path.rstrip("/")
            if target in targets or target in own:
                found.append(Finding(f"{at}volume_mounts/{m_index}", f"container_path {mount.container_path!r} is already used by {targets.get(target, 'this profile')}; each mount needs its own container path"))
            own.add(target)
    for key, index, mount in all_mounts(cfg):
        if "servername" in mounts.template_variables(mount.container_path):
            found.append(Finding(f"{key}/{index}", "{servername} may only be used in the host path (the default server has no name)"))
        elif "servername" in mounts.template_variables(mount.host_path):
            before = mount.host_path.split("{servername}", 1)[0]
            if "{username}" not in before:
                found.append(Finding(f"{key}/{index}", "{servername} must come after {username} in the host path (e.g. /data/{username}/{servername}): "
                                                       "servers of different users must not share a directory"))
            elif not cfg.allow_named_servers:
                found.append(Finding(f"{key}/{index}", "{servername} is always empty: allow_named_servers is false", error=False))
    if cfg.project_mounts:
        root = cfg.project_mounts.container_path.rstrip("/")
        for target, key in targets.items():
            if target == root or target.startswith(root + "/") or root.startswith(target + "/"):
                found.append(Finding("project_mounts/container_path", f"{cfg.project_mounts.container_path!r} overlaps a mount of {key} ({target}); give projects a directory of their own"))
        if not cfg.project_mounts.projects and not cfg.project_mounts.api_url:
            found.append(Finding("project_mounts", "no source of projects: list them under projects (id, name, users, groups) or set api_url to the tenant's projects API"))
        if cfg.project_mounts.api_url and cfg.login == "local-dev":
            found.append(Finding("project_mounts/api_url", "the local-dev login has no tenant token to ask the projects API with: use a static projects list"))
    if "named_server_limit_per_user" in cfg.model_fields_set and not cfg.allow_named_servers:
        found.append(Finding("named_server_limit_per_user", "ignored: allow_named_servers is false", error=False))
    return found


# --- servers --------------------------------------------------------------------------------

HOST_KEYS = ("host_id", "ssh_host", "private_ip", "roles", "ssh_user", "ssh_key", "ssh_port", "ssh_known_hosts", "gpus")
ROLES = ("hub", "worker")
#: GPU_KIND (deployer_hub.gpus.KIND): the Swarm generic resource of a GPU, as Docker documents it; the hub reads it back.
_GPU_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_GPUS_INSTEAD = ("list the worker's GPU UUIDs instead, e.g. gpus: [GPU-3f2a91c4-...] "
                 "(nvidia-smi --query-gpu=uuid --format=csv,noheader prints them)")


def _gpus(value: Any) -> int | tuple[str, ...]:
    """A worker's GPUs: their device ids (declared as named resources), or a count (a discrete amount; the hub
    then names the devices by index). Ids that are numbers cannot be declared: dockerd reads a number as an
    amount (it refuses NVIDIA-GPU=0 beside NVIDIA-GPU=1, and reads NVIDIA-GPU=0 alone as no GPU at all;
    Docker 20.10)."""
    if isinstance(value, bool) or isinstance(value, float):
        fail(f"must be a list of GPU device ids or a whole number of GPUs, got {value!r}")
    if isinstance(value, int):
        if not 1 <= value <= 64:
            fail(f"a count of GPUs must be between 1 and 64, got {value}; or {_GPUS_INSTEAD}")
        return value
    if isinstance(value, str):
        fail(f"must be a list such as [{value}], not a string")
    if not isinstance(value, list) or not value:
        fail(f"must be a non-empty list of GPU device ids (or a count); {_GPUS_INSTEAD}")
    seen: set[str] = set()
    for item in value:
        if not isinstance(item, str) or not _GPU_ID.fullmatch(item):
            fail(f"{item!r} is not a GPU device id: up to 64 letters, digits, '-', '_', '.' or ':' (no '=', ',' or spaces); {_GPUS_INSTEAD}")
        if re.fullmatch(r"-?[0-9]+", item):
            fail(f"{item!r} is a number, which Docker takes as an amount, not a device (for a count, write gpus: {len(value)}); {_GPUS_INSTEAD}")
        if item in seen:
            fail(f"{item!r} is listed twice; list each GPU once")
        seen.add(item)
    return tuple(value)


class Host(BaseModel):
    """One server of the servers file. Keys beyond the known ones are free-form labels."""

    model_config = ConfigDict(extra="allow", frozen=True)

    host_id: Annotated[str, PlainValidator(_identifier)]
    ssh_host: Annotated[str, PlainValidator(_ssh_host)]
    private_ip: Annotated[str | None, PlainValidator(_private_ip)] = None
    roles: list[Literal["hub", "worker"]] = Field(default_factory=list)
    ssh_user: str = Field(default="root", min_length=1)
    ssh_key: str | None = None
    ssh_port: int = Field(default=22, ge=1, le=65535, strict=True)  # strict: true is not port 1, 22.5 not 22
    #: known_hosts file for these hosts (relative to the servers file); default: the operator's own.
    ssh_known_hosts: str | None = None
    #: The worker's GPU device ids, or how many it has, declared to Swarm as NVIDIA-GPU generic resources (phases/gpus.py).
    gpus: Annotated[int | tuple[str, ...], PlainValidator(_gpus)] = ()

    @field_validator("roles", mode="before")
    @classmethod
    def _roles_list(cls, value: Any) -> Any:
        if value is None:
            return []
        if isinstance(value, str):
            fail(f"must be a list such as [{value}], not a string")
        return value

    @property
    def address(self) -> str:
        """Where other nodes reach this one: private_ip, else ssh_host (the seed's rule)."""
        return self.private_ip or self.ssh_host

    @property
    def labels(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def has(self, role: str) -> bool:
        return role in self.roles

    @property
    def gpu_resources(self) -> tuple[str, ...]:
        """The Swarm generic resources this host declares (workers only): ``NVIDIA-GPU=<device id>`` per GPU, or
        one ``NVIDIA-GPU=<count>``."""
        if not self.has("worker") or not self.gpus:
            return ()
        if isinstance(self.gpus, int):
            return (f"{GPU_KIND}={self.gpus}",)
        return tuple(f"{GPU_KIND}={gpu}" for gpu in self.gpus)

    @property
    def gpu_count(self) -> int:
        return len(self.gpu_resources) if not isinstance(self.gpus, int) else (self.gpus if self.has("worker") else 0)
