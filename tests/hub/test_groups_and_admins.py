"""The tenant's groups become JupyterHub groups at each login, and hub admins (admin_users,
admin_groups) get the admin panel, users and their servers, never another user's server, tenant
tokens or API tokens. A real JupyterHub, our authenticators, the tenant simulator."""

from __future__ import annotations

import pytest

from hub.flows import login
from sim.tenant import TenantSimulator

pytestmark = pytest.mark.hub

GROUPS = """
from deployer_hub.hubconfig import ADMIN_ROLE, ADMIN_SCOPES
c.{cls}.groups_claim = "groups"
c.{cls}.manage_groups = True
# as deployer_hub.hubconfig.apply sets it for admin_users: [boss] and admin_groups: [hub-admins]
c.JupyterHub.load_roles.append({{"name": ADMIN_ROLE, "scopes": ADMIN_SCOPES, "users": ["boss"], "groups": ["hub-admins"]}})
"""
#: What an admin must never hold: another user's server, their auth state (tenant tokens), tokens as them.
NEVER = ("access:servers", "tokens", "read:tokens", "admin:auth_state", "admin:users", "admin:server_state", "proxy", "shutdown", "shares")


def _xsrf(browser) -> dict[str, str]:
    browser.get("/hub/home")
    return {"X-XSRFToken": next((c.value for c in browser.cookies.jar if c.name == "_xsrf"), "")}


def _scopes(browser) -> set[str]:
    return set(browser.get("/hub/api/user", headers=_xsrf(browser)).json()["scopes"])


def _user(hub, name: str) -> dict:
    return hub.api("GET", f"/users/{name}").json()


@pytest.mark.parametrize("flavour", ["agave", "tapis"])
def test_groups_from_the_tenant_make_admins_and_follow_membership(flavour: str, start_hub, sim: TenantSimulator) -> None:
    cls = "AgaveOAuthenticator" if flavour == "agave" else "TapisOAuthenticator"
    hub = start_hub(flavour, extra=GROUPS.format(cls=cls))
    sim.set_groups("JDoe", ["hub-admins", "staff"])
    try:
        login(hub, "nouid", "pw-nouid")  # another user, whose data the admin must not reach
        browser, _ = login(hub, "JDoe", "pw-jdoe")
        assert sorted(_user(hub, "jdoe")["groups"]) == ["hub-admins", "staff"]
        assert browser.get("/hub/admin").status_code == 200  # the admin panel
        scopes = _scopes(browser)
        assert {"admin-ui", "list:users", "delete:servers", "start:servers"} <= scopes  # users and their servers
        assert not {s for s in scopes if s.startswith(NEVER) and not s.endswith("!user=jdoe")}, scopes  # (his own: as every user)
        assert browser.get("/hub/api/users", headers=_xsrf(browser)).status_code == 200
        assert browser.post("/hub/api/users/nouid/tokens", headers=_xsrf(browser), json={}).status_code == 403
        other = browser.get("/hub/api/users/nouid", headers=_xsrf(browser)).json()
        assert other["name"] == "nouid" and "auth_state" not in other

        sim.set_groups("JDoe", ["staff"])  # left the admins: not one from the next login on
        browser, _ = login(hub, "JDoe", "pw-jdoe")
        assert _user(hub, "jdoe")["groups"] == ["staff"]
        assert browser.get("/hub/admin").status_code == 403
        assert "admin-ui" not in _scopes(browser)
    finally:
        sim.set_groups("JDoe", [])


@pytest.mark.parametrize("claim", ["hub-admins", {"hub-admins": True}, [["hub-admins"]], ["hub-admins\n"], ["x"] * 501])
def test_a_hostile_groups_claim_gives_no_groups_and_never_admin(claim, start_hub, sim: TenantSimulator) -> None:
    hub = start_hub("agave", extra=GROUPS.format(cls="AgaveOAuthenticator"))
    sim.set_groups("JDoe", claim)
    try:
        browser, response = login(hub, "JDoe", "pw-jdoe")
        assert response.status_code == 302  # still logged in: groups only ever widen what a user may do
        assert "hub-admins" not in _user(hub, "jdoe")["groups"]
        assert browser.get("/hub/admin").status_code == 403
    finally:
        sim.set_groups("JDoe", [])
