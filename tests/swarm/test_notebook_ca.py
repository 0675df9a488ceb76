"""The tenant's private CA inside notebooks: a user's own tokens work over HTTPS from the
notebook's kernels and terminals (agavepy, requests, curl), as that user, with the CA bundle
the hub was given as tenant_ca_bundle joined to the image's system CAs."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import aiohttp
import httpx
import pytest

from deployer_hub.spawner import NOTEBOOK_CA_BUNDLE, NOTEBOOK_TENANT_CA
from swarm.conftest import NAME, SHARE, USERS, Site, docker
from swarm.helpers import http_login, notebook_container, spawn

pytestmark = pytest.mark.swarm

ENV_KEYS = ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE")

#: Run in a kernel, and as `python3 ca_check.py` in a terminal: each way of calling the tenant
#: with the user's own token files, reported rather than raised so a failure shows its cause.
CHECK = r'''
import json, os, subprocess, sys
out = {"uid": os.getuid(), "gid": os.getgid(), "env": {k: os.environ.get(k) for k in %(env)r}}
current = json.load(open(os.path.join(os.environ["AGAVE_CACHE_DIR"], "current")))
url, token = current["baseurl"] + "/profiles/v2/me", current["access_token"]
def attempt(name, fn):
    try:
        out[name] = fn()
    except Exception as exc:
        out[name] = "FAILED: %%s: %%s" %% (type(exc).__name__, exc)
def with_agavepy():
    from agavepy.agave import Agave
    ag = Agave.restore()
    # agavepy's generated calls (ag.profiles.get()) go to the base URL's host only (real tenants
    # sit at the root, the simulator under /agave) and send the token only to port 443. So the
    # call goes through the HTTP client those calls use (requests' Session.send with the token
    # files' verify), with the token agavepy restored.
    r = ag.all.http_client.request("GET", ag.api_server + "/profiles/v2/me", headers={"Authorization": "Bearer " + ag._token})
    r.raise_for_status()
    return r.json()["result"]["username"]
def with_requests():
    import requests
    r = requests.get(url, headers={"Authorization": "Bearer " + token}, timeout=30)
    return [r.status_code, r.json()["result"]["username"]]
def run(argv):
    p = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    return [p.returncode, p.stdout.strip(), p.stderr.strip()[-500:]]
attempt("agavepy", with_agavepy)
attempt("requests", with_requests)
attempt("python3 -c", lambda: run([sys.executable, "-c", "from agavepy.agave import Agave; ag = Agave.restore(); "
                                   "print(ag.all.http_client.request('GET', ag.api_server + '/profiles/v2/me', "
                                   "headers={'Authorization': 'Bearer ' + ag._token}).json()['result']['username'])"]))
attempt("curl", lambda: run(["curl", "-sf", "-H", "Authorization: Bearer " + token, url]))
out["done"] = True
print("RESULT" + json.dumps(out))
''' % {"env": ENV_KEYS}


def user_token(browser: httpx.Client, user: str) -> str:
    """A hub API token of the user's own (as a user makes one on the token page)."""
    browser.get("/hub/home")
    xsrf = next((c.value for c in browser.cookies.jar if c.name == "_xsrf"), "")
    response = browser.post(f"/hub/api/users/{user}/tokens", json={"note": "notebook CA test", "expires_in": 900},
                            headers={"X-XSRFToken": xsrf})
    assert response.status_code == 201, response.text
    return response.json()["token"]


async def in_kernel(user: str, token: str, code: str, timeout: float = 180) -> str:
    """Run code in a new kernel of the user's server (Jupyter's REST and websocket API); its stdout."""
    headers = {"Authorization": f"token {token}"}
    base = f"https://127.0.0.1/user/{user}/api"
    async with aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(ssl=False)) as session:
        async with session.post(f"{base}/kernels", json={"name": "python3"}) as response:
            assert response.status == 201, await response.text()
            kernel = (await response.json())["id"]
        try:
            async with session.ws_connect(f"wss://127.0.0.1/user/{user}/api/kernels/{kernel}/channels", max_msg_size=0) as ws:
                msg_id = uuid.uuid4().hex
                await ws.send_json({
                    "header": {"msg_id": msg_id, "username": user, "session": uuid.uuid4().hex, "msg_type": "execute_request", "version": "5.3"},
                    "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
                    "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
                })
                output: list[str] = []
                async with asyncio.timeout(timeout):
                    async for message in ws:
                        data = json.loads(message.data)
                        if data.get("parent_header", {}).get("msg_id") != msg_id:
                            continue
                        kind, content = data["msg_type"], data["content"]
                        if kind == "stream":
                            output.append(content["text"])
                        elif kind == "error":
                            output.append("\n".join(content["traceback"]))
                        elif kind == "status" and content["execution_state"] == "idle":
                            return "".join(output)
                raise AssertionError("the kernel's websocket closed before the cell finished")
        finally:
            await session.delete(f"{base}/kernels/{kernel}")


async def in_terminal(user: str, token: str, command: str) -> None:
    """Type a command into a new JupyterLab terminal of the user's server (a shell it started)."""
    headers = {"Authorization": f"token {token}"}
    async with aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(ssl=False)) as session:
        async with session.post(f"https://127.0.0.1/user/{user}/api/terminals") as response:
            assert response.status == 200, await response.text()
            name = (await response.json())["name"]
        async with session.ws_connect(f"wss://127.0.0.1/user/{user}/terminals/websocket/{name}") as ws:
            await ws.send_str(json.dumps(["stdin", command + "\r"]))
            await asyncio.sleep(1)  # the shell has read the line; it goes on without the websocket


def file_of(browser: httpx.Client, user: str, token: str, path: str, timeout: float = 120) -> str:
    """A file of the user's server once it holds a whole result (Jupyter's contents API)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = browser.get(f"/user/{user}/api/contents/{path}", params={"content": 1, "type": "file", "format": "text"},
                               headers={"Authorization": f"token {token}"})
        if response.status_code == 200 and '"done": true' in response.json()["content"]:
            return response.json()["content"]
        time.sleep(1)
    raise AssertionError(f"{path} was not written within {timeout} s")


def result_of(text: str) -> dict:
    assert "RESULT" in text, text
    return json.loads(text.split("RESULT", 1)[1].strip().splitlines()[0])


def test_tenant_https_with_the_users_tokens_from_kernels_and_terminals(hub, site: Site) -> None:
    user, (_, uid, gid) = "jdoe", USERS["jdoe"]
    browser = http_login(user)  # a fresh login: fresh token files
    assert spawn(browser, user) == "ready"
    token = user_token(browser, user)

    # The CA reaches the notebook as a Docker config, not as a path on the hub.
    spec = json.loads(docker("service", "inspect", f"{NAME}-nb-{user}", "--format", "{{json .Spec.TaskTemplate.ContainerSpec}}"))
    ca_config = json.loads(docker("service", "inspect", f"{NAME}-hub", "--format", "{{json .Spec.TaskTemplate.ContainerSpec.Configs}}"))
    hub_ca = next(c["ConfigName"] for c in ca_config if c["File"]["Name"] == "/srv/jupyterhub/tenant-ca.pem")
    assert [(c["ConfigName"], c["File"]["Name"]) for c in spec.get("Configs") or []] == [(hub_ca, NOTEBOOK_TENANT_CA)]
    container = notebook_container(user)
    assert docker("exec", container, "cat", NOTEBOOK_TENANT_CA).strip() == site.tenant.ca_pem.strip()

    expected_env = {k: NOTEBOOK_CA_BUNDLE for k in ENV_KEYS}
    for how, result in (
        ("kernel", result_of(asyncio.run(in_kernel(user, token, CHECK)))),
        ("terminal", _in_terminal(browser, user, token)),
    ):
        assert (result["uid"], result["gid"]) == (uid, gid), how  # the user, not root
        assert result["env"] == expected_env, (how, result)
        assert result["agavepy"] == user, (how, result)
        assert result["requests"] == [200, user], (how, result)
        assert result["python3 -c"][:2] == [0, user], (how, result)
        assert result["curl"][0] == 0 and json.loads(result["curl"][1])["result"]["username"] == user, (how, result)

    # The combined bundle: the image's system CAs and the tenant's, readable, not writable by others.
    bundle = docker("exec", "-u", f"{uid}:{gid}", container, "cat", NOTEBOOK_CA_BUNDLE)
    assert site.tenant.ca_pem.strip() in bundle and bundle.count("BEGIN CERTIFICATE") > 100
    assert docker("exec", container, "stat", "-c", "%a %u", NOTEBOOK_CA_BUNDLE) == f"444 {uid}"

    # The token files name the bundle as `verify` (agavepy and tapipy hand it to requests). Agave.restore()
    # reads `current`, which has no verify (agavepy then passes True: certifi's file, i.e. the bundle too).
    agpy = json.load(open(f"{SHARE}/tokens/sim/{user}/.agpy"))
    assert agpy[0]["verify"] == NOTEBOOK_CA_BUNDLE


def _in_terminal(browser: httpx.Client, user: str, token: str) -> dict:
    headers = {"Authorization": f"token {token}"}
    put = browser.put(f"/user/{user}/api/contents/ca_check.py", json={"type": "file", "format": "text", "content": CHECK}, headers=headers)
    assert put.status_code in (200, 201), put.text
    browser.delete(f"/user/{user}/api/contents/ca_check.out", headers=headers)
    asyncio.run(in_terminal(user, token, "python3 ca_check.py >ca_check.out 2>&1"))
    return result_of(file_of(browser, user, token, "ca_check.out"))
