"""Server options on a real single-node swarm: profiles offered per user and group and enforced by the
hub, their image and resources in the service, admins, named servers, environment and secret
environment (issue 15). The deployment is the session's, with these keys added for this module."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from swarm.conftest import NAME, SHARE, USERS, Site, deploy_here, docker, mount_sources
from swarm.helpers import ARTIFACTS, CHROMIUM_ARGS, failure_message, http_login, notebook_container

pytestmark = pytest.mark.swarm

ALT_IMAGE = "deployer/jupyteruser-staff:0.2.0"  # another notebook image (the same content under a tag of its own)
LICENSE = "lic-S3CR3T-0123456789abcdef"
PROFILES = [
    {"name": "Standard", "description": "The usual server"},
    {"name": "Large memory", "description": "More memory and CPUs", "users": ["alice"],
     "memory_limit": "1536M", "memory_guarantee": "256M", "cpu_limit": 1.5, "cpu_guarantee": 0.25,
     "env": {"PROFILE_NAME": "large"}, "volume_mounts": [f"{SHARE}/scratch/{{username}}:/home/jupyter/scratch:rw",
                                                          # below the user's own directory, which her default server mounts writable
                                                          f"{SHARE}/data/{{tenant_id}}/{{username}}/big:/home/jupyter/big:rw"]},
    {"name": "Staff", "description": "Staff tools", "groups": ["staff"], "image": ALT_IMAGE},
]
OPTIONS = {
    "tenant_groups_claim": "groups",
    "admin_users": ["jdoe"],
    "notebook_profiles": PROFILES,
    "notebook_cpu_limit": 2,
    "notebook_memory_guarantee": "128M",
    "allow_named_servers": True,
    "named_server_limit_per_user": 2,
    "notebook_env": {"SITE_NOTICE": "hello from the operator"},
}


def _edit(path, scope: str, change) -> str:
    before = path.read_text()
    data = yaml.safe_load(before)
    change(data[scope])
    path.write_text(yaml.safe_dump(data))
    return before


@pytest.fixture(scope="module")
def options_hub(hub, site: Site) -> Iterator[Site]:
    """The session's hub with profiles, admins, named servers and environment; back as it was afterwards."""
    docker("tag", "deployer/jupyteruser:0.2.0", ALT_IMAGE)
    site.tenant.set_groups("jdoe", ["staff"])
    site.tenant.set_groups("alice", ["students", "staff members"])  # not "staff"
    scope = "jupyterhub.test.sim"
    configs, passwords = site.path / "site.configs", site.path / "site.passwords"

    def add_mount(stanza: dict) -> None:
        stanza.update(OPTIONS)
        stanza["volume_mounts"] = [*stanza["volume_mounts"], f"{SHARE}/data/{{tenant_id}}/{{username}}/{{servername}}:/home/jupyter/server:rw"]

    old_configs = _edit(configs, scope, add_mount)
    old_passwords = _edit(passwords, scope, lambda s: s.update({"notebook_secret_env": {"LICENSE_KEY": LICENSE}}))
    try:
        deploy_here(site.deployment())
        yield site
    finally:
        for user in ("jdoe", "alice"):
            for service in docker("service", "ls", "--filter", f"name={NAME}-nb-{user}", "--format", "{{.Name}}").split():
                docker("service", "rm", service, check=False)
        configs.write_text(old_configs)
        passwords.write_text(old_passwords)
        site.tenant.set_groups("jdoe", [])
        site.tenant.set_groups("alice", [])
        deploy_here(site.deployment())
        docker("rmi", ALT_IMAGE, check=False)


def _offered(page) -> list[str]:
    return [label.inner_text().split("\n")[0].strip() for label in page.locator("form .deployer-profile label").all()]


def _browser_login(p, user: str):
    chromium = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
    context = chromium.new_context(ignore_https_errors=True)
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto("https://127.0.0.1/hub/login")
    page.get_by_role("button", name="Sign in with sim").click()
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", USERS[user][0])
    page.locator("form [type=submit]").first.click()
    page.wait_for_url(re.compile(r"/hub/(spawn|home|spawn-pending)"), timeout=120_000)
    return chromium, page


def _service(user: str, server: str = "") -> dict:
    name = f"{NAME}-nb-{user}" + (f"--{server}" if server else "")
    return json.loads(docker("service", "inspect", name, "--format", "{{json .Spec}}"))


def _wait_gone(service: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while docker("service", "ls", "-q", "--filter", f"name={service}"):
        assert time.monotonic() < deadline, f"{service} is still there"
        time.sleep(1)


SERVER_ENV = ("import os\n"
              "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
              "    if b'jupyterhub-singleuser' in open(f'/proc/{pid}/cmdline', 'rb').read():\n"
              "        print(open(f'/proc/{pid}/environ').read().replace(chr(0), chr(10)))\n")


def _server_environment(container: str) -> list[str]:
    """The environment of the notebook server process (what the entrypoint exported), read as its own uid."""
    return docker("exec", container, "python3", "-c", SERVER_ENV).splitlines()


def _xsrf(browser: httpx.Client) -> str:
    browser.get("/hub/home")
    return next((c.value for c in browser.cookies.jar if c.name == "_xsrf"), "")


def test_the_form_offers_each_user_their_profiles_and_the_choice_shapes_the_service(options_hub: Site) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium, page = _browser_login(p, "jdoe")
        try:
            page.goto("https://127.0.0.1/hub/spawn")
            page.locator("form .deployer-profile").first.wait_for()
            assert _offered(page) == ["Standard", "Staff"]  # everyone's, and the staff group's
            assert page.locator("input[name=profile]").first.is_checked()  # the first allowed is the default
            page.screenshot(path=str(ARTIFACTS / "profiles-jdoe.png"))
        finally:
            chromium.close()
        chromium, page = _browser_login(p, "alice")
        try:
            page.goto("https://127.0.0.1/hub/spawn")
            page.locator("form .deployer-profile").first.wait_for()
            assert _offered(page) == ["Standard", "Large memory"]  # hers by name; "staff members" is not "staff"
            page.get_by_label("Large memory").check()
            page.locator("form [type=submit]").first.click()
            page.wait_for_url(re.compile(r"/user/alice/"), timeout=240_000)
            page.screenshot(path=str(ARTIFACTS / "profiles-alice-started.png"))
        finally:
            chromium.close()

    spec = _service("alice")
    task = spec["TaskTemplate"]
    assert task["ContainerSpec"]["Image"].split("@")[0] == "deployer/jupyteruser:0.2.0"
    assert task["Resources"]["Limits"]["MemoryBytes"] == 1536 * 1024**2
    assert task["Resources"]["Limits"]["NanoCPUs"] == 1_500_000_000
    assert task["Resources"]["Reservations"] == {"MemoryBytes": 256 * 1024**2, "NanoCPUs": 250_000_000}
    assert spec["Labels"]["deployer.profile"] == "Large memory"
    env = dict(item.split("=", 1) for item in task["ContainerSpec"]["Env"])
    assert env["PROFILE_NAME"] == "large" and env["SITE_NOTICE"] == "hello from the operator"
    targets = mount_sources(task["ContainerSpec"])
    assert targets["/home/jupyter/scratch"] == f"{SHARE}/scratch/alice"
    assert targets["/home/jupyter/server"] == f"{SHARE}/data/sim/alice"  # {servername}: none for the default server
    # The secret value: a Docker secret readable by her uid only, exported by the entrypoint; never in inspect.
    (secret,) = task["ContainerSpec"]["Secrets"]
    assert secret["File"] == {"Name": "deployer-env-LICENSE_KEY", "UID": "5003", "GID": "6003", "Mode": 0o400}
    container = notebook_container("alice", timeout=60)
    assert LICENSE not in docker("service", "inspect", f"{NAME}-nb-alice") + docker("inspect", container)
    assert f"LICENSE_KEY={LICENSE}" in _server_environment(container)
    # The plain keys for everyone, where the profile says nothing: notebook_cpu_limit stays below the profile's.
    assert docker("exec", container, "id", "-u") == "5003"


def test_the_default_profile_and_plain_resource_keys(options_hub: Site) -> None:
    """jdoe asks for nothing: the first profile he may use, with the deployment's own resource keys."""
    _stop_all("jdoe")
    _start("jdoe", {})
    spec = _service("jdoe")
    assert spec["Labels"]["deployer.profile"] == "Standard"
    resources = spec["TaskTemplate"]["Resources"]
    assert resources["Limits"]["NanoCPUs"] == 2_000_000_000 and resources["Limits"]["MemoryBytes"] == 1024**3  # notebook_cpu_limit, _memory_limit
    assert resources["Reservations"] == {"MemoryBytes": 128 * 1024**2}  # notebook_memory_guarantee
    _stop_all("jdoe")


@pytest.mark.parametrize(("form", "expected"), [
    ({"profile": "Staff"}, "You may not use the profile 'Staff'"),
    ({"profile": "Root access"}, "There is no profile 'Root access'"),
    ({"profile": "Standard", "image": "deployer/jupyterhub:0.2.0"}, "does not accept 'image'"),
    ({"profile": ["Standard", "Large memory"]}, "Choose exactly one profile"),
], ids=["another-users-profile", "unknown-profile", "an-image", "two-profiles"])
def test_a_forged_form_is_refused(options_hub: Site, form: dict, expected: str) -> None:
    _stop_all("alice")
    browser = http_login("alice")
    response = browser.post("/hub/spawn/alice", data={**form, "_xsrf": _xsrf(browser)})
    assert response.status_code == 403, response.status_code
    assert expected in failure_message(response.text), failure_message(response.text)
    assert not docker("service", "ls", "-q", "--filter", f"name={NAME}-nb-alice")


@pytest.mark.parametrize("options", [
    {"image": "deployer/jupyterhub:0.2.0"},
    {"profile": "Staff"},
    {"profile": "Standard", "extra_container_spec": {"privileged": True}},
], ids=["an-image", "another-users-profile", "a-container-spec"])
def test_a_forged_api_request_is_refused(options_hub: Site, options: dict) -> None:
    _stop_all("alice")
    browser = http_login("alice")
    response = browser.post("/hub/api/users/alice/server", headers={"X-XSRFToken": _xsrf(browser)}, json=options)
    assert response.status_code == 403, (response.status_code, response.text)
    time.sleep(2)
    assert not docker("service", "ls", "-q", "--filter", f"name={NAME}-nb-alice")


def test_an_admin_sees_users_and_stops_another_users_server(options_hub: Site) -> None:
    from playwright.sync_api import sync_playwright

    _stop_all("alice")
    alice = _start("alice", {"profile": "Standard"})  # (GET /hub/spawn shows her the form: it starts nothing)
    assert alice.get("/hub/admin").status_code == 403  # not an admin
    # (another user does not exist for her: 404, as JupyterHub answers whatever she may not see)
    assert alice.delete("/hub/api/users/jdoe/server", headers={"X-XSRFToken": _xsrf(alice)}).status_code in (403, 404)
    with sync_playwright() as p:
        chromium, page = _browser_login(p, "jdoe")
        try:
            page.goto("https://127.0.0.1/hub/admin")
            row = page.locator("tr", has_text="alice").first
            row.wait_for()
            assert page.locator("tr", has_text="jdoe").count() >= 1  # the admin sees the users
            row.get_by_role("button", name=re.compile("Stop Server", re.IGNORECASE)).click()
            _wait_gone(f"{NAME}-nb-alice")
            page.screenshot(path=str(ARTIFACTS / "admin-stopped-alice.png"))
        finally:
            chromium.close()


def test_named_servers_start_side_by_side(options_hub: Site) -> None:
    browser = http_login("jdoe")
    xsrf = _xsrf(browser)
    for server in ("exp1", "exp2"):
        response = browser.post(f"/hub/api/users/jdoe/servers/{server}", headers={"X-XSRFToken": xsrf}, json={"profile": "Staff"})
        assert response.status_code in (201, 202), response.text
    for server in ("exp1", "exp2"):
        _wait_running(f"{NAME}-nb-jdoe--{server}")
        spec = _service("jdoe", server)
        assert spec["Labels"]["deployer.server"] == server
        assert spec["TaskTemplate"]["ContainerSpec"]["Image"].split("@")[0] == ALT_IMAGE  # the staff profile's image
        mounts = mount_sources(spec["TaskTemplate"]["ContainerSpec"])
        assert mounts["/home/jupyter/server"] == f"{SHARE}/data/sim/jdoe/{server}"
    assert notebook_container("jdoe", "exp1") != notebook_container("jdoe", "exp2")
    # `deployer logs` finds a named server's log, and says so when the default server is not running
    cli = [str(Path(sys.executable).with_name("deployer")), "-i", "test", "-t", "sim", "logs", "--user", "jdoe", "-n", "50"]
    shown = subprocess.run([*cli, "--server", "exp2"], cwd=options_hub.path, capture_output=True, text=True, timeout=180)
    assert shown.returncode == 0 and "/user/jdoe/exp2/" in shown.stdout, shown.stderr[-2000:]
    missing = subprocess.run(cli, cwd=options_hub.path, capture_output=True, text=True, timeout=180)
    assert missing.returncode != 0 and f"jdoe has no notebook server in {NAME}" in missing.stderr, missing.stderr[-2000:]
    third = browser.post("/hub/api/users/jdoe/servers/exp3", headers={"X-XSRFToken": xsrf}, json={})
    assert third.status_code == 400 and "maximum of 2 named servers" in third.text, third.text  # named_server_limit_per_user
    _stop_all("jdoe")
    refused = browser.post("/hub/api/users/jdoe/servers/Big.Server", headers={"X-XSRFToken": xsrf}, json={})
    # Upper case (a second spelling of one directory): JupyterHub 6 refuses it as a new name itself (400); the
    # spawner's own check (403) covers names kept from older hubs.
    assert refused.status_code in (400, 403) and "Big.Server" in refused.text, refused.text
    assert not docker("service", "ls", "-q", "--filter", f"name={NAME}-nb-jdoe--")
    _stop_all("jdoe")


def test_leaving_a_group_takes_its_profile_away(options_hub: Site) -> None:
    options_hub.tenant.set_groups("jdoe", [])
    try:
        _stop_all("jdoe")
        browser = http_login("jdoe")  # groups are read at login
        page = browser.get("/hub/spawn")  # one profile left for him: no form, the spawn starts at once
        assert page.status_code == 302 and "/hub/spawn-pending/jdoe" in page.headers["location"], page.status_code
        _wait_running(f"{NAME}-nb-jdoe")
        assert _service("jdoe")["Labels"]["deployer.profile"] == "Standard"
        _stop_all("jdoe")
        browser = http_login("jdoe")
        response = browser.post("/hub/spawn/jdoe", data={"profile": "Staff", "_xsrf": _xsrf(browser)})
        assert response.status_code == 403 and "You may not use the profile 'Staff'" in failure_message(response.text)
    finally:
        options_hub.tenant.set_groups("jdoe", ["staff"])
        _stop_all("jdoe")


def _spawn_page(browser: httpx.Client, user: str, server: str, profile: str, timeout: float = 180) -> str:
    """Start a named server through its spawn page (the form's POST); 'running' or the failure the page shows."""
    response = browser.post(f"/hub/spawn/{user}/{server}", data={"profile": profile, "_xsrf": _xsrf(browser)})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if response.status_code >= 400:
            return failure_message(response.text)
        page = browser.get(f"/hub/spawn-pending/{user}/{server}")
        if page.status_code >= 400:
            return failure_message(page.text)
        if page.status_code == 302 and f"/user/{user}/{server}/" in page.headers.get("location", ""):
            return "running"
        time.sleep(1)
    raise AssertionError(f"{user}'s server {server} neither started nor failed within {timeout} s")


def _forget(browser: httpx.Client, user: str, server: str) -> None:
    response = browser.request("DELETE", f"/hub/api/users/{user}/servers/{server}", headers={"X-XSRFToken": _xsrf(browser)}, json={"remove": True})
    assert response.status_code in (202, 204), response.text


#: Where alice's links point: the worker's /, another user's files, another user's tokens.
LINKS = ("/", "../jdoe", f"{SHARE}/tokens/sim/jdoe")


def test_a_link_planted_from_inside_a_notebook_never_becomes_a_mount(options_hub: Site) -> None:
    """Issue 21: alice's default server sees her whole directory (/data/{username}/{servername} with no server
    name). From inside it she makes links where her named servers' and her profile's directories will be, then
    starts those servers: each start is refused on a page naming the mount, and no service is made. A directory
    swapped for a link under a running server is refused too when the engine starts its task again (the worker's
    mount guard opens the source at every start, not only the hub at the spawn)."""
    _stop_all("alice")
    browser = _start("alice", {"profile": "Standard"})
    container = notebook_container("alice", timeout=60)

    def as_alice(*argv: str) -> str:
        return docker("exec", "-u", "5003:6003", container, *argv)

    own = f"{SHARE}/data/sim/alice"
    try:
        for i, target in enumerate(LINKS):
            as_alice("ln", "-s", target, f"/home/jupyter/server/x{i}")  # (her default server's view of her directory)
            assert os.readlink(f"{own}/x{i}") == target
            page = _spawn_page(browser, "alice", f"x{i}", "Standard")
            assert "Your storage at /home/jupyter/server cannot be mounted" in page and f"{own}/x{i} is a symbolic link" in page, page
            assert not docker("service", "ls", "-q", "--filter", f"name={NAME}-nb-alice--x{i}")
            _forget(browser, "alice", f"x{i}")  # (a named server counts against the limit until it is removed)
        # The Large memory profile's mount (a directory already, from her earlier start: she replaces it).
        as_alice("sh", "-c", "rm -rf /home/jupyter/server/big && ln -s ../jdoe /home/jupyter/server/big")
        assert os.readlink(f"{own}/big") == "../jdoe"
        page = _spawn_page(browser, "alice", "y", "Large memory")
        assert "Your storage at /home/jupyter/big cannot be mounted" in page and f"{own}/big is a symbolic link" in page, page
        assert not docker("service", "ls", "-q", "--filter", f"name={NAME}-nb-alice--y")
        _forget(browser, "alice", "y")

        # A server that started with a real directory; then the directory becomes a link, and its task starts again.
        assert _spawn_page(browser, "alice", "z", "Standard") == "running"
        service = f"{NAME}-nb-alice--z"
        as_alice("sh", "-c", "mv /home/jupyter/server/z /home/jupyter/server/z.old && ln -s / /home/jupyter/server/z")
        tasks = lambda: dict(line.split("|", 1) for line in docker(  # noqa: E731 - task ID -> "state|error", newest first
            "service", "ps", service, "--no-trunc", "--format", "{{.ID}}|{{.CurrentState}}|{{.Error}}").splitlines())
        before = set(tasks())
        docker("service", "update", "--force", "--detach", service)  # what any restart of the task does: mount again, on its worker
        deadline = time.monotonic() + 120
        while True:  # until the new task (not one from before the update) is refused, or runs
            latest = next((state for task, state in tasks().items() if task not in before), "")
            if latest.startswith(("Rejected", "Failed")):
                break
            assert time.monotonic() < deadline and not latest.startswith("Running"), latest or "no new task"
            time.sleep(1)
        assert f"deployer mount guard refused {own}/z: {own}/z is a symbolic link" in latest, latest
        assert not docker("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={service}")
        docker("service", "rm", service)  # (the task was started again behind the hub's back: the hub saw it stop)
    finally:
        _stop_all("alice")
        for entry in os.listdir(own):
            if entry.startswith(("x", "z", "big", "y")) and os.path.islink(f"{own}/{entry}"):
                os.unlink(f"{own}/{entry}")
        os.makedirs(f"{own}/big", exist_ok=True)  # (as the hub made it, for a later start of the profile)
        os.chown(f"{own}/big", 5003, 6003)


def _start(user: str, options: dict) -> httpx.Client:
    browser = http_login(user)
    response = browser.post(f"/hub/api/users/{user}/server", headers={"X-XSRFToken": _xsrf(browser)}, json=options)
    assert response.status_code in (201, 202), response.text
    _wait_running(f"{NAME}-nb-{user}")
    return browser


def _wait_running(service: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = docker("service", "ps", service, "--filter", "desired-state=running", "--format", "{{.CurrentState}}", check=False)
        if states.startswith("Running"):
            return
        time.sleep(1)
    raise AssertionError(f"{service} is not running after {timeout} s")


def _stop_all(user: str) -> None:
    """Every server of the user stopped through the hub (named ones also removed: they count against the limit
    even when stopped), and their services gone."""
    browser = http_login(user)
    xsrf = _xsrf(browser)
    servers = browser.get(f"/hub/api/users/{user}").json().get("servers", {})
    for name in servers:
        if name:
            browser.request("DELETE", f"/hub/api/users/{user}/servers/{name}", headers={"X-XSRFToken": xsrf}, json={"remove": True})
        else:
            browser.delete(f"/hub/api/users/{user}/server", headers={"X-XSRFToken": xsrf})
    for service in docker("service", "ls", "--filter", f"name={NAME}-nb-{user}", "--format", "{{.Name}}").split():
        _wait_gone(service)
