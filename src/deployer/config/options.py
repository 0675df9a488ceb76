"""What users' servers may be: profiles, project mounts, environment, CPU values (issue 15's keys).

Each nested mapping is a model of its own with ``extra="forbid"``, so a misspelt key inside a profile
is reported at ``notebook_profiles/N/key`` like any other. Checks that involve other keys (groups
need a groups claim, mounts must not share a container path) live in :func:`cross_check`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from deployer_hub import mounts, paths
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, SecretStr

from deployer.config.values import Image, MemorySize, Mount, _base_url, fail

#: Variables the spawner, the hub or the image's entrypoint set: an operator's value would break them.
RESERVED_ENV = frozenset({"HOME", "USER", "LOGNAME", "PATH", "LD_PRELOAD", "NB_UID", "NB_GID", "TAS_HOMEDIRECTORY", "AGAVE_CACHE_DIR",
                          "TAPIS_TOKEN_FILE", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS",
                          "NVIDIA_VISIBLE_DEVICES"})
RESERVED_ENV_PREFIXES = ("JUPYTERHUB_", "JPY_", "DEPLOYER_", "NSS_WRAPPER_", "DOCKER_RESOURCE_")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
MAX_CPUS = 1024.0
MAX_GPUS = 64


def _env_name(name: Any) -> str:
    if not isinstance(name, str) or not _ENV_NAME.match(name):
        fail(f"{str(name)[:40]!r} is not an environment variable name (letters, digits and _, not starting with a digit)")
    if name.upper() in RESERVED_ENV or name.upper().startswith(RESERVED_ENV_PREFIXES):
        fail(f"{name} is set by the hub or the notebook image itself; choose another name")
    return name


def _env(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        fail("must be a mapping of variable names to values, e.g. {LICENSE_SERVER: 27000@lic.example.org}")
    found = {}
    for name, item in value.items():
        name = _env_name(name)
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            fail(f"{name}: must be a string (quote it), got {type(item).__name__}")
        if "\0" in str(item):
            fail(f"{name}: must not contain a NUL character")
        found[name] = str(item)
    return found


def _secret_env(value: Any) -> dict[str, SecretStr]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        fail("must be a mapping of variable names to secret values (in the passwords file)")
    found = {}
    for name, item in value.items():
        name = _env_name(name)
        if isinstance(item, SecretStr):
            item = item.get_secret_value()
        if not isinstance(item, str) or not item.strip():
            # Never echo the value: YAML may have made a number of a key.
            fail(f"{name}: must be a non-empty string; quote the value so it is read exactly as written")
        found[name] = SecretStr(item)
    return found


def _cpus(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        fail(f"must be a number of CPUs such as 2 or 0.5, got {value!r}")
    if not 0.01 <= value <= MAX_CPUS:
        fail(f"must be between 0.01 and {MAX_CPUS:g} CPUs, got {value}")
    return float(value)


def _gpus(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_GPUS:
        fail(f"must be a whole number of GPUs from 0 to {MAX_GPUS}, got {value!r}")
    return value


def _names(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        fail(f"must be a list of {what}, e.g. [{'jdoe, asmith' if what == 'usernames' else 'hpc-staff'}]")
    return tuple(v.strip() for v in value)


def _usernames(value: Any) -> tuple[str, ...]:
    names = _names(value, "usernames")
    for name in names:
        try:
            paths.safe_component(name)
        except paths.UnsafeName:
            fail(f"{name!r} is not a hub username (lower-case a-z, 0-9 and . _ @ + -)")
    return names


def _group_names(value: Any) -> tuple[str, ...]:
    names = _names(value, "group names")
    for name in names:
        if len(name) > 128 or not name.isprintable():
            fail(f"{name[:40]!r} is not a group name (printable, at most 128 characters)")
    return names


def _profile_name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 64 or not value.isprintable():
        fail(f"must be a name of 1 to 64 printable characters, shown on the spawn page, got {value!r}")
    return value.strip()


def _project_host_path(value: Any) -> str:
    try:
        return mounts.check_project_host_path(value)
    except mounts.MountError as exc:
        fail(str(exc))
        raise  # unreachable


def _container_dir(value: Any) -> str:
    try:
        mount = mounts.parse(f"/x:{value}:ro" if isinstance(value, str) else value)
    except mounts.MountError as exc:
        fail(str(exc).replace("container_path", "path"))
        raise  # unreachable
    if mount.variables:
        fail("must be a fixed path (each project appears below it, named after the project)")
    return mount.container_path


def _project_id(value: Any) -> str:
    # The hub's own rule (deployer_hub.projects.check_project): one component, case kept.
    if not paths.is_safe_keeping_case(value):
        fail(f"must be one path component (A-Z a-z 0-9 . _ @ + -, no '..'), got {value!r}")
    return value


Cpus = Annotated[float | None, PlainValidator(_cpus)]
Usernames = Annotated[tuple[str, ...], PlainValidator(_usernames)]
GroupNames = Annotated[tuple[str, ...], PlainValidator(_group_names)]
Env = Annotated[dict[str, str], PlainValidator(_env)]
SecretEnv = Annotated[dict[str, SecretStr], PlainValidator(_secret_env)]


class Profile(BaseModel):
    """One entry of ``notebook_profiles``."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    name: Annotated[str, PlainValidator(_profile_name)]
    description: str = Field(default="", max_length=500)
    image: Image | None = None
    memory_limit: MemorySize = None
    memory_guarantee: MemorySize = None
    cpu_limit: Cpus = None
    cpu_guarantee: Cpus = None
    gpus: Annotated[int, PlainValidator(_gpus)] = 0
    volume_mounts: list[Mount] = Field(default_factory=list)
    env: Env = Field(default_factory=dict)
    users: Usernames = ()
    groups: GroupNames = ()


class StaticProject(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, PlainValidator(_project_id)]
    name: str = Field(min_length=1, max_length=200)
    users: Usernames = ()
    groups: GroupNames = ()


class ProjectMounts(BaseModel):
    """``project_mounts``: each of the user's projects, mounted at every spawn."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host_path: Annotated[str, PlainValidator(_project_host_path)]
    container_path: Annotated[str, PlainValidator(_container_dir)] = "/home/jupyter/projects"
    mode: Literal["ro", "rw"] = "rw"
    projects: list[StaticProject] = Field(default_factory=list)
    api_url: Annotated[str | None, PlainValidator(lambda v: None if v is None else _base_url(v))] = None

    @property
    def static_host_dir(self) -> str:
        return mounts.VolumeMount(self.host_path, self.container_path, self.mode).static_host_dir


#: Keys of the nested mappings, for "did you mean" hints.
NESTED_KEYS = {"notebook_profiles": tuple(Profile.model_fields), "project_mounts": tuple(ProjectMounts.model_fields)}
