#!/usr/bin/python3 -S
"""A stand-in for jupyterhub-singleuser (the scale benchmark's notebook server; standard library only).

Listens where JupyterHub tells a single-user server to, JUPYTERHUB_SERVICE_URL (http://0.0.0.0:8888/user/<name>/
from both spawners), and answers every request with 200 and a small JSON body: JupyterHub's readiness check
(any answer below 500) and a client's GET /user/<name>/api through the hub's proxy. It does not talk to the
hub (no OAuth, no activity reports). The header X-Bench-Standin names the server's user, so a client can
tell the server's own answer from the hub's (which answers /user/<name>/... itself while the proxy has no
route for it).

Plain sockets and a thread per connection rather than http.server: its imports (email, http.client, ...)
double the process's memory, about 18 MB instead of 10, and the point is to fit many servers.
"""

import json
import os
import socket
import threading
from urllib.parse import urlsplit

USER = os.environ.get("JUPYTERHUB_USER", "")
HUB_VERSION = "6.1.1"  # JupyterHub only warns when a server's version differs or is missing
BODY = json.dumps({"version": HUB_VERSION, "standin": USER}).encode()
HEAD = ("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
        "X-JupyterHub-Version: %s\r\nX-Bench-Standin: %s\r\n" % (len(BODY), HUB_VERSION, USER)).encode()
MAX_HEAD = 64 * 1024


def serve(conn: socket.socket) -> None:
    """Requests on one connection (HTTP/1.1 keep-alive) until the client closes it."""
    buffer = b""
    with conn:
        conn.settimeout(300)
        while True:
            while b"\r\n\r\n" not in buffer:
                chunk = conn.recv(65536)
                if not chunk or len(buffer) > MAX_HEAD:
                    return
                buffer += chunk
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
            length = int(headers.get("content-length") or 0)
            while len(buffer) < length:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buffer += chunk
            buffer = buffer[length:]
            close = "close" in headers.get("connection", "").lower() or lines[0].endswith("HTTP/1.0")
            method = lines[0].split(" ", 1)[0]
            conn.sendall(HEAD + (b"Connection: close\r\n" if close else b"") + b"\r\n" + (b"" if method == "HEAD" else BODY))
            if close:
                return


def main() -> None:
    url = urlsplit(os.environ.get("JUPYTERHUB_SERVICE_URL") or "http://0.0.0.0:8888/")
    host, port = url.hostname or "0.0.0.0", url.port or 8888
    listener = socket.create_server((host, port), backlog=128)
    print(f"stand-in for jupyterhub-singleuser ({USER}) listening on {host}:{port}", flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
