"""The contract between ``deployer`` and the hub: what ``hub.json`` holds, as typed dataclasses.

The CLI builds a :class:`Settings` from the validated deployment and writes ``to_dict()`` as
``hub.json`` (no secrets: those are Docker secrets); the hub's configuration reads it back with
:meth:`Settings.from_dict`. A key the hub does not know is refused (a newer deployer than the hub
image); a key missing from an older ``hub.json`` takes its default. Standard library only.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any


#: The user image's own user (jupyter, 1000:100, as in the Jupyter docker-stacks): a notebook's ids when
#: neither TAS nor the configuration gives any.
IMAGE_UID, IMAGE_GID = 1000, 100


@dataclass(frozen=True)
class TenantSettings:
    id: str
    flavour: str | None = None  # agave, tapis or oidc; None for the local-dev login
    base_url: str | None = None
    ca_bundle: str | None = None  # path of the tenant's extra CAs in the hub container
    case_insensitive: bool = False
    username_claim: str | None = None  # oidc only
    groups_claim: str | None = None  # the profile/userinfo key listing the user's groups; None: groups are not used


@dataclass(frozen=True)
class OAuthSettings:
    client_id: str = ""
    callback_url: str = ""


@dataclass(frozen=True)
class AcmeSettings:
    """The hub's certificate from an ACME CA (deployer_hub.acmecert)."""

    email: str
    directory: str = "https://acme-v02.api.letsencrypt.org/directory"
    ca_bundle: str | None = None  # path in the hub container: CAs for the directory's HTTPS (a private CA)
    renew_days: int = 30  # renew this long before expiry at most (sooner for short-lived certificates)


@dataclass(frozen=True)
class HubSettings:
    host: str
    service_name: str
    data_dir: str
    https_port: int = 443  # inside the container
    public_https_port: int = 443  # where browsers reach it (redirects go there)
    http_port: int = 80
    ssl_cert: str | None = None
    ssl_key: str | None = None
    metrics_scraper: bool = False  # a service whose token (secret metrics_token) may read /hub/metrics
    acme: AcmeSettings | None = None  # None: the certificate is ssl_cert (supplied or self-signed)
    api_relay: str | None = None  # the hub API's relay (hubrelay) notebooks reach the hub by; None: service_name
    admin_users: list[str] = field(default_factory=list)
    admin_groups: list[str] = field(default_factory=list)  # needs tenant.groups_claim


@dataclass(frozen=True)
class TasSettings:
    use_uid: bool = False
    use_gid: bool = False
    url: str = ""
    role_account: str | None = None
    min_id: int = 1000


@dataclass(frozen=True)
class GuardSettings:
    label: str  # the deployment's name: notebook containers get deployer.notebook=<label>
    port: int  # the gate the guard opens (redirected to the server's port)


@dataclass(frozen=True)
class ProfileSettings:
    """One choice on the spawn page (notebook_profiles): what a server of it gets, and who may pick it."""

    name: str  # shown, and the form's value (unique)
    description: str = ""
    image: str | None = None  # None: notebooks.image
    memory_limit: int | None = None  # None: notebooks.memory_limit (and so on for each resource)
    memory_guarantee: int | None = None
    cpu_limit: float | None = None
    cpu_guarantee: float | None = None
    gpus: int = 0  # reserved as the swarm generic resource GPU (servers file: gpus)
    volume_mounts: list[str] = field(default_factory=list)  # besides notebooks.volume_mounts
    env: dict[str, str] = field(default_factory=dict)
    users: list[str] = field(default_factory=list)  # users and groups both empty: everyone may use it
    groups: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class StaticProject:
    id: str
    name: str
    users: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ProjectMountSettings:
    """project_mounts: each of a user's projects mounted at every spawn (deployer_hub.projects)."""

    host_path: str  # template with {project_id}
    container_path: str  # each project appears below it, as a directory named after the project
    mode: str = "rw"
    projects: list[StaticProject] = field(default_factory=list)  # the static mapping
    api_url: str | None = None  # or the tenant's API listing the user's projects


@dataclass(frozen=True)
class NotebookSettings:
    image: str
    network: str
    service_prefix: str
    volume_mounts: list[str] = field(default_factory=list)
    uid: int | None = None
    gid: int | None = None
    uid_range: list[int] | None = None  # [first, last]: without TAS, each user's own uid and gid (deployer_hub.identities)
    memory_limit: int | None = None
    pids_limit: int = 4096
    start_timeout: int = 180
    node_down_timeout: int = 15  # seconds a notebook's node may be down before its server counts as stopped
    offer_lab: bool = True
    cull_idle_timeout: int = 86400
    token_root: str = ""
    managed_root: str = ""
    constraints: list[str] = field(default_factory=lambda: ["node.labels.deployer.worker==true"])
    worker_label: str = "deployer.worker"  # the node label (value true) of this deployment's workers: where GPUs are looked for
    mount_guard: str | None = None  # the deployment whose mount guard mounts notebooks' storage (deployer_hub.mountguard)
    docker_host: str | None = None  # the Docker proxy's socket; None: the client's default
    guard: GuardSettings | None = None
    ca_config: str | None = None  # the Docker config with the tenant's CAs, attached to notebooks
    memory_guarantee: int | None = None
    cpu_limit: float | None = None
    cpu_guarantee: float | None = None
    profiles: list[ProfileSettings] = field(default_factory=list)  # empty: one kind of server, no form
    env: dict[str, str] = field(default_factory=dict)
    secret_env: dict[str, str] = field(default_factory=dict)  # variable -> the Docker secret holding its value
    allow_named_servers: bool = False
    named_server_limit: int = 0  # per user; 0: no limit
    project_mounts: ProjectMountSettings | None = None


@dataclass(frozen=True)
class Settings:
    deployment: str
    login: str
    tenant: TenantSettings
    oauth: OAuthSettings
    hub: HubSettings
    tas: TasSettings
    notebooks: NotebookSettings

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Settings":
        return _build(cls, data, "hub.json")


def _build(kind: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected an object, got {type(data).__name__}")
    hints = typing.get_type_hints(kind)
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{where}: unknown keys {', '.join(unknown)} (a hub.json from a newer deployer than this hub image?)")
    values = {}
    for name in known & set(data):
        hint = hints[name]
        inner = [a for a in typing.get_args(hint) if a is not type(None)] if isinstance(hint, types.UnionType) else [hint]
        target = inner[0] if len(inner) == 1 else None
        value = data[name]
        item = typing.get_args(target)[0] if typing.get_origin(target) is list else None
        if dataclasses.is_dataclass(target) and value is not None:
            value = _build(target, value, f"{where}/{name}")
        elif dataclasses.is_dataclass(item) and isinstance(value, list):
            value = [_build(item, entry, f"{where}/{name}/{index}") for index, entry in enumerate(value)]
        values[name] = value
    return kind(**values)
