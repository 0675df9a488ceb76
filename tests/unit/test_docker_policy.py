"""The Docker proxy's policy (deployer_hub.dockerpolicy), pure: the body the spawner sends passes, and each
class of body a compromised hub could send instead is refused, read as the engine reads it (one API version,
Go's case-insensitive key matching with Unicode folding, no defaults left to the engine). The same policy is
tested against the real engine through the proxy in tests/swarm/test_docker_proxy.py."""

from __future__ import annotations

import copy
import itertools
import json
from typing import Any

import pytest
from deployer_hub import dockerpolicy
from deployer_hub.dockerpolicy import Policy, Refused, check_service_spec, go_fold, parse_body, split_version
from proxyspec import body, notebook_service, policy, volume

DEPLOYMENT = "px"
SHARE = "/srv/deployer/px/share"
NETWORK = "px-net"
CONSTRAINT = "node.labels.deployer.worker.px==true"
NODE = "node.id=" + "=abcdefghijklmnopqrstuvwxy"  # a GPU server's pin: 25 characters of [0-9a-z]


def the_policy(**changes: Any) -> Policy:
    return Policy.from_json(json.dumps(policy(DEPLOYMENT, SHARE, network=NETWORK, constraint=CONSTRAINT, **changes)))


def spec(**kwargs: Any) -> dict:
    return body(notebook_service(DEPLOYMENT, SHARE, network=NETWORK, constraint=CONSTRAINT, **kwargs))


def refused(spec_body: Any, pol: Policy | None = None) -> str:
    with pytest.raises(Refused) as caught:
        check_service_spec(spec_body, pol or the_policy())
    return caught.value.reason


def at(obj: Any, path: str) -> Any:
    for key in path.split(".") if path else []:
        obj = obj[int(key)] if isinstance(obj, list) else obj[key]
    return obj


def test_the_spawners_service_passes() -> None:
    check_service_spec(spec(), the_policy())
    shared = volume(DEPLOYMENT, f"{SHARE}/shared", "/home/jupyter/shared", read_only=True)
    named = volume(DEPLOYMENT, f"{SHARE}/data/sim/jdoe/exp1", "/home/jupyter/permanent")  # a named server's directory
    check_service_spec(spec(mounts=[named, shared]), the_policy())
    gpu = spec()
    gpu["TaskTemplate"]["Placement"]["Constraints"].append(NODE)
    check_service_spec(gpu, the_policy())


# --- API versions ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1.41/services/create", "/v1.41/tasks", "/version", "/_ping"])
def test_the_one_version_and_the_unversioned_probes_pass(path: str) -> None:
    prefix, rest = split_version("GET" if "create" not in path else "POST", path)
    assert prefix + rest == path


@pytest.mark.parametrize("path", ["/v1.40/services/create", "/v1.24/services/create", "/v1.12/services/create", "/v1.041/services/create",
                                  "/v1.41.0/services/create", "/v01.41/services/create", "/v1/services/create", "/v1.42/services/create",
                                  "/v9.99/services/create", "/v./services/create", "/services/create"])
def test_any_other_version_or_none_is_refused(path: str) -> None:
    """Below 1.41 the engine drops CapabilityDrop, CapabilityAdd, Ulimits and Pids; other spellings of 1.41
    (1.041, 1.41.0) are the same version to the engine but not to a prefix check; no version is the engine's newest."""
    with pytest.raises(Refused, match="version"):
        split_version("POST", path)


def test_the_version_answer_names_no_newer_version_than_the_policy_reads() -> None:
    assert dockerpolicy.capped_version({"ApiVersion": "1.47", "MinAPIVersion": "1.24"}) == {"ApiVersion": "1.41", "MinAPIVersion": "1.24"}
    assert dockerpolicy.capped_version({"ApiVersion": "1.41"}) == {"ApiVersion": "1.41"}
    assert dockerpolicy.capped_version({"ApiVersion": "1.40"}) == {"ApiVersion": "1.40"}  # (then every request is refused)


# --- keys as Go reads them --------------------------------------------------------------------

#: Objects of the body the engine decodes into maps (keys kept exactly), not structs.
MAPS = {"Labels", "TaskTemplate.ContainerSpec.Labels", "TaskTemplate.ContainerSpec.Mounts.0.VolumeOptions.DriverConfig.Options"}


def struct_keys(obj: Any, path: str = "") -> list[tuple[str, str]]:
    """(path of an object the engine decodes into a struct, one of its keys), everywhere in the body."""
    found = []
    if isinstance(obj, dict):
        for key, value in obj.items():
            if path not in MAPS:
                found.append((path, key))
            found += struct_keys(value, f"{path}.{key}" if path else key)
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            found += struct_keys(value, f"{path}.{i}")
    return found


def folded_spellings(key: str) -> list[str]:
    """Other spellings Go's encoding/json reads as ``key``: another case, and U+017F / U+212A for s and k."""
    variants = {key.lower(), key.upper(), key.swapcase(), key[0].lower() + key[1:]}
    variants |= {key.replace(c, u, 1) for c, u in (("s", "\u017f"), ("S", "\u017f"), ("k", "\u212a"), ("K", "\u212a")) if c in key}
    return sorted(v for v in variants if v != key)


CASES = [(path, key, spelling) for path, key in struct_keys(spec()) for spelling in folded_spellings(key)]


def test_every_struct_key_of_the_body_has_folded_spellings_to_try() -> None:
    paths = {path for path, _, _ in CASES}
    assert {"", "TaskTemplate", "TaskTemplate.ContainerSpec", "TaskTemplate.Placement", "TaskTemplate.Resources.Limits",
            "TaskTemplate.ContainerSpec.Mounts.0", "TaskTemplate.ContainerSpec.Mounts.0.VolumeOptions.DriverConfig"} <= paths
    assert any("\u017f" in s for _, _, s in CASES) and any("\u212a" in s for _, _, s in CASES)


@pytest.mark.parametrize(("path", "key", "spelling"), CASES, ids=[f"{p or 'spec'}.{s}" for p, _, s in CASES])
def test_a_key_spelled_otherwise_than_its_field_is_refused_as_a_null_beside_it_or_in_its_place(path: str, key: str, spelling: str) -> None:
    """The engine would read it as the field (the last of several wins): a trailing null clears what the
    policy checked, a value in its place is one the policy never read."""
    beside = spec()
    at(beside, path)[spelling] = None
    assert "the same field to the engine" in refused(beside)
    instead = spec()
    obj = at(instead, path)
    obj[spelling] = obj.pop(key)
    assert "is not spelled as the field" in refused(instead)


def test_the_reported_attack_a_folded_null_constraints_key_is_refused() -> None:
    raw = json.dumps(spec()).encode()
    constraints = b'"Constraints": ["%s"]' % CONSTRAINT.encode()
    assert raw.count(constraints) == 1
    attack = parse_body(raw.replace(constraints, constraints + b', "Con\xc5\xbftraints": null'))  # (U+017F in UTF-8)
    assert attack["TaskTemplate"]["Placement"] == {"Constraints": [CONSTRAINT], "Con\u017ftraints": None}
    assert "the same field" in refused(attack)


def test_null_for_a_field_spelled_exactly_is_absent_as_in_go() -> None:
    plain = spec()
    plain["TaskTemplate"]["ContainerSpec"]["Privileges"] = None  # a field we never allow, null: its zero value
    plain["UpdateConfig"] = None
    check_service_spec(plain, the_policy())


def test_go_folding_is_what_the_engine_does() -> None:
    assert go_fold("Con\u017ftraints") == go_fold("constraints") == go_fold("CONSTRAINTS")
    assert go_fold("Mar\u212a") == go_fold("mark")
    assert go_fold("Name\u0130") != go_fold("namei")  # (dotted capital I has no simple fold to ASCII)


def test_repeated_keys_and_non_json_bodies_are_refused() -> None:
    for raw in (b'{"Name":"a","Name":"b"}', b'{"Name": NaN}', b"\xff\xfe{}", b'{"Name": "\xff"}'):
        with pytest.raises(Refused, match="not a JSON service spec"):
            parse_body(raw)


# --- who, where, what, how much -----------------------------------------------------------------


def changed(path: str, value: Any) -> dict:
    s = spec()
    *parents, last = path.split(".")
    obj = at(s, ".".join(parents))
    if value is DELETE:
        del obj[last]
    else:
        obj[int(last) if isinstance(obj, list) else last] = value
    return s


DELETE = object()
CONTAINER = "TaskTemplate.ContainerSpec"
MOUNT = f"{CONTAINER}.Mounts.0"
REFUSALS: dict[str, tuple[str, Any, str]] = {
    # the network guard firewalls only the containers its label names
    "no-guard-label": (f"{CONTAINER}.Labels", DELETE, "deployer.notebook=px"),
    "another-deployments-guard-label": (f"{CONTAINER}.Labels", {"deployer.notebook": "other"}, "deployer.notebook=px"),
    "other-labels-only": (f"{CONTAINER}.Labels", {"deployer.user": "jdoe"}, "deployer.notebook=px"),
    # who it runs as
    "no-user": (f"{CONTAINER}.User", DELETE, "uid:gid"),
    "bare-uid": (f"{CONTAINER}.User", "5001", "uid:gid"),
    "user-name": (f"{CONTAINER}.User", "jupyter:100", "uid:gid"),
    "root": (f"{CONTAINER}.User", "0:6001", "root"),
    "root-group": (f"{CONTAINER}.User", "5001:0", "root"),
    "below-the-uid-floor": (f"{CONTAINER}.User", "999:6001", "floors"),
    "below-the-gid-floor": (f"{CONTAINER}.User", "5001:99", "floors"),
    "a-sockets-group": (f"{CONTAINER}.User", "5001:998", "refused"),
    "nobody": (f"{CONTAINER}.User", "65534:6001", "refused"),
    "padded": (f"{CONTAINER}.User", " 5001:6001", "uid:gid"),
    "three-parts": (f"{CONTAINER}.User", "5001:6001:7", "uid:gid"),
    "huge-uid": (f"{CONTAINER}.User", "4294967296:6001", "floors"),
    "supplementary-groups": (f"{CONTAINER}.Groups", ["998"], "Groups"),
    # where it runs
    "no-placement": ("TaskTemplate.Placement", DELETE, "Placement must be an object"),
    "the-common-worker-label": ("TaskTemplate.Placement.Constraints", ["node.labels.deployer.worker==true"], "exactly"),
    "another-deployments-worker": ("TaskTemplate.Placement.Constraints", [CONSTRAINT, "node.hostname==their-worker"], "exactly"),
    "two-node-pins": ("TaskTemplate.Placement.Constraints", [CONSTRAINT, NODE, NODE.replace("a", "b")], "exactly"),
    "managers": ("TaskTemplate.Placement.Constraints", ["node.role==manager"], "exactly"),
    "preferences": ("TaskTemplate.Placement.Preferences", [{"Spread": {"SpreadDescriptor": "node.id"}}], "Preferences"),
    # what it mounts: only the mount guard's volumes, as configured
    "bind": (MOUNT, {"Type": "bind", "Source": f"{SHARE}/data/sim/jdoe", "Target": "/home/jupyter/permanent"}, "not allowed"),
    "tmpfs": (MOUNT, {"Type": "tmpfs", "Target": "/home/jupyter/permanent"}, "not allowed"),
    "local-driver": (f"{MOUNT}.VolumeOptions.DriverConfig.Name", "local", "DriverConfig.Name"),
    "copy-image-files": (f"{MOUNT}.VolumeOptions.NoCopy", False, "NoCopy"),
    "no-nocopy": (f"{MOUNT}.VolumeOptions.NoCopy", DELETE, "NoCopy"),
    "more-options": (f"{MOUNT}.VolumeOptions.DriverConfig.Options", {"source": f"{SHARE}/data/sim/jdoe", "o": "bind"}, "exactly"),
    "another-sources-volume": (f"{MOUNT}.Source", "px-mnt-00000000000000000000000000000000", "named for its source"),
    "outside-the-configuration": (f"{MOUNT}.VolumeOptions.DriverConfig.Options.source", f"{SHARE}/tokens/sim/bob", "Source must be"),
    "dot-dot": (f"{MOUNT}.VolumeOptions.DriverConfig.Options.source", f"{SHARE}/data/sim/jdoe/../../../tokens", "Source must be"),
    "elsewhere-in-the-container": (f"{MOUNT}.Target", "/etc", "is not where"),
    "volume-labels": (f"{MOUNT}.VolumeOptions.Labels", {"x": "y"}, "Labels"),
    "bind-options": (f"{MOUNT}.BindOptions", {"Propagation": "rshared"}, "BindOptions"),
    # how much: the deployment's limits, present
    "no-memory-limit": ("TaskTemplate.Resources.Limits.MemoryBytes", DELETE, "MemoryBytes must be set"),
    "zero-memory-limit": ("TaskTemplate.Resources.Limits.MemoryBytes", 0, "MemoryBytes must be set"),
    "more-memory": ("TaskTemplate.Resources.Limits.MemoryBytes", 2 * 1024**3, "MemoryBytes must be set"),
    "no-pids-limit": ("TaskTemplate.Resources.Limits.Pids", DELETE, "Pids must be set"),
    "no-resources": ("TaskTemplate.Resources", DELETE, "must be set"),
    "restarts": ("TaskTemplate.RestartPolicy.Condition", "any", "Condition must be none"),
    "no-restart-policy": ("TaskTemplate.RestartPolicy", DELETE, "RestartPolicy must be an object"),
    "vip": ("EndpointSpec.Mode", "vip", "dnsrr"),
    "capabilities-kept": (f"{CONTAINER}.CapabilityDrop", ["NET_RAW"], "ALL"),
    "command": (f"{CONTAINER}.Command", ["/bin/sh"], "Command"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_what_the_spawner_never_sends_is_refused(case: str) -> None:
    path, value, reason = REFUSALS[case]
    assert reason in refused(changed(path, value), the_policy(refused_gids=[998, 65534]))


def test_a_read_only_mount_stays_read_only() -> None:
    shared = volume(DEPLOYMENT, f"{SHARE}/shared", "/home/jupyter/shared", read_only=False)
    assert "ReadOnly must be true" in refused(spec(mounts=[shared]))
    # A user named like the read-only directory: the writable rule matches too, and read-only wins.
    pol = the_policy(mounts=[*policy(DEPLOYMENT, SHARE, network=NETWORK, constraint=CONSTRAINT)["mounts"],
                             {"source": f"{SHARE}/[a-z]+", "target": "/home/jupyter/own", "anchor": SHARE, "read_only": False}])
    assert "ReadOnly must be true" in refused(spec(mounts=[volume(DEPLOYMENT, f"{SHARE}/shared", "/home/jupyter/own")]), pol)


def test_a_target_mounted_twice_is_refused() -> None:
    twice = [volume(DEPLOYMENT, f"{SHARE}/data/sim/jdoe", "/home/jupyter/permanent"), volume(DEPLOYMENT, f"{SHARE}/data/sim/bob", "/home/jupyter/permanent")]
    assert "mounted twice" in refused(spec(mounts=twice))


def test_limits_are_required_only_where_the_deployment_sets_them() -> None:
    unlimited = changed("TaskTemplate.Resources", {"Limits": {"Pids": 4096}})
    check_service_spec(unlimited, the_policy(memory_limit=0))
    assert "NanoCPUs must be set" in refused(spec(), the_policy(nano_cpus_limit=2_000_000_000))


def test_every_refusal_class_also_holds_at_other_positions() -> None:
    """Not only the examples: a folded key anywhere in a list element, in every mount, and combined."""
    two = spec(mounts=[volume(DEPLOYMENT, f"{SHARE}/data/sim/jdoe", "/home/jupyter/permanent"),
                       volume(DEPLOYMENT, f"{SHARE}/shared", "/home/jupyter/shared", read_only=True)])
    for i, key in itertools.product((0, 1), ("ReadOnly", "Source", "Target")):
        s = copy.deepcopy(two)
        s["TaskTemplate"]["ContainerSpec"]["Mounts"][i][key.lower()] = None
        assert "the same field" in refused(s)
