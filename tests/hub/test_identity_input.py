"""Tenant-supplied identity is untrusted input: usernames that would merge two accounts, tenant
replies that break their contract, unreachable tenants and unusable TAS records each get a clear
page, are logged once, and never merge accounts or start a notebook as root."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from hub.flows import CLIENT_SECRET, auth_state, logged_in, login, tas_config
from hub.harness import HubProcess
from sim.tenant import TenantSimulator
from sim.tls import server_tls

pytestmark = pytest.mark.hub

LOOKALIKES = ["Alice", "ALICE", " alice", "ａｌｉｃｅ", "\u212aate"]  # the last with a Kelvin sign: kate after NFKC + lower


@pytest.fixture(scope="module")
def people(sim: TenantSimulator):
    sim.add_user("alice", "pw-alice")
    sim.add_user("kate", "pw-kate")
    for name in LOOKALIKES:
        sim.add_user(name, "pw-other")


@pytest.mark.parametrize("flavour", ["agave", "tapis"])
def test_names_that_normalisation_would_change_are_refused_not_merged(flavour: str, start_hub, people) -> None:
    hub = start_hub(flavour, case_insensitive=False)
    browser, _ = login(hub, "alice", "pw-alice")
    assert logged_in(browser)
    token_file = hub.workdir / "tokens" / "sim" / "alice" / (".agpy" if flavour == "agave" else "tapis.json")
    alices_token = auth_state(hub, "alice")["access_token"]
    for name in LOOKALIKES:
        browser, response = login(hub, name, "pw-other")
        assert response.status_code == 403, (name, response.status_code)
        assert "cannot be used on this hub as it is" in response.text
        assert not logged_in(browser)
    users = sorted(u["name"] for u in hub.api("GET", "/users").json())
    assert users == ["alice"]  # no second account appeared, none was merged into alice
    assert alices_token in token_file.read_text()  # alice's files still hold alice's token


def test_a_tenant_declared_case_insensitive_folds_ascii_case_only(start_hub, people) -> None:
    hub = start_hub("agave", case_insensitive=True)
    browser, _ = login(hub, "Alice", "pw-other")
    assert logged_in(browser) and auth_state(hub, "alice")["tenant_username"] == "Alice"
    for name in ("ａｌｉｃｅ", " alice", "\u212aate"):  # width, spaces and compatibility characters are never folded
        browser, response = login(hub, name, "pw-other")
        assert response.status_code == 403, name


# --- tenant failures: each a clear page -----------------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mangled(kind: str, change):
    return lambda sim: sim.mangles.__setitem__(kind, change)


FAILURES = {
    # name: (flavour, extra config, how to break the simulator, expected status, words on the page)
    "connection refused": ("agave", 'c.AgaveOAuthenticator.token_url = "http://127.0.0.1:{closed}/token"', None, 503, "could not be reached (connection refused)"),
    "dns failure": ("agave", 'c.AgaveOAuthenticator.token_url = "http://tenant.invalid/token"', None, 503, "could not look up the address"),
    "tls failure": ("agave", 'c.AgaveOAuthenticator.token_url = "{tls_url}/agave/token"', None, 502, "could not make a trusted connection"),
    "profile without username": ("agave", "", _mangled("agave_profile", lambda b: {**b, "result": {"email": "x@example.org"}}), 502, "has no username"),
    "agave result not an object": ("agave", "", _mangled("agave_profile", lambda b: {**b, "result": ["<b>x</b>"]}), 502, "has no result object"),
    "tapis reply not an object": ("tapis", "", _mangled("tapis_token", lambda b: "[1, 2, 3]"), 502, "has no result object"),
    "tapis userinfo not an object": ("tapis", "", _mangled("tapis_userinfo", lambda b: "\"<script>x</script>\""), 502, "is not a JSON object"),
    "non-numeric expires_in": ("agave", "", _mangled("agave_token", lambda b: {**b, "expires_in": "soon"}), 502, "expires_in is not a number"),
    "token reply not json": ("agave", "", _mangled("agave_token", lambda b: "<html>maintenance</html>"), 502, "not JSON"),
}


@pytest.fixture(scope="module")
def tls_tenant(sim: TenantSimulator, tmp_path_factory):
    """The same tenant over HTTPS with a certificate from a CA the hub was not told about."""
    _, context, _ = server_tls("127.0.0.1", tmp_path_factory.mktemp("tls"))
    with TenantSimulator(tenant_id="sim", ssl_context=context).start() as other:
        yield other


@pytest.mark.parametrize("case", sorted(FAILURES))
def test_tenant_failures_at_login_are_clear_pages(case: str, start_hub, sim: TenantSimulator, tls_tenant, people) -> None:
    flavour, extra, breaks, status, words = FAILURES[case]
    hub = start_hub(flavour, extra=extra.format(closed=closed_port(), tls_url=tls_tenant.url))
    if breaks:
        breaks(sim)
    try:
        browser, response = login(hub, "alice", "pw-alice")
    finally:
        sim.mangles.clear()
    assert response.status_code == status, response.text[-400:]
    assert words in response.text
    assert "<script>x" not in response.text and "<b>x" not in response.text  # nothing from the tenant echoed unescaped
    assert not logged_in(browser)
    log = hub.log_text()
    assert "Traceback" not in log
    assert log.count("Login failed") + log.count("Refusing login") == 1  # logged once
    assert CLIENT_SECRET not in log and CLIENT_SECRET not in response.text


# --- TAS records ----------------------------------------------------------------------------

def spawn_page(hub: HubProcess, browser: httpx.Client, name: str) -> str:
    browser.get(f"/hub/spawn/{name}")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        model = hub.api("GET", f"/users/{name}").json()
        server = model["servers"].get("")
        if server and server.get("ready"):
            return "ready"
        if not model.get("pending") and not server:
            break
        time.sleep(0.2)
    return browser.get(f"/hub/spawn-pending/{name}").text


@pytest.mark.parametrize("field,value", [("uid", 0), ("uid", -1), ("uid", True), ("gid", 1.9), ("uid", "5001; rm"), ("uid", 999),
                                         ("homeDirectory", ["04", "x"]), ("homeDirectory", "04/../../etc")])
def test_unusable_tas_records_refuse_the_spawn(field: str, value, start_hub, sim: TenantSimulator, people) -> None:
    hub = start_hub("agave", extra=tas_config(sim, timeout=3))
    sim.tas_overrides["alice"] = {"uid": 5010, "gid": 6010, field: value}
    try:
        browser, _ = login(hub, "alice", "pw-alice")
        page = spawn_page(hub, browser, "alice")
    finally:
        sim.tas_overrides.clear()
    assert page != "ready"
    assert "TAS, the TACC Accounting System, gave your account a" in page
    assert not (hub.workdir / "spawned-alice.json").exists()  # nothing ran, certainly not as root


def test_tas_home_directory_keeps_its_case(start_hub, sim: TenantSimulator, people) -> None:
    hub = start_hub("agave", extra=tas_config(sim, timeout=3))
    sim.tas_overrides["alice"] = {"uid": 5010, "gid": 6010, "homeDirectory": "04/12345/JDoe"}
    try:
        browser, _ = login(hub, "alice", "pw-alice")
        assert spawn_page(hub, browser, "alice") == "ready"
    finally:
        sim.tas_overrides.clear()
    record = json.loads((hub.workdir / "spawned-alice.json").read_text())
    assert record["TAS_HOMEDIRECTORY"] == "04/12345/JDoe" and record["NB_UID"] == "5010"
