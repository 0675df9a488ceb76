"""The life of a user's tokens on a real hub, against the tenant simulator: expiry recorded once and
refreshed in time, one refresh per expiry however many requests arrive together, token files that
can fail without breaking logins, TAS never on the page path, modes independent of the umask."""

from __future__ import annotations

import json
import stat
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from hub.flows import auth_state, login, tas_config
from hub.harness import HubProcess
from sim.tenant import TenantSimulator

pytestmark = pytest.mark.hub

CLASSES = {"agave": "AgaveOAuthenticator", "tapis": "TapisOAuthenticator"}
TOKEN_FILE = {"agave": ".agpy", "tapis": "tapis.json"}


@pytest.fixture
def short_tokens(sim: TenantSimulator):
    """Access tokens that live 10 s (restored afterwards: the simulator is shared by the module)."""
    before = sim.access_ttl
    sim.access_ttl = 10
    yield 10
    sim.access_ttl = before


def file_token(hub: HubProcess, flavour: str, user: str = "jdoe") -> tuple[str, dict]:
    data = json.loads((hub.workdir / "tokens" / "sim" / user / TOKEN_FILE[flavour]).read_text())
    record = data[0] if isinstance(data, list) else data
    return (record["token"] if flavour == "agave" else record["access_token"]), record


@pytest.mark.parametrize("flavour", ["agave", "tapis"])
def test_tokens_are_refreshed_before_they_expire_and_never_used_expired(flavour: str, start_hub, sim: TenantSimulator, short_tokens) -> None:
    cls = CLASSES[flavour]
    hub = start_hub(flavour, extra=f"c.{cls}.refresh_margin = 5\nc.{cls}.keep_fresh_interval = 0")
    browser, _ = login(hub, "JDoe", "pw-jdoe")
    expired_before, grants_before = sim.expired_uses("JDoe"), sim.refresh_grants("JDoe")
    seen: set[str] = set()
    deadline = time.monotonic() + 2.5 * short_tokens
    while time.monotonic() < deadline:
        assert browser.get("/hub/home").status_code == 200  # never sent back to the login page
        token, record = file_token(hub, flavour)
        issued_at, expires_at = sim.token_times(token)
        assert expires_at > time.time(), "the notebook's token file holds an expired token"
        # The files carry the tenant's issue time and the true expiry, not re-stamped copies.
        if flavour == "agave":
            assert abs(record["created_at"] - issued_at) <= 2 and record["expires_in"] == short_tokens
        else:
            assert record["expires_at"].startswith(time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(expires_at)))
        state = auth_state(hub, "jdoe")
        assert state["access_token"] != token or abs(state["expires_at"] - expires_at) <= 2  # the hub knows the real expiry
        seen.add(token)
        time.sleep(0.5)
    assert sim.expired_uses("JDoe") == expired_before, "the hub presented an expired token to the tenant"
    assert len(seen) >= 3 and sim.refresh_grants("JDoe") - grants_before >= 2  # refreshed before expiry, every time


def test_a_running_notebooks_tokens_are_kept_fresh_without_any_request(start_hub, sim: TenantSimulator, short_tokens) -> None:
    hub = start_hub("agave", extra="c.AgaveOAuthenticator.refresh_margin = 5\nc.AgaveOAuthenticator.keep_fresh_interval = 1")
    browser, _ = login(hub, "JDoe", "pw-jdoe")
    assert hub.api("POST", "/users/jdoe/server").status_code in (201, 202)
    for _ in range(100):
        if hub.api("GET", "/users/jdoe").json()["servers"].get("", {}).get("ready"):
            break
        time.sleep(0.2)
    grants = sim.refresh_grants("JDoe")
    deadline = time.monotonic() + 2.5 * short_tokens
    while time.monotonic() < deadline:  # the user does nothing; the notebook reads its file
        token, _ = file_token(hub, "agave")
        assert sim.token_times(token)[1] > time.time(), "the running notebook's token file expired"
        time.sleep(0.5)
    assert sim.refresh_grants("JDoe") - grants >= 2


@pytest.mark.parametrize("flavour", ["tapis", "agave"])
def test_parallel_requests_share_one_refresh(flavour: str, start_hub, sim: TenantSimulator) -> None:
    # Every check sees the token as expiring (margin > lifetime): each round needs exactly one refresh.
    hub = start_hub(flavour, extra=f"c.{CLASSES[flavour]}.refresh_margin = 10**6\nc.{CLASSES[flavour]}.keep_fresh_interval = 0")
    browser, _ = login(hub, "JDoe", "pw-jdoe")
    api_token = hub.api("POST", "/users/jdoe/tokens", json={"note": "parallel"}).json()["token"]
    cookies = dict(browser.cookies)

    def page(_: int) -> int:
        with httpx.Client(base_url=hub.url, cookies=cookies, follow_redirects=False, timeout=30) as client:
            return client.get("/hub/home").status_code

    def api(_: int) -> int:
        return httpx.get(f"{hub.url}/hub/api/user", headers={"Authorization": f"token {api_token}"}, timeout=30).status_code

    grants, refused = sim.refresh_grants("JDoe"), sim.refused_refreshes("JDoe")
    for _ in range(3):
        time.sleep(1.2)  # past auth_refresh_age: every request below asks for a refresh
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda i: (page if i % 2 else api)(i), range(6)))
        assert answers == [200] * 6, f"some requests were sent to log in again: {answers}"
    assert sim.refresh_grants("JDoe") - grants == 3  # exactly one refresh grant per expiry
    assert sim.refused_refreshes("JDoe") == refused  # no rotated refresh token was ever sent again


class BrokenShare:
    """The token share made unusable in one of the ways a real share breaks, and repaired again."""

    def __init__(self, tokens: Path, how: str):
        self.tokens, self.how = tokens, how
        self.mounted = False

    def _mount(self, *args: str) -> None:
        subprocess.run(["mount", *args], check=True, capture_output=True)

    def break_(self) -> str:
        """Break it; returns the error the hub log must name."""
        self.tokens.mkdir()
        if self.how == "replaced by a file":
            (self.tokens / "sim").write_text("not a directory")
            return f"could not be written to {self.tokens / 'sim'}: File exists"
        self._mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", str(self.tokens))
        self.mounted = True
        if self.how == "read-only":
            self._mount("-o", "remount,ro", str(self.tokens))
            return f"could not be written to {self.tokens}: Read-only file system"
        (self.tokens / "filler").write_bytes(b"\0" * (64 * 1024 - 4096))
        subprocess.run(["dd", "if=/dev/zero", f"of={self.tokens / 'rest'}", "bs=1k"], capture_output=True)  # full to the last block
        return "No space left on device"

    def repair(self) -> None:
        if self.how == "replaced by a file":
            (self.tokens / "sim").unlink()
        elif self.how == "read-only":
            self._mount("-o", "remount,rw", str(self.tokens))
        else:
            (self.tokens / "filler").unlink()
            (self.tokens / "rest").unlink()

    def close(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.tokens)], capture_output=True)


@pytest.mark.parametrize("how", ["replaced by a file", "read-only", "full"])
def test_token_share_failure_does_not_break_login_and_heals(how: str, start_hub, sim: TenantSimulator) -> None:
    hub = start_hub("agave", extra="c.AgaveOAuthenticator.refresh_margin = 10**6\nc.AgaveOAuthenticator.keep_fresh_interval = 0")
    share = BrokenShare(hub.workdir / "tokens", how)
    try:
        error = share.break_()
        browser, response = login(hub, "JDoe", "pw-jdoe")
        assert response.status_code == 302, response.text
        home = browser.get("/hub/home")
        assert home.status_code == 200
        assert "Your API tokens could not be placed in your notebook right now" in home.text
        log = hub.log_text()
        assert "Token files of jdoe could not be written to" in log and error in log  # the path and the error
        time.sleep(1.2)
        assert browser.get("/hub/home").status_code == 200  # a refresh while the share is broken keeps the session
        share.repair()
        time.sleep(1.2)
        home = browser.get("/hub/home")
        assert home.status_code == 200 and "could not be placed" not in home.text  # retried at the next refresh
        token, _ = file_token(hub, "agave")
        assert token == auth_state(hub, "jdoe")["access_token"]
    finally:
        share.close()


def test_token_directories_have_their_modes_whatever_the_umask(start_hub) -> None:
    hub = start_hub("agave", umask=0o077)
    login(hub, "JDoe", "pw-jdoe")
    tokens = hub.workdir / "tokens"
    assert stat.S_IMODE((tokens / "sim").stat().st_mode) == 0o711
    assert stat.S_IMODE(tokens.stat().st_mode) == 0o711
    assert stat.S_IMODE((tokens / "sim" / "jdoe").stat().st_mode) == 0o700
    for path in (tokens / "sim" / "jdoe").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_hanging_tas_never_slows_pages(start_hub, sim: TenantSimulator) -> None:
    sim.tas_mode, sim.tas_delay = "slow", 30
    try:
        hub = start_hub("agave", extra=tas_config(sim, timeout=3, extra="c.AgaveOAuthenticator.keep_fresh_interval = 0\n"))
        started = time.monotonic()
        browser, response = login(hub, "JDoe", "pw-jdoe")
        assert response.status_code == 302 and time.monotonic() - started < 2.5  # the login does not wait for TAS
        for _ in range(4):  # no identity is known; every page refreshes (auth_refresh_age = 1)
            time.sleep(1.1)
            started = time.monotonic()
            assert browser.get("/hub/home").status_code == 200
            assert time.monotonic() - started < 1.0
        browser.get("/hub/spawn/jdoe")
        started = time.monotonic()
        page = ""
        while time.monotonic() - started < 10 and "unavailable" not in page:
            page = browser.get("/hub/spawn-pending/jdoe").text
            time.sleep(0.3)
        assert "TAS, the TACC Accounting System, is unavailable right now" in page
        assert time.monotonic() - started < 3 + 3  # within tas_timeout (plus a page load)
    finally:
        sim.tas_mode = "up"


def test_tas_identity_found_after_login_owns_the_token_files(start_hub, sim: TenantSimulator) -> None:
    hub = start_hub("agave", extra=tas_config(sim, timeout=3, extra="c.AgaveOAuthenticator.keep_fresh_interval = 0\n"))
    login(hub, "JDoe", "pw-jdoe")
    directory = hub.workdir / "tokens" / "sim" / "jdoe"
    for _ in range(50):  # TAS is asked in the background after the login page
        if (directory / ".agpy").exists():
            break
        time.sleep(0.1)
    info = (directory / ".agpy").stat()
    assert (info.st_uid, info.st_gid) == (5001, 6001)
    assert (Path(hub.workdir) / "jupyterhub_identities.sqlite").exists()
