"""What the hub may ask of the Docker engine: the Docker proxy's policy, read as the engine reads a request.

The proxy (:mod:`deployer_hub.dockerproxy`) frames HTTP; every decision is here, pure, so it can be tested
without an engine. Three rules make a check worth something against a hub that is compromised and talks
to the proxy itself rather than through the spawner:

* **One API version.** The engine serves every version from 1.12 to its own on the same socket and, for
  versions below 1.41, silently drops ``CapabilityAdd``/``CapabilityDrop``/``Ulimits`` and zeroes ``Pids``
  of a service spec. Only :data:`API_VERSIONS` pass (``/version`` tells the client no newer one), and a path
  without a version only for ``/_ping`` and ``/version``, which the engine would otherwise read as its newest.
* **Keys as Go reads them.** The engine decodes JSON with Go's ``encoding/json``, which matches an object's
  keys to a struct's fields case-insensitively, with Unicode simple folding (``ſ`` U+017F is ``s``, ``K``
  U+212A is ``k``), the last of several such keys winning. So a key must be spelled exactly as the field it
  sets; one that folds onto a field without being it, null or not, and two keys that fold alike, are refused.
  ``null`` for an exactly spelled field is read as absent, as Go does.
* **Nothing left to defaults.** Where the engine fills in a default (restart ``any``, a virtual IP, the
  image's user, no limits), the policy asks for the value it allows instead of accepting silence.

What a compromised hub can still do after this (the README's security section says the same):
  start and stop notebook services of this deployment, as the image allows, on this deployment's workers,
  with any user's directories and tokens mounted (the hub holds every user's tokens anyway), as any uid/gid
  at or above the floors except the refused ones, with up to the configured resources; read the nodes,
  and the deployment's own services, tasks, CA config and notebook secrets' metadata (never a secret's value).
It cannot: run another image, a command other than the image's entrypoint, a privileged or capable
container, a container without the network guard's label, as root or a socket's group, on another
deployment's nodes or the managers, with a published port, another network, a host path (only volumes of
this deployment's mount guard, which refuses any source reached through a link), a read-only mount
writable, or reach another deployment's services, secrets or configs. Standard library only.
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

from . import mountguard

#: The API versions whose service fields this policy reads (1.41: CapabilityDrop and Pids, Docker 20.10).
API_VERSIONS = ("1.41",)
_VERSION = re.compile(r"/v([0-9.]+)(?=/)")
#: Paths the engine answers the same in every version, allowed without one (docker-py asks /version first).
UNVERSIONED = {("GET", "/_ping"), ("HEAD", "/_ping"), ("GET", "/version")}

_ID = r"([A-Za-z0-9][A-Za-z0-9_.-]{0,127})"  # an object ID or name: no '/', no '%', never '..'
_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}")
_NODE_ID = re.compile(r"node\.id==([0-9a-z]{25})")
#: The network guard's container label (deployer_hub.netguard.LABEL; not imported: netguard is the guard image's program).
GUARD_LABEL = "deployer.notebook"


class Refused(Exception):
    """A request the policy does not allow: 403 with ``reason``."""

    def __init__(self, reason: str, status: int = 403) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


# --- the policy -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    service_prefix: str
    images: tuple[str, ...]
    network: str
    deployment: str = ""  # names the mount guard's volumes (mountguard.volume_name) and the guard label's value
    listen: str = "/run/deployer-proxy/docker.sock"
    upstream: str = "/var/run/docker.sock"
    config_prefix: str = ""  # empty: no configs in notebooks
    secret_prefix: str = ""  # empty: no secrets in notebooks
    mount_driver: str = ""  # the mount guard's volume driver; empty: no mounts
    mounts: tuple[mountguard.Rule, ...] = ()  # the mounts the configuration gives notebooks
    constraints: tuple[str, ...] = ()  # exactly these (and a GPU server's node.id==), a label unique to the deployment
    guard_label: str = ""  # the value of the guard's label every notebook container must carry; empty: not required
    min_uid: int = 1000  # the floors of a notebook's uid and gid (TAS's tas_min_id, the configured range, the image's 1000:100)
    min_gid: int = 100
    refused_gids: tuple[int, ...] = (65534,)  # groups that own a socket on a host, and nobody (root squash's)
    refused_uids: tuple[int, ...] = (65534,)
    memory_limit: int = 0  # the largest memory limit a server may have; 0: none required
    nano_cpus_limit: int = 0  # the largest CPU limit, in 1e-9 CPUs; 0: none required
    pids_limit: int = 0  # the most processes; 0: none required
    listen_mode: int = 0o600

    @classmethod
    def from_json(cls, text: str) -> Policy:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise TypeError("the policy must be a JSON object")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown policy keys: {', '.join(unknown)}")
        for key in ("images", "constraints"):
            if key in data:
                if not isinstance(data[key], list) or not all(isinstance(v, str) and v for v in data[key]):
                    raise ValueError(f"policy {key} must be a list of non-empty strings")
                data[key] = tuple(data[key])
        for key in ("refused_gids", "refused_uids"):
            if key in data:
                if not isinstance(data[key], list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in data[key]):
                    raise ValueError(f"policy {key} must be a list of numbers")
                data[key] = tuple(data[key])
        if "mounts" in data:
            if not isinstance(data["mounts"], list):
                raise ValueError("policy mounts must be a list of mount rules")
            data["mounts"] = tuple(mountguard.Rule.from_dict(r) for r in data["mounts"])
        if "listen_mode" in data and isinstance(data["listen_mode"], str):
            data["listen_mode"] = int(data["listen_mode"], 8)
        try:
            policy = cls(**data)
        except TypeError as exc:
            raise TypeError(f"policy: {exc}") from None
        policy.validate()
        return policy

    def validate(self) -> None:
        for key in ("service_prefix", "network", "listen", "upstream", "config_prefix", "secret_prefix", "deployment", "mount_driver", "guard_label"):
            if not isinstance(getattr(self, key), str):
                raise TypeError(f"policy {key} must be a string")
        for key in ("min_uid", "min_gid", "memory_limit", "nano_cpus_limit", "pids_limit"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"policy {key} must be a non-negative integer")
        if not self.service_prefix or not self.network or not self.images:
            raise ValueError("policy service_prefix, network and images are required")
        # Docker resolves a task filter that names no service as an ID prefix: a prefix that
        # cannot be part of an ID ([0-9a-z]) keeps that from reaching other services' tasks.
        if re.fullmatch(r"[0-9a-z]*", self.service_prefix):
            raise ValueError("policy service_prefix must contain a character other than 0-9 a-z (e.g. '-')")
        if self.mounts and not (self.mount_driver and self.deployment):
            raise ValueError("policy mounts need the mount guard's mount_driver and the deployment")
        if not self.constraints:
            raise ValueError("policy constraints are required (notebooks run on this deployment's workers only)")
        if self.min_uid < 1 or self.min_gid < 1:
            raise ValueError("policy min_uid and min_gid must be at least 1 (never root)")
        if not isinstance(self.listen_mode, int) or self.listen_mode & ~0o660:
            raise ValueError("policy listen_mode may give read/write to owner and group only")


def load_policy(path: str | None, text: str | None) -> Policy:
    """The policy file if given, else ``text`` (the JSON the proxy's environment holds)."""
    if path:
        with open(path, encoding="utf-8") as f:
            return Policy.from_json(f.read())
    if text:
        return Policy.from_json(text)
    raise ValueError("no policy")


# --- API versions and routes ------------------------------------------------------------------


def split_version(method: str, path: str) -> tuple[str, str]:
    """(the ``/vX.Y`` prefix, the path after it) of a request path, or raise Refused for a version this
    policy does not read, or a missing one where the engine would pick its newest."""
    match = _VERSION.match(path)
    if match is None:
        if (method, path) in UNVERSIONED:
            return "", path
        raise Refused(f"a request without an API version (only /v{'/v'.join(API_VERSIONS)}); the engine would read it as its newest")
    if match.group(1) not in API_VERSIONS:  # spelled exactly: 1.041 and 1.41.0 are 1.41 to the engine, and refused here
        raise Refused(f"API version {match.group(1)[:12]} (only {', '.join(API_VERSIONS)}: older versions drop fields this policy relies on)")
    return match.group(0), path[match.end():]


def capped_version(version: dict) -> dict:
    """The engine's ``/version`` answer, its ApiVersion no newer than this policy reads (docker-py then asks in it)."""
    engine = version.get("ApiVersion")
    if isinstance(engine, str) and _version_key(engine) > _version_key(API_VERSIONS[-1]):
        return {**version, "ApiVersion": API_VERSIONS[-1]}
    return version


def _version_key(text: str) -> tuple[int, ...]:
    return tuple(int(p) if p.isdigit() else 0 for p in text.split("."))


ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("GET", re.compile(r"/_ping"), "passthrough"),
    ("HEAD", re.compile(r"/_ping"), "passthrough"),
    ("GET", re.compile(r"/version"), "version"),
    ("GET", re.compile(r"/services"), "list_services"),
    ("POST", re.compile(r"/services/create"), "create_service"),
    ("GET", re.compile(rf"/services/{_ID}"), "inspect_service"),
    ("DELETE", re.compile(rf"/services/{_ID}"), "remove_service"),
    ("GET", re.compile(r"/tasks"), "list_tasks"),
    ("GET", re.compile(rf"/nodes/{_ID}"), "passthrough"),
    ("GET", re.compile(r"/nodes"), "passthrough"),
    ("GET", re.compile(rf"/configs/{_ID}"), "inspect_config"),
    ("GET", re.compile(rf"/secrets/{_ID}"), "inspect_secret"),
]


def route(method: str, path: str) -> tuple[str, str]:
    """The handler's name and the object named in the path ("" if none)."""
    for allowed_method, pattern, handler in ROUTES:
        match = pattern.fullmatch(path)
        if match and method == allowed_method:
            return handler, (match.group(1) if pattern.groups else "")
    raise Refused("")


def scoped_filters(query: dict[str, list[str]], key: str, prefix: str) -> None:
    """``filters`` must name services by ``key``, every one with ``prefix`` (filters of other
    keys only narrow the answer: Docker ANDs keys)."""
    raw = query.get("filters", [])
    if len(raw) != 1:
        raise Refused(f"needs filters with {key}={prefix}...")
    try:
        filters = json.loads(raw[0], object_pairs_hook=_no_duplicates)
    except ValueError:
        raise Refused("filters are not JSON (or repeat a key)") from None
    if not isinstance(filters, dict):
        raise Refused("filters are not a JSON object")
    if any(k != key and k.lower() == key for k in filters):  # the engine's filter names are case-sensitive; one spelling only
        raise Refused(f"filters spell {key} in another case")
    values = filters.get(key)
    names = list(values) if isinstance(values, (dict, list)) else []  # {"name": {"x": true}} or {"name": ["x"]}
    if not names or not all(isinstance(n, str) and n.startswith(prefix) for n in names):
        raise Refused(f"filters must name only services {prefix}... by {key}")


# --- reading a body as the engine does ------------------------------------------------------


def go_fold(key: str) -> str:
    """The key as Go's encoding/json compares it to a struct's (ASCII) field names: case-insensitively,
    with the two non-ASCII letters whose simple case folding reaches ASCII (U+017F long s, U+212A Kelvin)."""
    return "".join("s" if c == "\u017f" else "k" if c == "\u212a" else c.lower() if "A" <= c <= "Z" else c for c in key)


def parse_body(body: bytes) -> Any:
    """The JSON of a request body, as strictly as the engine could read it (UTF-8, no NaN, no repeated key)."""
    try:
        return json.loads(body.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Refused(f"the body is not a JSON service spec ({str(exc)[:80]})") from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    # Go keeps the last of repeated keys: one of each (struct objects are also checked for folded repeats).
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("repeated keys")
    return dict(pairs)


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _fields(obj: Any, allowed: set[str], where: str) -> dict:
    """``obj`` decoded into a Go struct: only ``allowed`` fields, each spelled exactly; returns them (null
    read as absent). A key that folds onto an allowed field but is spelled otherwise, or two keys that fold
    alike, are refused whatever their values; any other key only when it is not null (Go would set some
    field we do not allow; null leaves it at its zero value)."""
    if not isinstance(obj, dict):
        raise Refused(f"{where} must be an object")
    seen: dict[str, str] = {}
    for key in obj:
        folded = go_fold(key)
        if folded in seen:
            raise Refused(f"{where}: {seen[folded]!r} and {key!r} are the same field to the engine")
        seen[folded] = key
    spelled = {go_fold(a): a for a in allowed}
    found = {}
    for key, value in obj.items():
        if key in allowed:
            if value is not None:
                found[key] = value
        elif go_fold(key) in spelled:
            raise Refused(f"{where}.{key!r} is not spelled as the field {spelled[go_fold(key)]} the engine would read it as")
        elif value is not None:
            raise Refused(f"{where}.{key} is not allowed")
    return found


def _strings(obj: Any, where: str) -> list[str]:
    if not isinstance(obj, list) or not all(isinstance(v, str) for v in obj):
        raise Refused(f"{where} must be a list of strings")
    return obj


def _labels(obj: Any, where: str) -> dict[str, str]:
    if not isinstance(obj, dict) or not all(isinstance(v, str) for v in obj.values()):
        raise Refused(f"{where} must map names to strings")
    return obj


def _count(obj: Any, where: str) -> int:
    if not isinstance(obj, int) or isinstance(obj, bool) or obj < 0:
        raise Refused(f"{where} must be a non-negative integer")
    return obj


# --- POST /services/create ------------------------------------------------------------------


@dataclass
class Needs:
    """What a service spec names that only the engine can confirm."""

    networks: list[str] = field(default_factory=list)  # targets other than the policy's name
    configs: list[tuple[str, str]] = field(default_factory=list)  # (ConfigID, ConfigName)
    secrets: list[tuple[str, str]] = field(default_factory=list)  # (SecretID, SecretName)


def check_service_spec(spec: Any, policy: Policy) -> Needs:
    """Refuse anything in a ``POST /services/create`` body the spawner never sends."""
    needs = Needs()
    spec = _fields(spec, {"Name", "Labels", "TaskTemplate", "Mode", "EndpointSpec", "Networks"}, "spec")
    name = spec.get("Name")
    if not isinstance(name, str) or not name.startswith(policy.service_prefix):
        raise Refused(f"Name must start with {policy.service_prefix}")
    if "Labels" in spec:
        _labels(spec["Labels"], "Labels")
    _check_networks(spec.get("Networks"), policy, needs, "Networks")
    _check_mode(spec.get("Mode"))
    endpoint = _fields(spec.get("EndpointSpec"), {"Mode", "Ports"}, "EndpointSpec")
    if endpoint.get("Mode") != "dnsrr":
        raise Refused("EndpointSpec.Mode must be dnsrr")
    if endpoint.get("Ports"):
        raise Refused("EndpointSpec.Ports: no published ports")
    task = _fields(spec.get("TaskTemplate"), {"ContainerSpec", "Resources", "RestartPolicy", "Placement", "Networks"}, "TaskTemplate")
    _check_container(task.get("ContainerSpec"), policy, needs)
    _check_resources(task.get("Resources"), policy)
    _check_restart(task.get("RestartPolicy"))
    _check_placement(task.get("Placement"), policy)
    _check_networks(task.get("Networks"), policy, needs, "TaskTemplate.Networks")
    return needs


def _check_resources(resources: Any, policy: Policy) -> None:
    where = "TaskTemplate.Resources"
    resources = _fields(resources or {}, {"Limits", "Reservations"}, where)
    limits = _fields(resources.get("Limits", {}), {"NanoCPUs", "MemoryBytes", "Pids"}, f"{where}.Limits")
    for name, value in limits.items():
        _count(value, f"{where}.Limits.{name}")
    for name, value in _fields(resources.get("Reservations", {}), {"NanoCPUs", "MemoryBytes"}, f"{where}.Reservations").items():
        _count(value, f"{where}.Reservations.{name}")
    # The engine reads an absent limit (or 0) as none at all: where the deployment sets one, it must be there.
    for name, most in (("MemoryBytes", policy.memory_limit), ("NanoCPUs", policy.nano_cpus_limit), ("Pids", policy.pids_limit)):
        if most and not 0 < limits.get(name, 0) <= most:
            raise Refused(f"{where}.Limits.{name} must be set, from 1 to {most} (the deployment's largest)")


def _check_restart(restart: Any) -> None:
    where = "TaskTemplate.RestartPolicy"
    restart = _fields(restart, {"Condition", "Delay", "MaxAttempts", "Window"}, where)
    if restart.get("Condition") != "none":  # (absent, the engine restarts it forever)
        raise Refused(f"{where}.Condition must be none: a failed notebook is reported, not restarted")
    for key in ("Delay", "MaxAttempts", "Window"):
        if key in restart:
            _count(restart[key], f"{where}.{key}")


def _normal_constraint(text: str) -> str:
    return re.sub(r"\s", "", text)


def _check_placement(placement: Any, policy: Policy) -> None:
    where = "TaskTemplate.Placement"
    constraints = _strings(_fields(placement, {"Constraints"}, where).get("Constraints", []), f"{where}.Constraints")
    given = [_normal_constraint(c) for c in constraints]
    wanted = {_normal_constraint(c) for c in policy.constraints}
    extra = [c for c in given if c not in wanted]
    # A GPU server is pinned to the worker the hub chose; the deployment's own constraints still hold (ANDed).
    if not wanted <= set(given) or len(set(extra)) > 1 or (extra and not _NODE_ID.fullmatch(extra[0])):
        raise Refused(f"{where}.Constraints must be exactly {', '.join(policy.constraints)} (and a GPU server's node.id==)")


def _check_mode(mode: Any) -> None:
    if mode is None:
        return
    replicated = _fields(mode, {"Replicated"}, "Mode").get("Replicated")
    if replicated is None:
        raise Refused("Mode must be replicated")
    replicas = _fields(replicated, {"Replicas"}, "Mode.Replicated").get("Replicas", 1)
    if replicas != 1 or isinstance(replicas, bool):
        raise Refused("Mode.Replicated.Replicas must be 1")


def _check_networks(networks: Any, policy: Policy, needs: Needs, where: str) -> None:
    if networks is None:
        return
    if not isinstance(networks, list):
        raise Refused(f"{where} must be a list")
    for network in networks:
        target = _fields(network, {"Target"}, where).get("Target")  # no Aliases: a notebook could take the hub's name
        if not isinstance(target, str) or not target:
            raise Refused(f"{where}.Target must be a network")
        if target != policy.network:
            needs.networks.append(target)


_CONTAINER_KEYS = {"Image", "Command", "Args", "Env", "User", "Mounts", "Configs", "Secrets", "CapabilityDrop", "Labels", "Hostname", "Dir"}


def _check_container(container: Any, policy: Policy, needs: Needs) -> None:
    where = "TaskTemplate.ContainerSpec"
    container = _fields(container, _CONTAINER_KEYS, where)
    image = container.get("Image")
    if not isinstance(image, str) or not any(image == i or (image.startswith(i + "@") and _DIGEST.fullmatch(image[len(i):])) for i in policy.images):
        raise Refused(f"{where}.Image {image!r} is not an allowed image")
    if "Command" in container:  # dockerspawner sends null: the image's entrypoint always runs
        raise Refused(f"{where}.Command is not allowed")
    for key in ("Args", "Env"):
        if key in container:
            _strings(container[key], f"{where}.{key}")
    for key in ("Hostname", "Dir"):
        if key in container and not isinstance(container[key], str):
            raise Refused(f"{where}.{key} must be a string")
    labels = _labels(container.get("Labels", {}), f"{where}.Labels")
    if policy.guard_label and labels.get(GUARD_LABEL) != policy.guard_label:
        raise Refused(f"{where}.Labels must hold {GUARD_LABEL}={policy.guard_label}: the network guard firewalls only containers it names")
    _check_user(container.get("User"), policy, where)
    drop = _strings(container.get("CapabilityDrop"), f"{where}.CapabilityDrop") if "CapabilityDrop" in container else []
    if "ALL" not in (c.upper() for c in drop):
        raise Refused(f"{where}.CapabilityDrop must contain ALL")
    targets: set[str] = set()
    for i, mount in enumerate(container.get("Mounts") or []):
        target = check_mount(mount, policy, f"{where}.Mounts[{i}]")
        if target in targets:
            raise Refused(f"{where}.Mounts[{i}].Target {target} is mounted twice")
        targets.add(target)
    for i, config in enumerate(container.get("Configs") or []):
        needs.configs.append(_check_reference(config, "Config", policy.config_prefix, f"{where}.Configs[{i}]"))
    for i, secret in enumerate(container.get("Secrets") or []):
        needs.secrets.append(_check_reference(secret, "Secret", policy.secret_prefix, f"{where}.Secrets[{i}]"))


def _check_user(user: Any, policy: Policy, where: str) -> None:
    """uid:gid, both numbers at or above the deployment's floors, neither refused (absent, the engine runs the
    image's user, and a bare uid gets gid 0)."""
    if not isinstance(user, str):
        raise Refused(f"{where}.User must be uid:gid (absent, the image's user would run)")
    match = re.fullmatch(r"([0-9]{1,10}):([0-9]{1,10})", user)
    if match is None:
        raise Refused(f"{where}.User {user[:40]!r} must be uid:gid, both numbers (a bare uid runs as gid 0, a name as the image says)")
    uid, gid = int(match.group(1)), int(match.group(2))
    if uid == 0 or gid == 0:
        raise Refused(f"{where}.User {user!r}: never root (uid or gid 0)")
    if uid < policy.min_uid or gid < policy.min_gid or uid > 2**31 - 1 or gid > 2**31 - 1:
        raise Refused(f"{where}.User {user!r}: the uid must be from {policy.min_uid} and the gid from {policy.min_gid} (the deployment's floors)")
    if uid in policy.refused_uids or gid in policy.refused_gids:
        raise Refused(f"{where}.User {user!r}: that uid or gid is refused (it owns a host's socket, or is nobody)")


def check_mount(mount: Any, policy: Policy, where: str) -> str:
    """A volume of the deployment's mount guard for a source and target the configuration gives; its target."""
    mount = _fields(mount, {"Type", "Source", "Target", "ReadOnly", "VolumeOptions"}, where)
    target = mount.get("Target")
    if not mountguard.is_clean_absolute(target):
        raise Refused(f"{where}.Target must be a clean absolute path")
    if "ReadOnly" in mount and not isinstance(mount["ReadOnly"], bool):
        raise Refused(f"{where}.ReadOnly must be true or false")
    if mount.get("Type") != "volume" or not policy.mount_driver:
        # A bind's source is resolved by the engine, links and all, at every start; a local-driver volume can
        # bind any host path. Only the mount guard's volumes, which refuse sources reached through a link.
        raise Refused(f"{where}.Type {mount.get('Type')!r} is not allowed (only volumes of the mount guard {policy.mount_driver or '(none)'})")
    options = _fields(mount.get("VolumeOptions"), {"NoCopy", "DriverConfig"}, f"{where}.VolumeOptions")
    driver = _fields(options.get("DriverConfig"), {"Name", "Options"}, f"{where}.VolumeOptions.DriverConfig")
    if driver.get("Name") != policy.mount_driver:
        raise Refused(f"{where}.VolumeOptions.DriverConfig.Name must be {policy.mount_driver} (no other volume driver is allowed)")
    if options.get("NoCopy") is not True:  # else the engine copies the image's files into an empty source
        raise Refused(f"{where}.VolumeOptions.NoCopy must be true")
    opts = driver.get("Options")
    if not isinstance(opts, dict) or set(opts) != {mountguard.SOURCE_OPTION} or not isinstance(opts[mountguard.SOURCE_OPTION], str):
        raise Refused(f"{where}.VolumeOptions.DriverConfig.Options must be exactly {{{mountguard.SOURCE_OPTION}: PATH}}")
    source = opts[mountguard.SOURCE_OPTION]
    if mount.get("Source") != mountguard.volume_name(policy.deployment, source):
        raise Refused(f"{where}.Source must be the volume named for its source (mountguard.volume_name)")
    try:
        _, read_only = mountguard.placement(policy.mounts, source)
    except mountguard.Refused as exc:
        raise Refused(f"{where}: {exc}") from None
    if not any(r.matches_source(source) and r.matches_target(target) for r in policy.mounts):
        raise Refused(f"{where}.Target {target} is not where the configuration mounts {source}")
    if read_only and mount.get("ReadOnly") is not True:
        raise Refused(f"{where}.ReadOnly must be true: the configuration mounts {source} read-only")
    return posixpath.normpath(target)


def _check_reference(ref: Any, kind: str, prefix: str, where: str) -> tuple[str, str]:
    """A Config or Secret reference: its name below ``prefix``, its ID an ID (the engine's answer is compared
    with both before the create is forwarded), a secret's file a plain name under /run/secrets."""
    ref = _fields(ref, {f"{kind}ID", f"{kind}Name", "File"}, where)
    ref_id, name = ref.get(f"{kind}ID"), ref.get(f"{kind}Name")
    if not prefix or not isinstance(name, str) or not name.startswith(prefix):
        raise Refused(f"{where}.{kind}Name must start with {prefix or f'(no {kind.lower()}s allowed)'}")
    if not isinstance(ref_id, str) or not re.fullmatch(_ID, ref_id):
        raise Refused(f"{where}.{kind}ID must be an ID")
    file = _fields(ref.get("File"), {"Name", "UID", "GID", "Mode"}, f"{where}.File")
    if not isinstance(file.get("Name"), str):
        raise Refused(f"{where}.File.Name must be a path")
    if kind == "Secret" and "/" in file["Name"]:
        raise Refused(f"{where}.File.Name must be a file name under /run/secrets")
    return ref_id, name
