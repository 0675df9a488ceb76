"""The tenant's groups become JupyterHub groups at each login and make admins (admin_groups); hostile
group claims give no groups. A real JupyterHub, our authenticators, the tenant simulator."""

from __future__ import annotations

import pytest

from hub.flows import login
from sim.tenant import TenantSimulator

pytestmark = pytest.mark.hub

GROUPS = """
c.{cls}.groups_claim = "groups"
c.{cls}.manage_groups = True
c.{cls}.admin_groups = {{"hub-admins"}}
c.Authenticator.admin_users = {{"boss"}}
"""


def _user(hub, name: str) -> dict:
    return hub.api("GET", f"/users/{name}").json()


@pytest.mark.parametrize("flavour", ["agave", "tapis"])
def test_groups_from_the_tenant_make_admins_and_follow_membership(flavour: str, start_hub, sim: TenantSimulator) -> None:
    cls = "AgaveOAuthenticator" if flavour == "agave" else "TapisOAuthenticator"
    hub = start_hub(flavour, extra=GROUPS.format(cls=cls))
    sim.set_groups("JDoe", ["hub-admins", "staff"])
    browser, _ = login(hub, "JDoe", "pw-jdoe")
    user = _user(hub, "jdoe")
    assert sorted(user["groups"]) == ["hub-admins", "staff"] and user["admin"] is True
    assert browser.get("/hub/admin").status_code == 200  # the admin panel

    sim.set_groups("JDoe", ["staff"])  # left the admins: no longer one at the next login
    browser, _ = login(hub, "JDoe", "pw-jdoe")
    user = _user(hub, "jdoe")
    assert user["groups"] == ["staff"] and user["admin"] is False
    assert browser.get("/hub/admin").status_code == 403


@pytest.mark.parametrize("claim", ["hub-admins", {"hub-admins": True}, [["hub-admins"]], ["hub-admins\n"], ["x"] * 501])
def test_a_hostile_groups_claim_gives_no_groups_and_never_admin(claim, start_hub, sim: TenantSimulator) -> None:
    hub = start_hub("agave", extra=GROUPS.format(cls="AgaveOAuthenticator"))
    sim.set_groups("JDoe", claim)
    browser, response = login(hub, "JDoe", "pw-jdoe")
    assert response.status_code == 302  # still logged in: groups only ever widen what a user may do
    user = _user(hub, "jdoe")
    assert user["admin"] is False and "hub-admins" not in user["groups"]
    sim.set_groups("JDoe", [])
