"""Let's Encrypt's ACME test server (Debian's pebble), run as it is: a real ACME CA that validates
HTTP-01 challenges by connecting to the name or address ordered. Debian ships no TLS pair for its
directory, so one is made here (sim.tls); its CA is what a hub trusts via jupyterhub_acme_ca_bundle."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

from sim.tls import server_tls


class Pebble:
    """``with Pebble(ip, http_port=80, validity=120, directory=tmp) as ca:`` ca.directory is the ACME
    directory URL, ca.ca_pem the CA of its HTTPS, ca.root() the root its certificates chain to."""

    def __init__(self, ip: str, workdir: Path, *, http_port: int = 80, validity: int | None = None, port: int = 14000):
        self.ip, self.workdir, self.http_port, self.validity, self.port = ip, workdir, http_port, validity, port
        self.proc: subprocess.Popen | None = None
        self.ca_pem = ""

    @property
    def directory(self) -> str:
        return f"https://{self.ip}:{self.port}/dir"

    def start(self) -> "Pebble":
        self.workdir.mkdir(parents=True, exist_ok=True)
        binary = shutil.which("pebble")
        if binary is None:
            raise RuntimeError("pebble is not installed: apt-get install pebble (scripts/test does)")
        self.ca_pem, _, tls = server_tls(self.ip, self.workdir / "tls")
        (self.workdir / "ca.pem").write_text(self.ca_pem)
        config = {"pebble": {"listenAddress": f"{self.ip}:{self.port}", "managementListenAddress": f"{self.ip}:{self.port + 1000}",
                             "certificate": str(tls / "cert.pem"), "privateKey": str(tls / "key.pem"),
                             "httpPort": self.http_port, "tlsPort": 5001, "ocspResponderURL": "", "externalAccountBindingRequired": False}}
        if self.validity:
            config["pebble"]["certificateValidityPeriod"] = self.validity
        (self.workdir / "pebble.json").write_text(json.dumps(config))
        # No random sleeps, nonce rejections or reused authorizations: every order runs a real challenge, now.
        env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0", "PEBBLE_AUTHZREUSE": "0"}
        self.log = open(self.workdir / "pebble.log", "wb")  # noqa: SIM115 (open for the process's life)
        self.proc = subprocess.Popen([binary, "-config", str(self.workdir / "pebble.json")], stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 30
        while True:
            try:
                self._get(self.directory)
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"pebble did not start: {(self.workdir / 'pebble.log').read_text()[-2000:]}") from None
                time.sleep(0.2)

    def _get(self, url: str) -> bytes:
        context = ssl.create_default_context(cadata=self.ca_pem)
        with urllib.request.urlopen(url, context=context, timeout=5) as answer:
            return answer.read()

    def root(self) -> str:
        """The root CA this run of pebble issues under (new at every start)."""
        return self._get(f"https://{self.ip}:{self.port + 1000}/roots/0").decode()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        if getattr(self, "log", None):
            self.log.close()

    def __enter__(self) -> "Pebble":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
