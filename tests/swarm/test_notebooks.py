"""Notebooks on a real single-node swarm, end to end: browser login through the tenant
simulator, JupyterLab, files with the user's TAS identity, mounts, tokens, failures."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time

import httpx
import pytest

from swarm.conftest import NAME, SHARE, USERS, Site, docker, mount_sources, same_directory
from swarm.helpers import ARTIFACTS, CHROMIUM_ARGS, _redeploy, _stop, failure_message, http_login, notebook_container, spawn

pytestmark = pytest.mark.swarm

CELL = """import os, json
open('/home/jupyter/permanent/from-notebook.txt', 'w').write('written in JupyterLab')
try:
    open('/home/jupyter/shared/nope.txt', 'w')
    ro = 'writable'
except OSError as e:
    ro = type(e).__name__
from agavepy.agave import Agave
ag = Agave.restore()
print('RESULT' + json.dumps({'uid': os.getuid(), 'gid': os.getgid(), 'ro': ro, 'user': ag.username, 'token': ag._token}))
"""


def test_browser_login_jupyterlab_files_and_tokens(hub, site: Site) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        context = chromium.new_context(ignore_https_errors=True)
        page = context.new_page()
        page.set_default_timeout(60_000)
        page.goto(hub.url + "/")
        page.get_by_role("button", name="Sign in with sim").click()
        page.fill("input[name=username]", "jdoe")
        page.fill("input[name=password]", USERS["jdoe"][0])
        page.locator("form [type=submit]").first.click()
        page.wait_for_url(re.compile(r"/user/jdoe/lab"), timeout=240_000)
        # JupyterLab's first load fetches a few MB of assets: on a busy 2-core machine it can take a minute.
        page.locator('.jp-LauncherCard[data-category="Notebook"]').first.click(timeout=180_000)
        page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=120_000)  # the kernel is up and connected
        editor = page.locator(".jp-Notebook .jp-Cell .cm-content").first
        editor.click()
        page.keyboard.insert_text(CELL)
        page.keyboard.press("Shift+Enter")
        output = page.locator(".jp-OutputArea-output", has_text="RESULT").first
        try:
            output.wait_for(timeout=120_000)
            result = json.loads(output.inner_text().split("RESULT", 1)[1])
        finally:  # what the user saw, for the record and for debugging a failure
            page.screenshot(path=str(ARTIFACTS / "jupyterlab.png"))
            chromium.close()

    assert (result["uid"], result["gid"]) == (5001, 6001)  # the user's TAS identity
    assert result["ro"] in ("OSError", "PermissionError")  # the read-only mount refuses writes
    written = f"{SHARE}/data/sim/jdoe/from-notebook.txt"
    info = os.stat(written)
    assert (info.st_uid, info.st_gid) == (5001, 6001)
    assert open(written).read() == "written in JupyterLab"
    tokens = json.load(open(f"{SHARE}/tokens/sim/jdoe/current"))
    assert result["user"] == "jdoe" and result["token"] == tokens["access_token"]  # agavepy picked the hub's tokens up


def test_tapipy_in_the_container_reads_the_token_file(hub, site: Site) -> None:
    browser = http_login("jdoe")
    assert spawn(browser, "jdoe") == "ready"
    container = notebook_container("jdoe")
    # The hub writes tapis.json only for Tapis tenants; build one from the agave tokens to prove
    # the notebook image's tapipy loads it as documented (an offline JWT is what tapipy needs).
    script = (
        "import json, os\nfrom tapipy.tapis import Tapis\n"
        "cfg = json.load(open(os.environ['TAPIS_TOKEN_FILE']))\n"
        "t = Tapis(base_url=cfg['base_url'], tenant_id=cfg['tenant_id'], username=cfg['username'], access_token=cfg['access_token'])\n"
        "print(t.username, t.tenant_id, t.get_access_jwt() == cfg['access_token'])"
    )
    import jwt as pyjwt

    token = pyjwt.encode({"exp": int(time.time()) + 3600, "tapis/username": "jdoe", "tapis/tenant_id": "sim"}, "k" * 32, algorithm="HS256")
    tapis = {"base_url": site.tenant.tapis_base_url, "tenant_id": "sim", "username": "jdoe", "access_token": token, "refresh_token": "", "verify": True}
    path = f"{SHARE}/tokens/sim/jdoe/tapis.json"
    with open(path, "w") as handle:
        json.dump(tapis, handle)
    os.chown(path, 5001, 6001)
    os.chmod(path, 0o600)
    out = docker("exec", "-u", "5001:6001", container, "python3", "-c", script)
    assert out.split() == ["jdoe", "sim", "True"]


def test_two_users_get_separate_containers_and_mounts(hub) -> None:
    jdoe, alice = http_login("jdoe"), http_login("alice")
    assert spawn(jdoe, "jdoe") == "ready" and spawn(alice, "alice") == "ready"
    a, b = notebook_container("jdoe"), notebook_container("alice")
    assert a != b
    spec = json.loads(docker("service", "inspect", f"{NAME}-nb-alice", "--format", "{{json .Spec.TaskTemplate}}"))
    sources = mount_sources(spec["ContainerSpec"])
    assert not any("/jdoe" in s for s in sources.values()), sources
    assert sources["/home/jupyter/permanent"] == f"{SHARE}/data/sim/alice"
    assert same_directory(b, "/home/jupyter/permanent", f"{SHARE}/data/sim/alice")  # (the mount guard's mount is that directory)
    listing = docker("exec", b, "ls", "-la", "/home/jupyter/permanent")
    assert "from-notebook.txt" not in listing
    assert docker("exec", b, "id", "-u") == "5003"
    assert spec["Resources"]["Limits"]["MemoryBytes"] == 1024**3  # notebook_memory_limit: 1G
    assert spec["Placement"]["Constraints"] == [f"node.labels.deployer.worker.{NAME}==true"]  # this deployment's workers only
    assert spec["ContainerSpec"]["User"] == "5003:6003"
    # nor through the host path: it is simply not in her container
    result = subprocess.run(["docker", "exec", b, "ls", f"{SHARE}/data/sim/jdoe"], capture_output=True)
    assert result.returncode != 0


def test_hostile_username_gets_no_mount(hub) -> None:
    browser = http_login("../evil")
    assert browser.get("/hub/home").status_code != 200  # the login itself is refused
    assert not docker("service", "ls", "--filter", f"name={NAME}-nb-", "--format", "{{.Name}}").count("evil")
    data = f"{SHARE}/data/sim"
    assert not os.path.isdir(data) or not any("evil" in p for p in os.listdir(data))


def test_hub_restart_keeps_notebooks_running(hub) -> None:
    browser = http_login("jdoe")
    assert spawn(browser, "jdoe") == "ready"
    service = f"{NAME}-nb-jdoe"
    created = docker("service", "inspect", service, "--format", "{{.CreatedAt}}")
    container = notebook_container("jdoe")
    hub_container = ("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={NAME}-hub")  # the running one
    old_hub = docker(*hub_container)
    docker("service", "update", "--force", "--detach", f"{NAME}-hub")
    # Until the new hub's container runs: the old one answers until the swarm stops it (a few
    # seconds after the update: its proxy reaches it over loopback, not through Docker's DNS).
    deadline = time.monotonic() + 60
    while docker(*hub_container) in ("", old_hub):
        assert time.monotonic() < deadline, "the hub's container was not replaced"
        time.sleep(0.5)
    deadline = time.monotonic() + 120
    while not _healthy("https://127.0.0.1/hub/health"):
        assert time.monotonic() < deadline, "the restarted hub did not answer its health check"
        time.sleep(1)
    assert docker("service", "inspect", service, "--format", "{{.CreatedAt}}") == created
    assert notebook_container("jdoe") == container
    deadline = time.monotonic() + 60
    while browser.get("/user/jdoe/api/status").status_code != 200:  # the restarted hub found it and routes to it
        assert time.monotonic() < deadline, "the restarted hub did not route to the running notebook"
        time.sleep(1)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url, verify=False, timeout=5).status_code == 200
    except httpx.HTTPError:  # the old hub's container going away, the new one not listening yet
        return False


def test_a_server_stopped_and_started_again_is_found_at_its_new_address(hub) -> None:
    """Restarted within minutes without a hub restart: the hub's DNS cache (600 s TTL from Docker)
    must not send it to the old container's address (it did: the spawn failed after http_timeout)."""
    _stop("alice")  # a server of its own, whatever the tests before left running
    browser = http_login("alice")
    assert spawn(browser, "alice") == "ready"
    first = notebook_container("alice")
    _stop("alice")
    started = time.monotonic()
    assert spawn(http_login("alice"), "alice", timeout=90) == "ready"
    assert notebook_container("alice") != first
    assert time.monotonic() - started < 60


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ("jupyter_user_image=deployer/not-loaded:1", "The notebook image deployer/not-loaded:1 is not available on worker"),
        ("volume_mounts=['/srv/deployer-nowhere/{username}:/home/jupyter/x:rw']", "A storage directory for your server is missing on worker"),
    ],
    ids=["missing-image", "missing-bind-path"],
)
def test_failures_reach_the_spawn_page(hub, site: Site, overrides: str, expected: str) -> None:
    """What deploy cannot see (it checks images and the static part of every mount path) but a spawn
    meets: an image gone from the worker after deploy, a per-user directory outside the share missing."""
    _stop("alice")
    try:
        if "not-loaded" in overrides:  # on the worker at deploy (deploy refuses a missing image), gone by the spawn
            docker("tag", "deployer/jupyteruser:0.2.0", "deployer/not-loaded:1")
        else:
            os.makedirs("/srv/deployer-nowhere", exist_ok=True)  # the static part exists; alice's directory does not
        _redeploy(site, overrides)
        docker("rmi", "deployer/not-loaded:1", check=False)
        browser = http_login("alice")
        started = time.monotonic()
        page = spawn(browser, "alice", timeout=120)
        assert expected in failure_message(page), failure_message(page)
        assert time.monotonic() - started < 90  # a clear message, not a hang
    finally:
        try:  # (bounded: `docker service logs` can wait forever on a task the swarm is reaping)
            logs = subprocess.run(["docker", "service", "logs", f"{NAME}-hub"], capture_output=True, text=True, timeout=60)
            (ARTIFACTS / f"hub-{overrides.split('=')[0]}.log").write_text(logs.stdout + logs.stderr)
        except subprocess.TimeoutExpired:
            pass
        _redeploy(site, None)
        shutil.rmtree("/srv/deployer-nowhere", ignore_errors=True)


def test_idle_culling_and_the_classic_interface(hub, site: Site) -> None:
    _stop("alice")
    try:
        _redeploy(site, "cull_idle_notebook_timeout=20&notebook_offer_lab=false")
        browser = http_login("alice")
        assert spawn(browser, "alice") == "ready"
        landed = browser.get("/user/alice/", follow_redirects=True)
        assert landed.url.path == "/user/alice/tree", landed.url  # notebook_offer_lab: false
        deadline = time.monotonic() + 120
        while docker("service", "ls", "-q", "--filter", f"name={NAME}-nb-alice"):  # idle: culled
            assert time.monotonic() < deadline, "the idle server was not culled"
            time.sleep(2)
    finally:
        _redeploy(site, None)


def test_failed_spawns_leave_no_service_behind(hub) -> None:
    assert not docker("service", "ls", "-q", "--filter", f"name={NAME}-nb-alice")


def test_no_worker_available_is_explained(hub) -> None:
    # A worker that takes no new tasks (paused, or down) is what users meet; running notebooks stay.
    node = docker("info", "--format", "{{.Swarm.NodeID}}")
    _stop("alice")
    browser = http_login("alice")
    docker("node", "update", "--availability", "pause", node)
    try:
        page = spawn(browser, "alice", timeout=120)
        assert "No worker node can run your server right now" in failure_message(page)
    finally:
        docker("node", "update", "--availability", "active", node)


def test_plain_http_is_redirected_to_https_without_an_explicit_443(hub) -> None:
    answer = httpx.get("http://127.0.0.1/hub/login?next=%2Fhub%2F", follow_redirects=False, timeout=30)
    assert answer.status_code == 301 and answer.headers["location"] == "https://127.0.0.1/hub/login?next=%2Fhub%2F", answer.headers
