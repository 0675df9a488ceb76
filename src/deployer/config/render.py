"""Showing a deployment to the operator: the merged configuration, secrets as ``***``."""

from __future__ import annotations

import json
from enum import Enum
from typing import Any

import yaml
from deployer_hub import tenants
from deployer_hub.mounts import VolumeMount
from pydantic import SecretStr

from deployer.config.loader import Deployment
from deployer.config.model import SECRET_KEYS
from deployer.config.sources import DEFAULT, DERIVED

REDACTED = "***"


def format_size(size: int) -> str:
    for unit, factor in (("T", 1024**4), ("G", 1024**3), ("M", 1024**2), ("K", 1024)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def _plain(key: str, value: Any, from_passwords: bool = False) -> Any:
    # A value from the passwords file is a secret whatever its key (put there by mistake or not), and so
    # is a secret's value under any other key.
    if key in SECRET_KEYS or isinstance(value, SecretStr) or (from_passwords and value is not None):
        return None if value is None else REDACTED
    if isinstance(value, VolumeMount):
        return str(value)
    if isinstance(value, list):
        return [_plain(key, v) for v in value]
    if isinstance(value, Enum):  # (a str enum such as Flavour is a str too: checked first)
        return value.value
    if key == "notebook_memory_limit" and isinstance(value, int):
        return format_size(value)
    if key == "jupyterhub_cert" and isinstance(value, str):
        return f"<PEM certificate, {len(value)} characters>"
    return value


def config_data(deployment: Deployment) -> dict[str, Any]:
    """The deployment as plain data with every secret replaced by ``***``."""
    config = deployment.config
    passwords = deployment.files.name(deployment.files.passwords) if deployment.files.passwords else None
    values = {key: _plain(key, getattr(config, key), _origin_file(deployment, key) == passwords) for key in type(config).model_fields}
    if config.login != "local-dev":  # what the hub will use, also where the files leave it to a default
        if values["jupyterhub_tenant_base_url"] is None:
            values["jupyterhub_tenant_base_url"] = config.tenant_info.base_url
        if values["tenant_type"] is None:
            values["tenant_type"] = config.flavour.value
    hosts = [
        {k: v for k, v in host.model_dump().items() if v is not None} for host in deployment.hosts
    ]
    return _redact({"deployment": str(deployment.target), "config": values, "hosts": hosts}, deployment.secrets)


def _redact(data: Any, secrets: frozenset[str]) -> Any:
    """A secret's value under any other key (a label, a mistaken key) is shown as *** too."""
    if isinstance(data, dict):
        return {k: _redact(v, secrets) for k, v in data.items()}
    if isinstance(data, list):
        return [_redact(v, secrets) for v in data]
    if isinstance(data, str) and any(secret in data for secret in secrets):
        return REDACTED
    return data


def _origin_file(deployment: Deployment, key: str) -> str | None:
    origin = deployment.origins.get(key)
    return origin.source if origin is not None else None


def _origin_comment(deployment: Deployment, key: str) -> str:
    origin = deployment.origins.get(key)
    if origin is None or origin.source == DEFAULT:
        return "default"
    if origin.source == DERIVED:
        return f"derived from {origin.scope}"
    return f"{origin.source}: {origin.scope}"


class _Dumper(yaml.SafeDumper):
    """Multi-line text (a PEM bundle) as a literal block, so the output stays YAML that reads back."""


_Dumper.add_representer(str, lambda dumper, text: dumper.represent_scalar(
    "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None))


def _dump(key: str, value: Any) -> list[str]:
    text = yaml.dump({key: value}, Dumper=_Dumper, default_flow_style=False, sort_keys=False, width=1000)
    return text.rstrip("\n").splitlines()


def to_yaml(deployment: Deployment) -> str:
    data = config_data(deployment)
    lines = [f"# merged configuration of {data['deployment']}; secrets shown as {REDACTED}", f"{data['deployment']}:"]
    for key, value in data["config"].items():
        if key == "tenant_type" and deployment.config.tenant_type is None:
            registered = tenants.default_flavour(deployment.config.tenant) is not None
            comment = "derived from the tenant registry" if registered else "default (the tenant is not in the registry)"
        else:
            comment = _origin_comment(deployment, key)
        dumped = _dump(key, value)
        if len(dumped) > 1:  # a block: the comment goes above it, not into its text
            lines.append(f"  # {key}: {comment}")
            lines += [f"  {line}" for line in dumped]
            continue
        lines.append(f"  {dumped[0]}  # {comment}")
    lines.append("hosts:")
    for host in data["hosts"]:
        origin = deployment.host_origins.get(host["host_id"])
        dumped = yaml.safe_dump([host], default_flow_style=False, sort_keys=False).rstrip("\n").splitlines()
        lines.append(f"  {dumped[0]}  # {origin.source}: {origin.scope}" if origin else f"  {dumped[0]}")
        lines += [f"  {line}" for line in dumped[1:]]
    return "\n".join(lines) + "\n"


def to_json(deployments: list[Deployment]) -> str:
    return json.dumps([config_data(d) for d in deployments], indent=2)
