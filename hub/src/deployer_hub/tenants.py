"""The tenant registry: which OAuth server a tenant id means, and how to talk to it.

One place holds every tenant base URL and every endpoint path, so neither the CLI
nor the authenticators ever spell a URL themselves. Standard library only: the
operator's CLI imports this module too.

Three flavours of OAuth server exist:

* ``agave``: Agave v2 tenants behind the WSO2 gateway (``/authorize``, ``/token``,
  ``/profiles/v2/me``, ``/clients/v2``);
* ``tapis``: Tapis v3 tenants at ``https://<tenant_id>.tapis.io`` (``/v3/oauth2/...``);
* ``oidc``: any standard OpenID Connect provider, found by its discovery document.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Mapping


class Flavour(str, Enum):
    AGAVE = "agave"
    TAPIS = "tapis"
    OIDC = "oidc"


@dataclass(frozen=True)
class EndpointPaths:
    """Paths below a tenant's base URL, for one OAuth flavour."""

    authorize: str
    token: str
    userinfo: str
    clients: str


#: Endpoint paths by flavour. OIDC has none: its URLs come from discovery.
ENDPOINT_PATHS: Mapping[Flavour, EndpointPaths] = {
    Flavour.AGAVE: EndpointPaths(
        authorize="/authorize",
        token="/token",
        userinfo="/profiles/v2/me",
        clients="/clients/v2",
    ),
    Flavour.TAPIS: EndpointPaths(
        authorize="/v3/oauth2/authorize",
        token="/v3/oauth2/tokens",
        userinfo="/v3/oauth2/userinfo",
        clients="/v3/oauth2/clients",
    ),
}

#: Where an OIDC provider publishes its configuration, below its issuer URL.
OIDC_DISCOVERY_PATH = "/.well-known/openid-configuration"

#: TAS, the TACC Accounting System, used for POSIX uid/gid/home directory.
DEFAULT_TAS_BASE_URL = "https://tas.tacc.utexas.edu/api/v1"


@dataclass(frozen=True)
class Tenant:
    id: str
    flavour: Flavour
    base_url: str
    #: The tenant's identity provider is TACC's LDAP, so its usernames exist in TAS.
    tacc_identity: bool = False

    def url(self, endpoint: str) -> str:
        """Full URL of ``endpoint`` (``authorize``, ``token``, ``userinfo``, ``clients``)."""
        return endpoint_url(self.flavour, self.base_url, endpoint)


_AGAVE_TENANTS: dict[str, str] = {
    "3dem": "https://api.3dem.org",
    "agave.prod": "https://public.agaveapi.co",
    "araport.org": "https://api.araport.org",
    "designsafe": "https://agave.designsafe-ci.org",
    "iplantc.org": "https://agave.iplantc.org",
    "irec": "https://irec.tenants.prod.tacc.cloud",
    "sd2e": "https://api.sd2e.org",
    "sgci": "https://sgci.tacc.cloud",
    "tacc.prod": "https://api.tacc.utexas.edu",
    "vdjserver.org": "https://vdj-agave-api.tacc.utexas.edu",
}
_AGAVE_TACC_IDENTITY = frozenset({"designsafe", "sd2e", "tacc.prod"})

#: Tapis v3 tenants known to use TACC's identity provider. Any other Tapis v3
#: tenant id is accepted too: its base URL follows the ``tapis.io`` pattern.
_TAPIS_TACC_IDENTITY = frozenset({"tacc", "designsafe"})
TAPIS_DOMAIN = "tapis.io"

def tapis_base_url(tenant_id: str) -> str:
    return f"https://{tenant_id}.{TAPIS_DOMAIN}"


AGAVE_TENANTS: Mapping[str, Tenant] = {
    tid: Tenant(tid, Flavour.AGAVE, url, tid in _AGAVE_TACC_IDENTITY)
    for tid, url in _AGAVE_TENANTS.items()
}
TAPIS_TENANTS: Mapping[str, Tenant] = {
    tid: Tenant(tid, Flavour.TAPIS, tapis_base_url(tid), True)
    for tid in sorted(_TAPIS_TACC_IDENTITY)
}


def endpoint_url(flavour: Flavour, base_url: str, endpoint: str) -> str:
    paths = ENDPOINT_PATHS.get(Flavour(flavour))
    if paths is None:
        raise ValueError(f"{flavour.value} endpoints come from OIDC discovery, not from fixed paths")
    return base_url.rstrip("/") + getattr(paths, endpoint)


def default_flavour(tenant_id: str) -> Flavour | None:
    """The flavour a bare tenant id implies: Agave v2 first (the historic meaning), then Tapis v3."""
    if tenant_id in AGAVE_TENANTS:
        return Flavour.AGAVE
    if tenant_id in TAPIS_TENANTS:
        return Flavour.TAPIS
    return None


def lookup(tenant_id: str, flavour: Flavour | str | None = None) -> Tenant | None:
    """The standard tenant ``tenant_id`` of ``flavour`` (or of its default flavour), else None.

    Any Tapis v3 tenant id resolves, since Tapis derives base URLs from ids.
    """
    flavour = Flavour(flavour) if flavour is not None else default_flavour(tenant_id)
    if flavour is Flavour.AGAVE:
        return AGAVE_TENANTS.get(tenant_id)
    if flavour is Flavour.TAPIS:
        known = TAPIS_TENANTS.get(tenant_id)
        return known or Tenant(tenant_id, Flavour.TAPIS, tapis_base_url(tenant_id), False)
    return None


def standard_tenant_ids() -> list[str]:
    return sorted(set(AGAVE_TENANTS) | set(TAPIS_TENANTS))
