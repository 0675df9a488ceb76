"""The smallest single-user server JupyterHub accepts: answers HTTP on the port it is given
and records the environment the spawner gave it, so tests can see the identity applied."""

import http.server
import json
import os

port = int(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:0").rsplit(":", 1)[1].split("/")[0])
record = {k: v for k, v in os.environ.items() if k in ("NB_UID", "NB_GID", "TAS_HOMEDIRECTORY", "JUPYTERHUB_USER")}
record_dir = os.environ.get("DEPLOYER_TEST_RECORD_DIR", os.getcwd())
with open(os.path.join(record_dir, f"spawned-{os.environ.get('JUPYTERHUB_USER', 'unknown')}.json"), "w") as handle:
    json.dump(record, handle)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args) -> None:
        pass


http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
