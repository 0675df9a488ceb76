"""Helpers the swarm tests share (kept out of any test module): a user's login without a browser, a spawn as
the spawn page does it, the notebook's container, the failure text a user reads, a redeploy with overrides, a
stop as the user does it, and the browser's arguments."""

from __future__ import annotations

import html
import os
import re
import time
from pathlib import Path

import httpx

from sim.tenant import complete_login
from swarm.conftest import NAME, USERS, Site, deploy_here, docker

ARTIFACTS = Path(os.environ.get("DEPLOYER_ARTIFACTS", "/tmp/deployer-artifacts"))
ARTIFACTS.mkdir(parents=True, exist_ok=True)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic"]


def notebook_container(user: str, server: str = "", timeout: float = 30) -> str:
    """The container of the user's notebook service (a named server's, with ``server``) on this (single) node."""
    service = f"{NAME}-nb-{user}" + (f"--{server}" if server else "")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ids = docker("ps", "--filter", f"label=com.docker.swarm.service.name={service}", "--format", "{{.ID}}")
        if ids:
            return ids.splitlines()[0]
        time.sleep(0.5)
    raise AssertionError(f"no running container for {service}")


def http_login(user: str) -> httpx.Client:
    """Log a user in without a browser (same OAuth flow), returning a client with the hub cookies."""
    browser = httpx.Client(base_url="https://127.0.0.1", verify=False, follow_redirects=False, timeout=60)
    authorize = browser.get("/hub/oauth_login").headers["location"]
    with httpx.Client(verify=False, timeout=60) as idp:
        callback = complete_login(idp, authorize, user, USERS.get(user, ("pw-evil",))[0])
    browser.get(callback)
    return browser


def spawn(browser: httpx.Client, user: str, timeout: float = 180) -> str:
    """Ask for the server as the spawn page does; return 'ready' or the message the page shows."""
    browser.get(f"/hub/spawn/{user}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        page = browser.get(f"/hub/spawn-pending/{user}")
        if page.status_code >= 400:
            return page.text
        if page.status_code == 302 and f"/user/{user}/" in page.headers.get("location", ""):
            # Spawned: opening the server's page does its OAuth with the hub, then its API answers.
            browser.get(page.headers["location"], follow_redirects=True)
            if browser.get(f"/user/{user}/api/status").status_code == 200:
                return "ready"
        time.sleep(1)
    raise AssertionError(f"spawn of {user} neither finished nor failed within {timeout} s")


def failure_message(page: str) -> str:
    """The page's text as the user reads it (tags and script blocks removed)."""
    text = re.sub(r"<script.*?</script>|<style.*?</style>", "", page, flags=re.S)
    return html.unescape(" ".join(re.sub(r"<[^>]+>", " ", text).split()))


def _redeploy(site: Site, overrides: str | None) -> None:
    deploy_here(site.deployment(overrides))


def _stop(user: str) -> None:
    """Stop the user's server the way the user does (the hub's API with their session)."""
    browser = http_login(user)
    browser.get("/hub/home")  # sets the _xsrf cookie
    xsrf = next((c.value for c in browser.cookies.jar if c.name == "_xsrf"), "")
    response = browser.delete(f"/hub/api/users/{user}/server", headers={"X-XSRFToken": xsrf})
    assert response.status_code in (202, 204, 400), response.text  # 400: it was not running
    deadline = time.monotonic() + 60
    while docker("service", "ls", "-q", "--filter", f"name={NAME}-nb-{user}"):
        assert time.monotonic() < deadline, f"{user}'s server did not stop"
        time.sleep(0.5)
