"""The hub's certificate from an ACME CA (Let's Encrypt unless configured), over HTTP-01 on port 80.

Runs in the hub container as a JupyterHub-managed service (``python -m deployer_hub.acmecert
hub.json``; the hub restarts it if it exits). It

* serves port 80 in place of the proxy's redirect port: the CA's challenge requests
  (``/.well-known/acme-challenge/<token>``, answered from memory) and, for anything else, a
  redirect to the hub's HTTPS address;
* orders a certificate for the hub's host when the one in use is not from this CA (at first the
  self-signed one the hub starts with, which stays until a certificate is issued), does not
  cover the host, or is due: a third of its lifetime or ``renew_days`` left, whichever is less;
* writes the new key and chain over the files the proxy serves (by rename); the proxy takes
  them for new connections without closing open ones (``tlsreload.js``);
* after a failure, says why in one line (the CA's own words and what to check) in the hub's
  log and in ``status.json`` (which ``deployer status`` shows), and tries again after 1 minute,
  doubling up to an hour.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import josepy as jose
from acme import challenges, client, crypto_util, errors, messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .settings import AcmeSettings, Settings

log = logging.getLogger("deployer_hub.acmecert")

CHALLENGE_PREFIX = "/.well-known/acme-challenge/"
FIRST_RETRY, LAST_RETRY = 60.0, 3600.0
MOST_SLEEP = 12 * 3600.0


class AcmeFailure(Exception):
    """An order that did not give a certificate; the message is the one line an operator reads."""


# --- where things are kept ----------------------------------------------------------------------

@dataclass(frozen=True)
class Paths:
    """The live pair the proxy serves, and this service's own files (in the hub's data directory)."""

    cert: Path
    key: Path
    state: Path  # account keys, status.json

    @classmethod
    def of(cls, data_dir: str) -> Paths:
        root = Path(data_dir)
        return cls(root / "tls" / "cert.pem", root / "tls" / "key.pem", root / "acme")

    @property
    def status(self) -> Path:
        return self.state / "status.json"


def write_private(path: Path, data: bytes) -> None:
    """Root-only, replaced by rename (a reader sees the old file or the new one, never half)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    new = path.with_name(path.name + ".new")
    fd = os.open(new, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(new, path)


def start_with(paths: Paths, fallback_cert: Path, fallback_key: Path, host: str, now: dt.datetime | None = None) -> None:
    """Before the proxy starts: keep the live pair if it is good for the host (an issued certificate
    survives the hub's replacement), else put the fallback (self-signed) pair there."""
    now = now or dt.datetime.now(dt.UTC)
    try:
        cert = x509.load_pem_x509_certificate(paths.cert.read_bytes())
        if paths.key.exists() and covers(cert, host) and cert.not_valid_after_utc > now:
            return
    except (OSError, ValueError):
        pass
    write_private(paths.key, fallback_key.read_bytes())
    write_private(paths.cert, fallback_cert.read_bytes())


# --- when to order --------------------------------------------------------------------------------

def host_of(address: str) -> str:
    """The hub's host without a port (IPv6 without brackets)."""
    if address.startswith("["):
        return address[1:address.index("]")]
    return address.rsplit(":", 1)[0] if address.count(":") == 1 else address


def covers(cert: x509.Certificate, host: str) -> bool:
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    try:
        return ipaddress.ip_address(host) in names.get_values_for_type(x509.IPAddress)
    except ValueError:
        return host.lower() in (n.lower() for n in names.get_values_for_type(x509.DNSName))


def renew_at(cert: x509.Certificate, renew_days: int) -> dt.datetime:
    """When the certificate is due: a third of its lifetime, or renew_days, before it expires (the lesser)."""
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    return cert.not_valid_after_utc - min(lifetime / 3, dt.timedelta(days=renew_days))


def why_order(pem: bytes | None, host: str, issued_by: str | None, directory: str, renew_days: int, now: dt.datetime) -> str | None:
    """Why a certificate must be ordered now, or None when the one in use is good."""
    if not pem:
        return "no certificate yet"
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return "the certificate in use cannot be read"
    if cert.issuer == cert.subject or issued_by != directory:
        return "the certificate in use is not from the ACME CA yet"
    if not covers(cert, host):
        return f"the certificate in use does not cover {host}"
    if now >= renew_at(cert, renew_days):
        return f"the certificate expires at {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC: renewing"
    return None


# --- what went wrong, in one line -----------------------------------------------------------------

HINTS = {
    "dns": "the CA cannot resolve {host}: give it a public DNS A/AAAA record pointing at the hub",
    "connection": "the CA cannot reach http://{host}/.well-known/acme-challenge/ (port 80): open port 80 to the hub from the internet",
    "unauthorized": "the CA reached {host} but not this hub's answer: does the name point at this hub, and nothing else answer on port 80?",
    "incorrectResponse": "the CA reached {host} but not this hub's answer: does the name point at this hub, and nothing else answer on port 80?",
    "rateLimited": "the CA's rate limit: Deployer tries again later",
    "rejectedIdentifier": "the CA will not issue for {host} (its policy): use a name it accepts",
}


def explain(exc: BaseException, host: str) -> str:
    """One line: what the CA said, and what to check."""
    problems: list[messages.Error] = []
    if isinstance(exc, errors.ValidationError):
        for authzr in exc.failed_authzrs:
            problems += [c.error for c in authzr.body.challenges if c.error is not None]
    elif isinstance(exc, messages.Error):
        problems.append(exc)
    elif isinstance(exc, errors.TimeoutError):
        return f"the CA did not finish the order for {host} within 90 s"
    elif isinstance(exc, AcmeFailure):
        return str(exc)
    else:  # the directory itself: unreachable, bad TLS, not an ACME server
        return f"cannot talk to the ACME directory: {type(exc).__name__}: {str(exc)[:300]}"
    if not problems:
        return f"the order for {host} failed: {str(exc)[:300]}"
    problem = problems[0]
    kind = (problem.typ or "").rsplit(":", 1)[-1]
    said = " ".join((problem.detail or problem.description or kind).split())[:300]
    hint = HINTS.get(kind, "").format(host=host)
    return f"{said} ({hint})" if hint else said


# --- the port 80 server ---------------------------------------------------------------------------

class Port80(BaseHTTPRequestHandler):
    """Challenges from memory; anything else redirected to the hub's HTTPS address."""

    tokens: ClassVar[dict[str, str]] = {}
    https_base = ""
    server_version = "deployer-hub"
    sys_version = ""

    def _answer(self) -> None:
        path = self.path.split("?", 1)[0]
        if path.startswith(CHALLENGE_PREFIX):
            answer = self.tokens.get(path[len(CHALLENGE_PREFIX):])
            body = (answer or "not found").encode()
            self.send_response(200 if answer else 404)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            return
        target = self.path if self.path.startswith("/") else "/"
        self.send_response(301 if self.command in ("GET", "HEAD") else 308)
        self.send_header("Location", self.https_base + target)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _answer

    def log_message(self, format: str, *args) -> None:
        if self.path.startswith(CHALLENGE_PREFIX):
            log.info("challenge request from %s: %s", self.client_address[0], format % args)


def serve_port80(port: int, https_base: str, tokens: dict[str, str]) -> ThreadingHTTPServer:
    handler = type("Handler", (Port80,), {"tokens": tokens, "https_base": https_base})
    server = ThreadingHTTPServer(("0.0.0.0", port), handler)
    threading.Thread(target=server.serve_forever, name="port80", daemon=True).start()
    return server


# --- ordering -------------------------------------------------------------------------------------

class Orderer:
    """One account at one directory (its key kept per directory), ordering certificates for a host."""

    def __init__(self, acme: AcmeSettings, host: str, paths: Paths, tokens: dict[str, str]):
        self.acme, self.host, self.paths, self.tokens = acme, host, paths, tokens
        self._client: client.ClientV2 | None = None
        self._key: jose.JWK | None = None

    def _account_file(self) -> Path:
        return self.paths.state / f"account-{hashlib.sha256(self.acme.directory.encode()).hexdigest()[:12]}.json"

    def _connect(self) -> client.ClientV2:
        if self._client is not None:
            return self._client
        kept = self._account_file()
        stored = json.loads(kept.read_text()) if kept.exists() else None
        if stored:
            key = jose.JWK.json_loads(json.dumps(stored["key"]))
        else:
            key = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
        net = client.ClientNetwork(key, alg=jose.ES256, user_agent="deployer-hub", verify_ssl=self.acme.ca_bundle or True)
        directory = client.ClientV2.get_directory(self.acme.directory, net)
        acme = client.ClientV2(directory, net=net)
        if stored:
            net.account = messages.RegistrationResource.json_loads(json.dumps(stored["account"]))
        else:
            registration = messages.NewRegistration.from_data(email=self.acme.email, terms_of_service_agreed=True)
            account = acme.new_account(registration)
            write_private(kept, json.dumps({"key": key.to_json(), "account": account.to_json()}).encode())
            log.info("registered an account at %s for %s", self.acme.directory, self.acme.email)
        self._client, self._key = acme, key
        return acme

    def order(self) -> tuple[bytes, bytes]:
        """(key, full chain) of a new certificate for the host."""
        acme = self._connect()
        key = ec.generate_private_key(ec.SECP256R1())
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        try:
            ip = ipaddress.ip_address(self.host)
            csr = crypto_util.make_csr(key_pem, ipaddrs=[ip])
        except ValueError:
            csr = crypto_util.make_csr(key_pem, [self.host])
        try:
            order = acme.new_order(csr)
        except messages.Error as error:
            if not (error.typ or "").endswith(":accountDoesNotExist"):
                raise
            # The CA no longer knows the kept account (deactivated; a test CA restarted): register again.
            log.warning("the CA at %s does not know this hub's account any more: registering a new one", self.acme.directory)
            self._account_file().unlink(missing_ok=True)
            self._client = None
            acme = self._connect()
            order = acme.new_order(csr)
        try:
            for authz in order.authorizations:
                if authz.body.status == messages.STATUS_VALID:
                    continue
                found = [c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01)]
                if not found:
                    raise AcmeFailure(f"the CA offers no HTTP-01 challenge for {self.host}")
                response, validation = found[0].response_and_validation(self._key)
                self.tokens[found[0].chall.encode("token")] = validation
                acme.answer_challenge(found[0], response)
            order = acme.poll_and_finalize(order, dt.datetime.now() + dt.timedelta(seconds=90))
        finally:
            self.tokens.clear()
        return key_pem, order.fullchain_pem.encode()


# --- the service ----------------------------------------------------------------------------------

class Service:
    def __init__(self, settings: Settings):
        hub = settings.hub
        assert hub.acme is not None
        self.acme, self.host = hub.acme, host_of(hub.host)
        self.paths = Paths.of(hub.data_dir)
        self.tokens: dict[str, str] = {}
        self.orderer = Orderer(self.acme, self.host, self.paths, self.tokens)
        name = f"[{self.host}]" if ":" in self.host else self.host
        self.https_base = f"https://{name}" + ("" if hub.public_https_port == 443 else f":{hub.public_https_port}")
        self.retry = FIRST_RETRY

    def status(self) -> dict:
        try:
            return json.loads(self.paths.status.read_text())
        except (OSError, ValueError):
            return {}

    def save_status(self, **fields) -> None:
        status = {**self.status(), "host": self.host, "directory": self.acme.directory, **fields,
                  "updated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
        write_private(self.paths.status, json.dumps(status, indent=2, sort_keys=True).encode())

    def step(self, now: dt.datetime) -> float:
        """Orders if needed; returns the seconds until the next look."""
        live = self.paths.cert.read_bytes() if self.paths.cert.exists() else None
        reason = why_order(live, self.host, self.status().get("issued_by"), self.acme.directory, self.acme.renew_days, now)
        if reason is None:
            due = renew_at(x509.load_pem_x509_certificate(live), self.acme.renew_days)
            return min(MOST_SLEEP, max(5.0, (due - now).total_seconds()))
        log.info("ordering a certificate for %s from %s: %s", self.host, self.acme.directory, reason)
        try:
            key, chain = self.orderer.order()
        except Exception as exc:  # noqa: BLE001 (every failure is reported the same way, and tried again later)
            message = explain(exc, self.host)
            wait, self.retry = self.retry, min(LAST_RETRY, self.retry * 2)
            self.orderer._client = None  # a fresh directory and nonce next time
            log.error("no certificate from %s for %s: %s; trying again in %.0f s", self.acme.directory, self.host, message, wait)
            self.save_status(state="failed", error=message, next_attempt=(now + dt.timedelta(seconds=wait)).isoformat(timespec="seconds"))
            return wait
        write_private(self.paths.key, key)
        write_private(self.paths.cert, chain)
        cert = x509.load_pem_x509_certificate(chain)
        self.retry = FIRST_RETRY
        log.info("certificate for %s issued by %s, valid until %s", self.host, cert.issuer.rfc4514_string(), cert.not_valid_after_utc)
        self.save_status(state="issued", error=None, next_attempt=None, issued_by=self.acme.directory,
                         serial=format(cert.serial_number, "x"), not_after=cert.not_valid_after_utc.isoformat(timespec="seconds"),
                         renew_at=renew_at(cert, self.acme.renew_days).isoformat(timespec="seconds"))
        return min(MOST_SLEEP, max(5.0, (renew_at(cert, self.acme.renew_days) - now).total_seconds()))

    def run(self, http_port: int) -> None:
        serve_port80(http_port, self.https_base, self.tokens)
        log.info("answering ACME challenges and redirecting to %s on port %d", self.https_base, http_port)
        while True:
            time.sleep(self.step(dt.datetime.now(dt.UTC)))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="[%(levelname).1s %(asctime)s acme] %(message)s", stream=sys.stderr)
    settings = Settings.from_dict(json.loads(Path(args[0]).read_text()))
    Service(settings).run(settings.hub.http_port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
