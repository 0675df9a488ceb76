"""Each user's own uid without TAS (notebook_uid_range, issue 21): a deployment that ran everyone as the image's
1000:100 switches, and each user's own directories are re-owned to their own id once, at their next start; the
ids are kept across starts and a hub replacement. The session's hub, with TAS off for this module."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import httpx
import pytest
import yaml

from swarm.conftest import NAME, SHARE, Site, deploy_here, docker
from swarm.helpers import _stop, http_login, notebook_container, spawn

pytestmark = pytest.mark.swarm

SCOPE = "jupyterhub.test.sim"
RANGE = (300000, 300999)


def _configure(site: Site, **values) -> None:
    path = site.path / "site.configs"
    data = yaml.safe_load(path.read_text())
    for key, value in values.items():
        if value is None:
            data[SCOPE].pop(key, None)
        else:
            data[SCOPE][key] = value
    path.write_text(yaml.safe_dump(data))


@pytest.fixture(scope="module")
def shared_ids(hub, site: Site) -> Iterator[Site]:
    """The session's hub without TAS: every notebook runs as the image's 1000:100, as before the switch (the users'
    directories, made in the session's TAS-era by their TAS ids, are given to that shared id as such a hub would have
    made them; and back afterwards)."""
    before = (site.path / "site.configs").read_text()
    _configure(site, use_tas_uid=False, use_tas_gid=False)
    owned = [(f"{SHARE}/{kind}/sim/{user}", ids) for user, ids in (("jdoe", (5001, 6001)), ("alice", (5003, 6003))) for kind in ("data", "tokens")]
    for path, _ in owned:
        _chown_tree(path, 1000, 100)
    try:
        deploy_here(site.deployment())
        yield site
    finally:
        for user in ("jdoe", "alice"):
            _stop(user)
        (site.path / "site.configs").write_text(before)
        deploy_here(site.deployment())
        for path, (uid, gid) in owned:
            _chown_tree(path, uid, gid)


def _chown_tree(top: str, uid: int, gid: int) -> None:
    os.makedirs(top, exist_ok=True)
    for root, dirs, files in os.walk(top):
        for name in (".", *dirs, *files):
            os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)


def _login_when_the_hub_answers(user: str, timeout: float = 180) -> httpx.Client:
    """A login once the replaced hub answers again (its old container may answer, then stop, first)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            browser = http_login(user)
            if browser.get("/hub/api/user").status_code == 200:
                return browser
        except (httpx.HTTPError, KeyError):
            pass
        assert time.monotonic() < deadline, "the replaced hub did not log a user in"
        time.sleep(1)


def _ids(user: str) -> tuple[str, str]:
    container = notebook_container(user, timeout=60)
    return docker("exec", container, "id", "-u"), docker("exec", container, "id", "-g")


def _owners(top: str) -> set[tuple[int, int]]:
    found = set()
    for root, dirs, files in os.walk(top):
        for name in (".", *dirs, *files):
            info = os.lstat(os.path.join(root, name))
            found.add((info.st_uid, info.st_gid))
    return found


def test_switching_to_each_users_own_id_reowns_their_directories_once(shared_ids: Site) -> None:
    data, tokens = f"{SHARE}/data/sim", f"{SHARE}/tokens/sim"
    for user in ("jdoe", "alice"):  # before: one uid for everyone, so every user's files are everyone's
        assert spawn(http_login(user), user) == "ready"
        assert _ids(user) == ("1000", "100")
        docker("exec", notebook_container(user), "sh", "-c", f"mkdir -p /home/jupyter/permanent/work && echo {user} > /home/jupyter/permanent/work/mine.txt")
        _stop(user)
    assert os.stat(f"{data}/jdoe/work/mine.txt").st_uid == os.stat(f"{data}/alice/work/mine.txt").st_uid == 1000

    _configure(shared_ids, notebook_uid_range=f"{RANGE[0]}-{RANGE[1]}")
    deploy_here(shared_ids.deployment())  # the hub is replaced; nothing of the users is touched yet
    assert os.stat(f"{data}/jdoe/work/mine.txt").st_uid == 1000
    jdoe, alice = http_login("jdoe"), http_login("alice")  # (ids are given at login, in this order)
    for user, browser, own in (("jdoe", jdoe, RANGE[0]), ("alice", alice, RANGE[0] + 1)):
        assert spawn(browser, user) == "ready"
        assert _ids(user) == (str(own), str(own))
        # Everything in her own directories is hers now, her token files included; nothing is another user's.
        assert _owners(f"{data}/{user}") == {(own, own)}, _owners(f"{data}/{user}")
        assert {uid for uid, _ in _owners(f"{tokens}/{user}")} == {own}
        assert docker("exec", notebook_container(user), "cat", "/home/jupyter/permanent/work/mine.txt") == user
    assert os.stat(f"{data}/jdoe").st_mode & 0o007 == 0  # and alice's uid is no longer jdoe's: she cannot pass through

    # Once: a file of the old shared id placed in jdoe's directory after the switch stays as it is at her next start,
    # and her id is kept across starts and a replacement of the hub.
    late = f"{data}/jdoe/work/late.txt"
    with open(late, "w") as f:
        f.write("late")
    os.chown(late, 1000, 100)
    _stop("jdoe")
    hub_container = ("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={NAME}-hub")
    old = docker(*hub_container)
    docker("service", "update", "--force", "--detach", f"{NAME}-hub")
    deadline = time.monotonic() + 120
    while docker(*hub_container) in ("", old):  # (the old container answers until the swarm has stopped it)
        assert time.monotonic() < deadline, "the hub's container was not replaced"
        time.sleep(0.5)
    browser = _login_when_the_hub_answers("jdoe")
    assert spawn(browser, "jdoe") == "ready"
    assert _ids("jdoe") == (str(RANGE[0]), str(RANGE[0]))
    assert (os.stat(late).st_uid, os.stat(late).st_gid) == (1000, 100)
