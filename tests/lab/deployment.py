"""The lab deployment as the lab tests drive it: its names and secrets, running the `deployer` CLI on
its site files, reading what plan and deploy print, and a user's browser session (an HTTP client that
logs in at the simulated tenant) with their notebook."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
from sim.tenant import complete_login

from lab.harness import Lab

DEPLOYER = str(Path(sys.executable).with_name("deployer"))
SCOPE = "jupyterhub.lab.sim"
NAME = "jupyterhub-lab-sim"
CLIENT = ("lab-hub", "S3CR3T-client-xyzzy")
TAS_ROLE = ("jhub-role", "S3CR3T-tas-plugh")
METRICS_TOKEN = "S3CR3T-metrics-scraper-token-0123456789"
USERS = {"jdoe": ("pw-jdoe", 5001, 6001), "bob": ("pw-bob", 5002, 6002)}

def text(result: subprocess.CompletedProcess) -> str:
    return result.stdout.decode(errors="replace").strip()


def deployer(site: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([DEPLOYER, "-i", "lab", "-t", "sim", *args], cwd=site, capture_output=True, text=True, timeout=timeout)


def row(output: str, host: str) -> str:
    """The host's row of the result table, its wrapped continuation lines joined."""
    outcomes = r"changed|unchanged|failed at [a-z' ,:]+?|failed|unreachable|not contacted|refused \(lock\)"
    match = re.search(rf"^{host}\s+\S+\s+({outcomes})\s+\d*\s+.*$(\n {{20,}}\S.*$)*", output, re.M)
    assert match, f"no result row for {host} in:\n{output}"
    return " ".join(match.group(0).split())


COMMAND = re.compile(r"^  (\S+): \$ (.*)$", re.M)


def commands_by_host(output: str) -> dict[str, list[str]]:
    """The command lines plan prints (stdout) and deploy reports as it runs them (stderr), per host."""
    found: dict[str, list[str]] = {}
    for host, line in COMMAND.findall(output):
        found.setdefault(host, []).append(line)
    return found


def same_command(wanted: str, done: str) -> bool:
    """A planned line and a run one are the same command: a <placeholder> in the plan (a node ID, a secret's
    digest: made by an earlier phase) stands for one word; shell quoting aside."""
    if wanted == done:  # (the masked join token reads the same in both)
        return True
    pattern = re.sub(r"<[^>]*>", r"\\S+", re.escape(wanted.replace("'", "")).replace("\\ ", " "))
    return re.fullmatch(pattern, done.replace("'", "")) is not None


UNLESS = re.compile(r" \(unless [^()]*\)$")


def assert_ran_as_planned(planned: subprocess.CompletedProcess, ran: subprocess.CompletedProcess) -> dict[str, list[str]]:
    """deploy ran exactly the commands plan printed just before, in the same order on each host. A line
    plan marks "(unless ...)" is decided by the run (it depends on what an earlier phase makes): deploy
    may run it or not."""
    assert planned.returncode == 0, planned.stderr + planned.stdout
    assert ran.returncode == 0, ran.stderr + ran.stdout
    want, got = commands_by_host(planned.stdout), commands_by_host(ran.stderr)
    assert set(got) <= set(want), f"plan: {want}\ndeploy: {got}"
    for host, lines in want.items():
        done = list(got.get(host, []))
        report = f"{host}: plan printed\n" + "\n".join(lines) + "\ndeploy ran\n" + "\n".join(got.get(host, []))
        for wanted in lines:
            optional = UNLESS.search(wanted)
            wanted = UNLESS.sub("", wanted)
            if done and same_command(wanted, done[0]):
                done.pop(0)
            else:
                assert optional, report
        assert not done, report
    return got


def hub_container(lab: Lab) -> str:
    return text(lab.ssh("hub", f"docker ps -q --filter label=com.docker.swarm.service.name={NAME}-hub"))


def notebook_container(lab: Lab, user: str) -> tuple[str, str]:
    """(worker, container id) of the user's notebook, wherever the swarm put it. Asked of the swarm (the task
    it runs for the user's service), not of the workers' engines: a worker back from the dead may still hold
    a container of an earlier service of the same name until its engine cleans it up."""
    task = text(lab.ssh("hub", f"docker service ps {NAME}-nb-{user} --no-trunc --filter desired-state=running --format '{{{{.ID}}}} {{{{.Node}}}}'",
                        check=False)).split()
    if len(task) == 2 and task[1] in ("worker1", "worker2"):
        found = text(lab.ssh(task[1], f"docker ps -q --filter label=com.docker.swarm.task.id={task[0]}"))
        if found:
            return task[1], found
    raise AssertionError(f"no running notebook container of {user} on any worker")


def notebook_answers(browser: httpx.Client, user: str) -> bool:
    """Whether the user's server answers through the hub's proxy (doing its OAuth with the hub first)."""
    browser.get(f"/user/{user}/", follow_redirects=True)
    return browser.get(f"/user/{user}/api/status").status_code == 200


def http_login(hub: str, user: str) -> httpx.Client:
    browser = httpx.Client(base_url=f"https://{hub}", verify=False, follow_redirects=False, timeout=60)
    authorize = browser.get("/hub/oauth_login").headers["location"]
    with httpx.Client(verify=False, timeout=60) as idp:
        browser.get(complete_login(idp, authorize, user, USERS[user][0]))
    return browser


def hub_xsrf(browser: httpx.Client) -> dict[str, str]:
    """The hub's XSRF header (a notebook sets an _xsrf cookie of its own, under /user/<name>/)."""
    for cookie in browser.cookies.jar:
        if cookie.name == "_xsrf" and not cookie.path.startswith("/user/"):
            return {"X-XSRFToken": cookie.value}
    return {"X-XSRFToken": ""}


def fresh_notebook(hub: str, user: str) -> httpx.Client:
    """The user's client with a server started just now: one started before the hub was replaced may look for
    the old hub's address for a while (Docker's DNS answers are cached), so a new login could not reach it."""
    browser = http_login(hub, user)
    browser.get("/hub/home")
    browser.delete(f"/hub/api/users/{user}/server", headers=hub_xsrf(browser))
    deadline = time.monotonic() + 120
    while browser.get("/hub/api/user", headers=hub_xsrf(browser)).json().get("servers"):
        assert time.monotonic() < deadline, f"the server of {user} did not stop"
        time.sleep(1)
    return running_notebook(hub, user, browser)


def running_notebook(hub: str, user: str, browser: httpx.Client | None = None) -> httpx.Client:
    """The user's logged-in client, with their server started (as the home page's button does) if it was not."""
    browser = browser or http_login(hub, user)
    if not notebook_answers(browser, user):
        browser.get("/hub/home")
        browser.post(f"/hub/api/users/{user}/server", headers=hub_xsrf(browser))
        deadline = time.monotonic() + 240
        while not notebook_answers(browser, user):
            assert time.monotonic() < deadline, f"the notebook of {user} did not start"
            time.sleep(2)
    return browser
