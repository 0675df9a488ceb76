from __future__ import annotations

import pytest

from deployer_hub import tenants
from deployer_hub.tenants import Flavour


@pytest.mark.parametrize(
    ("tenant_id", "base_url"),
    [
        ("3dem", "https://api.3dem.org"),
        ("agave.prod", "https://public.agaveapi.co"),
        ("araport.org", "https://api.araport.org"),
        ("designsafe", "https://agave.designsafe-ci.org"),
        ("iplantc.org", "https://agave.iplantc.org"),
        ("irec", "https://irec.tenants.prod.tacc.cloud"),
        ("sd2e", "https://api.sd2e.org"),
        ("sgci", "https://sgci.tacc.cloud"),
        ("tacc.prod", "https://api.tacc.utexas.edu"),
        ("vdjserver.org", "https://vdj-agave-api.tacc.utexas.edu"),
    ],
)
def test_agave_tenants_have_their_documented_base_urls(tenant_id: str, base_url: str) -> None:
    tenant = tenants.lookup(tenant_id)
    assert tenant is not None and tenant.flavour is Flavour.AGAVE and tenant.base_url == base_url


def test_tacc_identity_tenants_are_marked() -> None:
    marked = {t for t, v in tenants.AGAVE_TENANTS.items() if v.tacc_identity}
    assert marked == {"designsafe", "sd2e", "tacc.prod"}
    assert tenants.lookup("tacc", "tapis").tacc_identity


def test_agave_endpoints() -> None:
    sd2e = tenants.lookup("sd2e")
    assert sd2e.url("authorize") == "https://api.sd2e.org/authorize"
    assert sd2e.url("token") == "https://api.sd2e.org/token"
    assert sd2e.url("userinfo") == "https://api.sd2e.org/profiles/v2/me"
    assert sd2e.url("clients") == "https://api.sd2e.org/clients/v2"


def test_tapis_endpoints_and_derived_base_url() -> None:
    tacc = tenants.lookup("tacc", Flavour.TAPIS)
    assert tacc.base_url == "https://tacc.tapis.io"
    assert tacc.url("authorize") == "https://tacc.tapis.io/v3/oauth2/authorize"
    assert tacc.url("token") == "https://tacc.tapis.io/v3/oauth2/tokens"
    assert tacc.url("userinfo") == "https://tacc.tapis.io/v3/oauth2/userinfo"
    assert tacc.url("clients") == "https://tacc.tapis.io/v3/oauth2/clients"
    # Any Tapis v3 tenant id resolves by the tapis.io pattern, but is not assumed to use TACC's IdP.
    other = tenants.lookup("a2cps", "tapis")
    assert other.base_url == "https://a2cps.tapis.io" and not other.tacc_identity


def test_default_flavour_prefers_agave_for_shared_ids() -> None:
    assert tenants.default_flavour("designsafe") is Flavour.AGAVE
    assert tenants.default_flavour("tacc") is Flavour.TAPIS
    assert tenants.default_flavour("unknown-tenant") is None
    assert tenants.lookup("unknown-tenant") is None
    assert tenants.lookup("designsafe", "tapis").base_url == "https://designsafe.tapis.io"


def test_oidc_has_no_fixed_paths() -> None:
    with pytest.raises(ValueError, match="discovery"):
        tenants.endpoint_url(Flavour.OIDC, "https://idp.example.org", "token")
    assert tenants.lookup("anything", Flavour.OIDC) is None


def test_trailing_slash_in_base_url_is_not_doubled() -> None:
    assert tenants.endpoint_url(Flavour.AGAVE, "https://x.org/", "token") == "https://x.org/token"
