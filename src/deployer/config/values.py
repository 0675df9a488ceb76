"""Single configuration values: each validator checks one value and fails with a message that
says what is wrong and what to write instead (the model turns it into ``file: scope/key``)."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any
from urllib.parse import urlsplit

from deployer_hub import mounts, netguard
from pydantic import BeforeValidator, PlainValidator, SecretStr
from pydantic_core import PydanticCustomError

from deployer.config.address import AddressError, HubAddress, is_hostname, is_ip

#: The OpenID Connect claim that names the user, unless oidc_username_claim says otherwise.
DEFAULT_USERNAME_CLAIM = "preferred_username"
#: Default and smallest sensible notebook_pids_limit.
DEFAULT_PIDS_LIMIT, MIN_PIDS_LIMIT = 4096, 64
#: The smallest uid/gid the hub accepts from TAS, unless tas_min_id says otherwise.
DEFAULT_TAS_MIN_ID = 1000
MAX_CLAIM_LENGTH = 128


def fail(message: str) -> None:
    raise PydanticCustomError("deployer", message)


# --- single values -------------------------------------------------------------------------

_IMAGE = re.compile(
    r"^(?:(?:[A-Za-z0-9-]+\.)*[A-Za-z0-9-]+(?::[0-9]+)?/)?"  # registry
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"  # path
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$"  # tag, digest
)
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_MEMORY_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
MIN_MEMORY = 6 * 1024**2  # Docker refuses smaller memory limits


def _hub_host(value: Any) -> str:
    if not isinstance(value, str):
        fail(f"must be a domain name such as jupyter.example.org, got {type(value).__name__}")
    try:
        return HubAddress.parse(value).netloc
    except AddressError as exc:
        fail(str(exc))
        raise  # unreachable


def _ssh_host(value: Any) -> str:
    if not isinstance(value, str) or not (is_hostname(value) or is_ip(value)):
        fail(f"must be a host name or IP address, got {value!r}")
    return value


def _private_ip(value: Any) -> str | None:
    if value is None:
        return None
    if not is_ip(str(value)):
        fail(f'must be an IPv4 or IPv6 address, got "{value}"')
    address = ipaddress.ip_address(str(value))
    if address.version == 6:
        # The swarm join target, the NFS export and the workers' fstab lines would each need the
        # address in [brackets]; until they do, say so instead of deploying "fd00::10:2377".
        fail(f'IPv6 addresses are not supported yet for private_ip (swarm and NFS traffic), got "{value}"; use the host\'s IPv4 address')
    return str(address)


def _image(value: Any) -> str:
    if not isinstance(value, str) or not _IMAGE.match(value):
        fail(f"not a valid Docker image reference: {value!r}; expected e.g. taccsciapps/jupyteruser-base:1.2.0")
    return value


def _identifier(value: Any) -> str:
    if not isinstance(value, str) or not _ID.match(value):
        fail(f"must be letters, digits, '.', '_' or '-' (at most 63), starting with a letter or digit, got {value!r}")
    return value


def _tenant_id(value: Any) -> str:
    value = _identifier(value)
    if value != value.lower():
        # The hub keeps each user's tokens under a directory named after the tenant id, and Tapis
        # tenant ids are lower case: 'MyTenant' validated and then every login failed.
        fail(f"must be lower case (tenant ids are; the hub names the token directory after it), got {value!r}: use {value.lower()!r}")
    return value


def _base_url(value: Any) -> str:
    if not isinstance(value, str):
        fail(f"must be a URL such as https://api.example.org, got {type(value).__name__}")
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        fail(f"must be an http(s) URL such as https://api.example.org, got {value!r}")
    if parts.query or parts.fragment:
        fail(f"must not have a query or fragment, got {value!r}")
    if parts.scheme == "http" and parts.hostname not in ("localhost",) and not parts.hostname.startswith("127."):
        fail(f"must use https (tokens and client secrets travel over it), got {value!r}")
    return value.rstrip("/")


_EMAIL = re.compile(r"^[^@\s:/]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")


def _email(value: Any) -> str | None:
    """A contact address (the ACME CA's expiry notices)."""
    if value is None:
        return None
    if not isinstance(value, str) or not _EMAIL.match(value.strip()):
        fail(f"must be an email address such as ops@example.org, got {value!r}")
    return value.strip()


def _query_url(value: Any) -> str | None:
    """An http(s) URL that carries no secret (a Prometheus to query): plain http is fine anywhere."""
    if value is None:
        return None
    if not isinstance(value, str) or urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).hostname:
        fail(f"must be an http(s) URL such as http://prometheus.example.org:9090, got {value!r}")
    return value.rstrip("/")


def _secret(value: Any) -> Any:
    if value is not None and not isinstance(value, (str, SecretStr)):
        # Never echo the value: YAML may have turned a password into a number or a date.
        fail("must be a string; quote the value in the YAML file so it is read exactly as written")
    if isinstance(value, str) and not value.strip():
        fail("must not be empty")
    return value


def parse_memory(value: Any) -> int | None:
    """Docker-style memory size (``3G``, ``512m``, ``2GiB`` or bytes) to bytes."""
    if value is None:
        return None
    if isinstance(value, bool):
        fail(f"must be a size such as 3G or 512M, got {value!r}")
    if isinstance(value, int):
        size = value
    else:
        match = _MEMORY.match(str(value))
        if not match or (match.group(3) and not match.group(2) and match.group(3).lower() != "b"):
            fail(f"must be a size such as 3G or 512M, got {value!r}")
        size = int(float(match.group(1)) * _MEMORY_UNITS[match.group(2).lower()])
    if size < MIN_MEMORY:
        fail(f"must be at least 6M (Docker's minimum), got {value!r}")
    return size


def _mount(value: Any) -> mounts.VolumeMount:
    try:
        return mounts.parse(value)
    except mounts.MountError as exc:
        fail(str(exc))
        raise  # unreachable; keeps type checkers content


def _posix_id(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        fail(f"must be a whole number, got {value!r}")
    if value == 0:
        fail("must not be 0: notebooks never run as root; use an unprivileged id such as 1000")
    if not 0 < value < 2**31:
        fail(f"must be between 1 and 2147483647, got {value}")
    return value


#: The least id notebook_uid_range may start at: below it are the system's and the image's own users.
MIN_RANGE_ID = 1000


def _uid_range(value: Any) -> tuple[int, int] | None:
    """notebook_uid_range: 'FIRST-LAST' (or [FIRST, LAST]), each user's own uid (and gid) from it."""
    if value is None:
        return None
    parts: list[Any]
    if isinstance(value, str) and value.count("-") == 1:
        parts = [p.strip() for p in value.split("-")]
        parts = [int(p) if p.isdigit() else p for p in parts]
    elif isinstance(value, list) and len(value) == 2:
        parts = value
    else:
        fail(f"must be FIRST-LAST, e.g. 200000-299999, got {value!r}")
    if not all(isinstance(p, int) and not isinstance(p, bool) for p in parts):
        fail(f"must be two whole numbers FIRST-LAST, e.g. 200000-299999, got {value!r}")
    first, last = parts
    if not MIN_RANGE_ID <= first <= last < 2**31 - 1:
        fail(f"must run from at least {MIN_RANGE_ID} up to at most 2147483646, FIRST not above LAST, got {first}-{last}")
    if first <= 65534 <= last:
        fail("must not include 65534 (nobody: what root is to an NFS server that squashes it); start above it, e.g. 200000-299999")
    return first, last


def _tas_min_id(value: Any) -> int:
    # Strict like the other ids: YAML's true is not 1 and 1.5 is not 1.
    if isinstance(value, bool) or not isinstance(value, int):
        fail(f"must be a whole number, got {value!r}")
    if value == 0:
        fail(f"must not be 0: uid/gid 0 is root and is never accepted from TAS; the default is {DEFAULT_TAS_MIN_ID}")
    if not 0 < value < 2**31:
        fail(f"must be between 1 and 2147483647, got {value}")
    return value


def _pids_limit(value: Any) -> int:
    # Strict: YAML's true is not 1. 0 means no limit; a small limit would stop the server itself.
    if isinstance(value, bool) or not isinstance(value, int):
        fail(f"must be a whole number of processes, got {value!r}")
    if value != 0 and not MIN_PIDS_LIMIT <= value <= 4_194_304:
        fail(f"must be 0 (no limit) or between {MIN_PIDS_LIMIT} and 4194304, got {value} (a notebook server alone runs dozens of threads)")
    return value


def _egress_targets(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        fail("must be a list of ADDRESS[/PREFIX][:PORT] entries, e.g. [10.1.0.0/16, db.example.org:5432]")
    found = []
    for index, item in enumerate(value):
        try:
            found.append(str(netguard.Target.parse(item)))
        except netguard.TargetError as exc:
            fail(f"entry {index + 1}: {exc}")
    return tuple(found)


#: notebook_network_subnet: from a /16 (65,533 addresses) to a /26 (61, a small test deployment).
SUBNET_PREFIXES = range(16, 27)
#: Private (RFC 1918) and shared (RFC 6598) ranges: a notebook network covering public addresses would hide them.
PRIVATE_RANGES = tuple(ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"))


def _subnet(value: Any) -> str | None:
    if value is None:
        return None
    example = "e.g. 10.128.0.0/19 (8,189 addresses)"
    if not isinstance(value, str) or "/" not in value:
        fail(f"must be an IPv4 network ADDRESS/PREFIX, {example}")
    try:
        network = ipaddress.IPv4Network(value.strip())
    except ValueError:
        try:
            loose = ipaddress.IPv4Network(value.strip(), strict=False)
        except ValueError:
            fail(f"must be an IPv4 network ADDRESS/PREFIX, {example}; got {value[:40]!r}")
        fail(f"{value.strip()} has bits set after its /{loose.prefixlen}: the network is {loose}")
    if network.prefixlen not in SUBNET_PREFIXES:
        fail(f"/{network.prefixlen} is outside /{SUBNET_PREFIXES[0]} (65,533 addresses) to /{SUBNET_PREFIXES[-1]} (61); a /19 holds 8,189")
    if not any(network.subnet_of(r) for r in PRIVATE_RANGES):
        fail(f"{network} is not a private range (inside 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 or 100.64.0.0/10): "
             "notebooks could not reach the public addresses it covers")
    return str(network)


def _egress_rules(value: Any) -> dict[str, bool]:
    if value is None:
        return dict(netguard.ALLOW_RULES)
    if not isinstance(value, dict):
        fail(f"must be a mapping of {', '.join(netguard.ALLOW_RULES)} to true or false")
    rules = dict(netguard.ALLOW_RULES)
    for key, allowed in value.items():
        if key not in netguard.ALLOW_RULES:
            fail(f"unknown rule {str(key)[:40]!r}; the rules are {', '.join(netguard.ALLOW_RULES)}")
        if not isinstance(allowed, bool):
            fail(f"{key} must be true or false, got {type(allowed).__name__}")
        rules[key] = allowed
    return rules


def _username_claim(value: Any) -> str:
    if not isinstance(value, str):
        fail(f"must be the name of a claim such as {DEFAULT_USERNAME_CLAIM} or email, got {type(value).__name__}")
    if not value:
        fail(f"must not be empty; leave the key out for the default {DEFAULT_USERNAME_CLAIM}")
    if len(value) > MAX_CLAIM_LENGTH:
        fail(f"must be at most {MAX_CLAIM_LENGTH} characters, got {len(value)}")
    if any(ch.isspace() for ch in value):
        fail(f"must not contain whitespace, got {value!r}")
    if not value.isprintable():
        fail(f"must be printable characters only, got {value!r}")
    return value


HubHost = Annotated[str, PlainValidator(_hub_host)]
Image = Annotated[str, PlainValidator(_image)]
Secret = Annotated[SecretStr, BeforeValidator(_secret)]
OptionalSecret = Annotated[SecretStr | None, BeforeValidator(_secret)]
Mount = Annotated[mounts.VolumeMount, PlainValidator(_mount)]
PosixId = Annotated[int | None, PlainValidator(_posix_id)]
UidRange = Annotated[tuple[int, int] | None, PlainValidator(_uid_range)]
MemorySize = Annotated[int | None, PlainValidator(parse_memory)]
