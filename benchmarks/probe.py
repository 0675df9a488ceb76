"""The floor's helper, run inside a container on the floor's overlay network (standard library only).

  probe.py serve                       a stand-in for the hub's API on port 8081: every request gets
                                       200 and an X-JupyterHub-Version header, so that
                                       jupyterhub-singleuser (which asks the hub's API for its version
                                       before it serves) starts exactly as it does under a hub
  probe.py wait TIMEOUT                 reads URLs from its standard input, one a line, and polls each
                                       from the moment it arrives, every 50 ms, until it gives an HTTP
                                       answer below 500 (JupyterHub's own readiness rule); at the end
                                       of the input and of every poll, prints one JSON object
                                       {url: epoch seconds of the first answer, or null}

The stand-in answers in microseconds, so the floor pays nothing for a hub.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

try:
    from jupyterhub import __version__ as HUB_VERSION
except ImportError:  # any version does: the notebook only warns on a mismatch
    HUB_VERSION = "6.1.1"


class StandIn(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = json.dumps({"version": HUB_VERSION}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-JupyterHub-Version", HUB_VERSION)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = _answer

    def log_message(self, *args: object) -> None:
        pass


def serve() -> None:
    ThreadingHTTPServer(("0.0.0.0", 8081), StandIn).serve_forever()


def first_answer(url: str, deadline: float, found: dict[str, float | None]) -> None:
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except (OSError, ValueError):
            status = None  # not resolvable or not listening yet
        if status is not None and status < 500:
            found[url] = time.time()
            return
        time.sleep(0.05)
    found[url] = None


def wait(timeout: float) -> None:
    found: dict[str, float | None] = {}
    deadline = time.time() + timeout
    threads = []
    for line in sys.stdin:
        url = line.strip()
        if url:
            thread = threading.Thread(target=first_answer, args=(url, deadline, found))
            thread.start()
            threads.append(thread)
    for thread in threads:
        thread.join()
    print(json.dumps(found), flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve()
    elif sys.argv[1:2] == ["wait"]:
        wait(float(sys.argv[2]))
    else:
        sys.exit(__doc__)
