"""deployer_hub.projects against the tenant simulator's projects API, over HTTPS with the tenant's private CA
and a real access token, as the spawner fetches it."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from deployer_hub.projects import Project, ProjectsError, project_mounts, user_projects
from deployer_hub.settings import ProjectMountSettings
from sim.tenant import TenantSimulator
from sim.tls import server_tls

pytestmark = pytest.mark.local

CLIENT_ID = "hub-client"
CLIENT_SECRET = "hub-secret-0123456789"
CALLBACK = "http://127.0.0.1:9/hub/oauth_callback"  # never followed
HARVEY = {"id": "PRJ-1234", "name": "Hurricane Harvey field data"}
SHAKE = {"id": "PRJ-77", "name": "Shake table"}


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca_pem, server_context, _ = server_tls("127.0.0.1", tmp_path_factory.mktemp("tenant-tls"))
    return server_context, ssl.create_default_context(cadata=ca_pem)  # the client trusts only the tenant's CA


@pytest.fixture(scope="module")
def sim(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> Iterator[TenantSimulator]:
    with TenantSimulator(tenant_id="designsafe", ssl_context=tls[0]).start() as s:
        s.add_user("alice", "alice-pw", groups=["nheri"])
        s.add_user("bob", "bob-pw")
        s.add_client(CLIENT_ID, CLIENT_SECRET, CALLBACK)
        yield s


@pytest.fixture
def http(sim: TenantSimulator, tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10, verify=tls[1]) as client:
        yield client
    sim.projects_mode = "ok"
    sim.mangles.clear()


def agave_token(http: httpx.Client, sim: TenantSimulator, user: str = "alice") -> str:
    reply = http.post(f"{sim.agave_base_url}/token", data={"grant_type": "password", "username": user, "password": f"{user}-pw"},
                      auth=(CLIENT_ID, CLIENT_SECRET))
    assert reply.status_code == 200, reply.text
    return reply.json()["access_token"]


def tapis_token(http: httpx.Client, sim: TenantSimulator, user: str = "alice") -> str:
    reply = http.post(f"{sim.tapis_base_url}/v3/oauth2/tokens", json={"grant_type": "password", "username": user, "password": f"{user}-pw"},
                      auth=(CLIENT_ID, CLIENT_SECRET))
    assert reply.status_code == 200, reply.text
    return reply.json()["result"]["access_token"]["access_token"]


def fetcher(token: str, tls: tuple[ssl.SSLContext, ssl.SSLContext], *, timeout: float = 10) -> Any:
    """What the spawner gives user_projects: a GET with the user's token as Bearer, trusting the tenant's CA."""

    async def fetch(url: str) -> Any:
        async with httpx.AsyncClient(timeout=timeout, verify=tls[1]) as client:
            response = await client.get(url, headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})
            response.raise_for_status()
            return response.json()

    return fetch


def projects_of(sim: TenantSimulator, token: str, tls: tuple[ssl.SSLContext, ssl.SSLContext], *, username: str = "alice",
                timeout: float = 10, client_timeout: float = 10) -> list[Project]:
    settings = ProjectMountSettings(host_path="/corral/projects/{project_id}", container_path="/home/jupyter/projects", api_url=sim.projects_url)
    return asyncio.run(user_projects(settings, username=username, groups=[], fetch=fetcher(token, tls, timeout=client_timeout), timeout=timeout))


def test_the_api_wants_a_live_access_token(http: httpx.Client, sim: TenantSimulator) -> None:
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic YWxpY2U6YWxpY2UtcHc="}):
        reply = http.get(sim.projects_url, headers=headers)
        assert reply.status_code == 401 and reply.json()["fault"]["message"] == "Invalid Credentials"
        assert "invalid_token" in reply.headers["WWW-Authenticate"]
    token = agave_token(http, sim)
    assert http.get(sim.projects_url, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    sim.expire_access_tokens("alice")
    assert http.get(sim.projects_url, headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_a_refused_token_is_a_clear_error(http: httpx.Client, sim: TenantSimulator, tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    with pytest.raises(ProjectsError, match=r"refused your login \(HTTP 401\); log out and log in again") as refused:
        projects_of(sim, "stale-token-value", tls)
    assert "stale-token-value" not in str(refused.value)


@pytest.mark.parametrize("flavour", ["agave", "tapis"])
def test_membership_and_its_changes(http: httpx.Client, sim: TenantSimulator, tls: tuple[ssl.SSLContext, ssl.SSLContext], flavour: str) -> None:
    token = agave_token(http, sim) if flavour == "agave" else tapis_token(http, sim)
    sim.set_projects("alice", [SHAKE, HARVEY])
    sim.set_projects("bob", [{"id": "PRJ-9", "name": "Bob's"}])
    assert projects_of(sim, token, tls) == [Project("PRJ-1234", "Hurricane Harvey field data"), Project("PRJ-77", "Shake table")]
    sim.set_projects("alice", [SHAKE])  # removed from a project: the next call says so
    assert projects_of(sim, token, tls) == [Project("PRJ-77", "Shake table")]
    sim.set_projects("alice", [])
    assert projects_of(sim, token, tls) == []


def test_the_reply_becomes_mounts(http: httpx.Client, sim: TenantSimulator, tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    sim.set_projects("alice", [HARVEY, {"id": "PRJ-1", "name": "Hurricane Harvey: field data!"}, {"id": "../../etc", "name": "x"}])
    projects = projects_of(sim, agave_token(http, sim), tls)
    settings = ProjectMountSettings(host_path="/corral/projects/{project_id}", container_path="/home/jupyter/projects", mode="ro")
    assert [(m.source, m.target, m.read_only) for m in project_mounts(settings, projects)] == [
        ("/corral/projects/PRJ-1", "/home/jupyter/projects/hurricane-harvey-field-data", True),
        ("/corral/projects/PRJ-1234", "/home/jupyter/projects/hurricane-harvey-field-data-prj-1234", True),
    ]


@pytest.mark.parametrize("mode, message", [
    ("500", r"answered with an error \(HTTP 500\)"),
    ("garbage", "not JSON"),
])
def test_a_misbehaving_api_is_a_clear_error(http: httpx.Client, sim: TenantSimulator, tls: tuple[ssl.SSLContext, ssl.SSLContext],
                                            mode: str, message: str) -> None:
    token = agave_token(http, sim)
    sim.set_projects("alice", [HARVEY])
    sim.projects_mode = mode
    with pytest.raises(ProjectsError, match=message) as refused:
        projects_of(sim, token, tls)
    assert token not in str(refused.value) and "<html" not in str(refused.value)


def test_a_slow_api_times_out(http: httpx.Client, sim: TenantSimulator, tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    token = agave_token(http, sim)
    sim.set_projects("alice", [HARVEY])
    sim.projects_mode = "slow"
    sim.projects_delay = 2.0
    with pytest.raises(ProjectsError, match="did not answer within 0.5 seconds"):
        projects_of(sim, token, tls, timeout=0.5)  # user_projects' own bound
    with pytest.raises(ProjectsError, match="did not answer in time"):
        projects_of(sim, token, tls, client_timeout=0.5)  # the HTTP client's (httpx.ReadTimeout)
    assert projects_of(sim, token, tls) == [Project("PRJ-1234", "Hurricane Harvey field data")]  # slow is not broken


@pytest.mark.parametrize("body", [[], {"projects": None}, {"result": [{"id": "PRJ-1", "name": "x"}]}, "projects"])
def test_a_reply_of_another_shape_is_refused(http: httpx.Client, sim: TenantSimulator, tls: tuple[ssl.SSLContext, ssl.SSLContext],
                                            body: Any) -> None:
    token = agave_token(http, sim)
    sim.mangles["projects"] = lambda _: body
    with pytest.raises(ProjectsError, match="does not understand|not JSON"):
        projects_of(sim, token, tls)


def test_hostile_entries_are_skipped_over_http(http: httpx.Client, sim: TenantSimulator, tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    sim.set_projects("alice", [{"id": "../x", "name": "up"}, {"id": "a/b", "name": "s"}, {"id": 7, "name": "n"}, "PRJ-3",
                               {"id": "PRJ-5", "name": "\u202eevil\u0000"}, HARVEY])
    projects = projects_of(sim, agave_token(http, sim), tls)
    assert [p.id for p in projects] == ["PRJ-1234", "PRJ-5"]
    sim.set_projects("alice", [{"id": f"PRJ-{i}", "name": "x"} for i in range(1000)])
    with pytest.raises(ProjectsError, match="1000 projects"):
        projects_of(sim, agave_token(http, sim), tls)


def test_groups_in_the_profile_and_userinfo(http: httpx.Client, sim: TenantSimulator) -> None:
    agave = http.get(f"{sim.agave_base_url}/profiles/v2/me", headers={"Authorization": f"Bearer {agave_token(http, sim)}"})
    tapis = http.get(f"{sim.tapis_base_url}/v3/oauth2/userinfo", headers={"X-Tapis-Token": tapis_token(http, sim)})
    assert agave.json()["result"]["groups"] == ["nheri"] and tapis.json()["result"]["groups"] == ["nheri"]
    sim.set_groups("alice", ["nheri", "designsafe-admins"])
    try:
        again = http.get(f"{sim.agave_base_url}/profiles/v2/me", headers={"Authorization": f"Bearer {agave_token(http, sim)}"})
        assert again.json()["result"]["groups"] == ["nheri", "designsafe-admins"]
    finally:
        sim.set_groups("alice", ["nheri"])
    bob = http.get(f"{sim.agave_base_url}/profiles/v2/me", headers={"Authorization": f"Bearer {agave_token(http, sim, 'bob')}"})
    assert bob.json()["result"]["groups"] == []


def test_projects_mode_is_checked(sim: TenantSimulator) -> None:
    with pytest.raises(ValueError, match="projects_mode"):
        sim.projects_mode = "down"
