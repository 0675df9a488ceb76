"""The hub's ACME client against a real ACME CA (Debian's pebble, Let's Encrypt's test server) on this
machine: issuance over HTTP-01 answered by the hub's port 80 server, renewal when due, one-line
reasons when the CA cannot validate (with the self-signed certificate kept), and the proxy taking a
renewed certificate without closing open connections (real configurable-http-proxy with tlsreload.js)."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from deployer_hub import acmecert
from deployer_hub.settings import AcmeSettings, HubSettings, Settings
from sim.pebble import Pebble
from sim.tls import server_tls

from deployer.phases.tls import self_signed

pytestmark = pytest.mark.hub

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def settings(data_dir: Path, directory: str, ca_bundle: Path, http_port: int) -> Settings:
    from deployer_hub.settings import NotebookSettings, OAuthSettings, TasSettings, TenantSettings

    hub = HubSettings(host=HOST, service_name="x-hub", data_dir=str(data_dir), http_port=http_port, public_https_port=8443,
                      acme=AcmeSettings(email="ops@example.org", directory=directory, ca_bundle=str(ca_bundle), renew_days=30))
    return Settings(deployment="jupyterhub.test.x", login="tenant", tenant=TenantSettings(id="x"), oauth=OAuthSettings(), hub=hub,
                    tas=TasSettings(), notebooks=NotebookSettings(image="i", network="n", service_prefix="p"))


def fallback(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = self_signed(HOST)
    (tmp_path / "fallback-cert.pem").write_text(cert)
    (tmp_path / "fallback-key.pem").write_text(key)
    return tmp_path / "fallback-cert.pem", tmp_path / "fallback-key.pem"


def chains_to(chain_pem: bytes, root_pem: str) -> bool:
    """The leaf verifies against the root through the chain's intermediate (as a browser would)."""
    leaf, *rest = x509.load_pem_x509_certificates(chain_pem)
    store = x509.verification.Store(x509.load_pem_x509_certificates(root_pem.encode()))
    verifier = x509.verification.PolicyBuilder().store(store).build_server_verifier(x509.IPAddress(__import__("ipaddress").ip_address(HOST)))
    verifier.verify(leaf, rest)
    return True


def test_pebble_issues_a_certificate_over_http01_on_the_hubs_port_80_then_it_is_renewed_when_due(tmp_path: Path) -> None:
    port80 = free_port()
    with Pebble(HOST, tmp_path / "pebble", http_port=port80, validity=60, port=free_port()) as ca:
        service = acmecert.Service(settings(tmp_path / "data", ca.directory, tmp_path / "pebble" / "ca.pem", port80))
        acmecert.start_with(service.paths, *fallback(tmp_path), HOST)
        self_signed_pem = service.paths.cert.read_bytes()
        server = acmecert.serve_port80(port80, service.https_base, service.tokens)
        try:
            # Port 80 redirects everything else to the hub's HTTPS address (the proxy's redirect port is not used).
            moved = httpx.get(f"http://{HOST}:{port80}/hub/login?next=%2F", follow_redirects=False)
            assert moved.status_code == 301 and moved.headers["location"] == f"https://{HOST}:8443/hub/login?next=%2F"
            assert httpx.get(f"http://{HOST}:{port80}/.well-known/acme-challenge/unknown").status_code == 404

            now = dt.datetime.now(dt.timezone.utc)
            wait = service.step(now)
            chain = service.paths.cert.read_bytes()
            assert chain != self_signed_pem and chains_to(chain, ca.root())
            first = x509.load_pem_x509_certificate(chain)
            status = json.loads(service.paths.status.read_text())
            assert status["state"] == "issued" and status["serial"] == format(first.serial_number, "x") and status["issued_by"] == ca.directory
            assert 30 <= wait <= 41  # due a third of its 60 s lifetime before it ends
            assert {p.name: oct(p.stat().st_mode & 0o777) for p in (service.paths.key, service.paths.status)} == {"key.pem": "0o600", "status.json": "0o600"}
            # Not due: nothing ordered.
            assert service.step(now + dt.timedelta(seconds=5)) > 0 and service.paths.cert.read_bytes() == chain
            # Due (the same account, kept per directory): a new certificate with a new key.
            key_before = service.paths.key.read_bytes()
            service.step(now + dt.timedelta(seconds=45))
            second = x509.load_pem_x509_certificate(service.paths.cert.read_bytes())
            assert second.serial_number != first.serial_number and service.paths.key.read_bytes() != key_before
            assert len(list((tmp_path / "data" / "acme").glob("account-*.json"))) == 1
        finally:
            server.shutdown()
            server.server_close()


def test_a_challenge_the_ca_cannot_reach_keeps_the_self_signed_certificate_and_says_why_then_backs_off(tmp_path: Path) -> None:
    closed = free_port()  # nothing answers there: as a hub whose port 80 the firewall closes
    with Pebble(HOST, tmp_path / "pebble", http_port=closed, port=free_port()) as ca:
        service = acmecert.Service(settings(tmp_path / "data", ca.directory, tmp_path / "pebble" / "ca.pem", closed))
        acmecert.start_with(service.paths, *fallback(tmp_path), HOST)
        before = service.paths.cert.read_bytes()
        now = dt.datetime.now(dt.timezone.utc)
        assert service.step(now) == 60 and service.step(now) == 120  # retried after 1 min, then 2
        assert service.paths.cert.read_bytes() == before
        status = json.loads(service.paths.status.read_text())
        assert status["state"] == "failed" and status["next_attempt"]
        assert "open port 80 to the hub from the internet" in status["error"] and "connection refused" in status["error"].lower(), status["error"]


def test_an_unreachable_or_untrusted_directory_is_named(tmp_path: Path) -> None:
    port = free_port()
    service = acmecert.Service(settings(tmp_path / "data", f"https://{HOST}:{port}/dir", tmp_path / "none.pem", free_port()))
    acmecert.start_with(service.paths, *fallback(tmp_path), HOST)
    service.step(dt.datetime.now(dt.timezone.utc))
    assert json.loads(service.paths.status.read_text())["error"].startswith("cannot talk to the ACME directory: ")
    with Pebble(HOST, tmp_path / "pebble", port=free_port()) as ca:  # its HTTPS not trusted (no bundle given)
        untrusted = acmecert.Service(settings(tmp_path / "data2", ca.directory, Path(""), free_port()))
        untrusted.acme = AcmeSettings(email="ops@example.org", directory=ca.directory)
        untrusted.orderer = acmecert.Orderer(untrusted.acme, HOST, untrusted.paths, untrusted.tokens)
        acmecert.start_with(untrusted.paths, *fallback(tmp_path), HOST)
        untrusted.step(dt.datetime.now(dt.timezone.utc))
        assert "CERTIFICATE_VERIFY_FAILED" in json.loads(untrusted.paths.status.read_text())["error"]


def peer_serial(sock: ssl.SSLSocket) -> int:
    return x509.load_der_x509_certificate(sock.getpeercert(binary_form=True)).serial_number


def test_the_proxy_serves_a_renewed_certificate_to_new_connections_and_keeps_open_ones(tmp_path: Path) -> None:
    """configurable-http-proxy as the hub starts it for an ACME hub: node --require tlsreload.js."""
    proxy = shutil.which("configurable-http-proxy")
    assert proxy, "configurable-http-proxy is not installed"
    live = tmp_path / "tls"
    live.mkdir()
    _, _, first = server_tls(HOST, tmp_path / "first")
    _, _, second = server_tls(HOST, tmp_path / "second")
    shutil.copy(first / "cert.pem", live / "cert.pem")
    shutil.copy(first / "key.pem", live / "key.pem")
    port, api = free_port(), free_port()
    reload_js = Path(acmecert.__file__).with_name("tlsreload.js")
    chp = subprocess.Popen(["node", "--require", str(reload_js), os.path.realpath(proxy), "--ip", HOST, "--port", str(port), "--api-ip", HOST,
                            "--api-port", str(api), "--ssl-cert", str(live / "cert.pem"), "--ssl-key", str(live / "key.pem"),
                            "--default-target", f"http://{HOST}:{free_port()}"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "CONFIGPROXY_AUTH_TOKEN": "t"})
    context = ssl._create_unverified_context()
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                opened = http.client.HTTPSConnection(HOST, port, context=context, timeout=10)
                opened.request("GET", "/")
                opened.getresponse().read()  # (503: no backend; the connection is what matters)
                break
            except OSError:
                assert time.monotonic() < deadline, "configurable-http-proxy did not start"
                time.sleep(0.2)
        old_serial = peer_serial(opened.sock)
        # Renewed: key and certificate replaced by rename, as acmecert writes them.
        for name in ("key.pem", "cert.pem"):
            shutil.copy(second / name, live / f"{name}.new")
            os.replace(live / f"{name}.new", live / name)
        new_serial = x509.load_pem_x509_certificate((second / "cert.pem").read_bytes()).serial_number
        deadline = time.monotonic() + 15
        while True:
            with socket.create_connection((HOST, port)) as raw, context.wrap_socket(raw, server_hostname=HOST) as fresh:
                if peer_serial(fresh) == new_serial:
                    break
            assert time.monotonic() < deadline, "the proxy still serves the old certificate to new connections"
            time.sleep(0.5)
        # The connection opened before the renewal is still open, with its certificate, and still answers.
        opened.request("GET", "/")
        assert opened.getresponse().status in (200, 503) and peer_serial(opened.sock) == old_serial
        opened.close()
    finally:
        chp.terminate()
        output = chp.communicate(timeout=10)[0].decode(errors="replace")
    assert "[tlsreload] serving the new certificate" in output, output[-2000:]


def test_an_account_the_ca_no_longer_knows_is_registered_again(tmp_path: Path) -> None:
    """Pebble forgets everything when it restarts (as a CA may deactivate an account): the kept account is replaced."""
    port80, port = free_port(), free_port()
    data = tmp_path / "data"
    with Pebble(HOST, tmp_path / "pebble", http_port=port80, port=port) as ca:
        service = acmecert.Service(settings(data, ca.directory, tmp_path / "pebble" / "ca.pem", port80))
        acmecert.start_with(service.paths, *fallback(tmp_path), HOST)
        server = acmecert.serve_port80(port80, service.https_base, service.tokens)
        try:
            service.step(dt.datetime.now(dt.timezone.utc))
            first_account = next((data / "acme").glob("account-*.json")).read_text()
        finally:
            server.shutdown()
            server.server_close()
    with Pebble(HOST, tmp_path / "pebble2", http_port=port80, port=port) as ca:  # same directory URL, a new CA
        (tmp_path / "pebble" / "ca.pem").write_text(ca.ca_pem)
        service = acmecert.Service(settings(data, ca.directory, tmp_path / "pebble" / "ca.pem", port80))
        server = acmecert.serve_port80(port80, service.https_base, service.tokens)
        try:
            service.step(dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=3650))  # due: renew
            assert json.loads(service.paths.status.read_text())["state"] == "issued", service.paths.status.read_text()
            assert chains_to(service.paths.cert.read_bytes(), ca.root())
            assert next((data / "acme").glob("account-*.json")).read_text() != first_account
        finally:
            server.shutdown()
            server.server_close()
