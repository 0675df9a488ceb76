"""The hub's certificate from an ACME CA, deployed on the lab: Let's Encrypt's test server (Debian's
pebble) on this machine validates HTTP-01 by connecting to the hub host's port 80, as Let's Encrypt
would. First a CA that cannot reach the challenge (it looks on a closed port, as when a firewall closes
port 80): the hub keeps its self-signed certificate and `deployer status` says why. Then one that can:
its certificate replaces the self-signed one, and is renewed when due without closing open connections."""

from __future__ import annotations

import datetime as dt
import http.client
import os
import re
import socket
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from sim.pebble import Pebble

from lab.deployment import deployer
from lab.harness import Lab

pytestmark = pytest.mark.lab

EMAIL = "ops@example.org"


@pytest.fixture(scope="module")
def gateway(lab: Lab) -> str:
    """This machine's address on the lab's network (where pebble listens; the hub host reaches it)."""
    return subprocess.run(["docker", "network", "inspect", lab.network, "--format", "{{(index .IPAM.Config 0).Gateway}}"],
                          capture_output=True, text=True, check=True).stdout.strip() or str(lab.subnet.network_address + 1)


@pytest.fixture(scope="module")
def clean(site: Path):
    yield
    if os.environ.get("DEPLOYER_KEEP_LAB") != "1":
        deployer(site, "destroy", "-y", "--purge-data")


def acme(ca: Pebble, site: Path) -> list[str]:
    (site / "extras" / "acme-ca.pem").write_text(ca.ca_pem)  # pebble's directory is served under a private CA
    return ["-o", f"jupyterhub_tls=acme&jupyterhub_acme_email={EMAIL}&jupyterhub_acme_directory={ca.directory}&jupyterhub_acme_ca_bundle=acme-ca.pem"]


def served(hub: str) -> x509.Certificate:
    with socket.create_connection((hub, 443), timeout=10) as raw, ssl._create_unverified_context().wrap_socket(raw, server_hostname=hub) as tls:
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


def status_line(site: Path, options: list[str]) -> str:
    result = deployer(site, "status", *options)
    assert result.returncode == 0, result.stderr + result.stdout
    found = re.search(r"^certificate: .*$", result.stdout, re.M)
    assert found, result.stdout
    return found.group(0)


def test_a_challenge_the_ca_cannot_reach_leaves_the_self_signed_certificate_and_status_says_why(clean, lab: Lab, site: Path, gateway: str, tmp_path: Path) -> None:
    hub = lab.hosts["hub"]
    with Pebble(gateway, tmp_path / "pebble", http_port=81, port=14000) as ca:  # nothing answers on the hub's port 81
        options = acme(ca, site)
        result = deployer(site, "deploy", *options)
        assert result.returncode == 0, result.stderr + result.stdout
        assert f"TLS: a certificate from {ca.directory} (HTTP-01 on port 80)" in result.stdout
        deadline = time.monotonic() + 90
        while "the last order failed" not in (line := status_line(site, options)):
            assert time.monotonic() < deadline, line
            time.sleep(3)
        assert "certificate: self-signed until the ACME CA issues one; the last order failed: " in line
        assert "open port 80 to the hub from the internet" in line and "next try at" in line, line
        cert = served(hub)
        assert cert.issuer == cert.subject  # still the self-signed fallback
        # Port 80 is the ACME service's: challenges, and a redirect to HTTPS for everything else.
        moved = httpx.get(f"http://{hub}/hub/login?next=%2F", follow_redirects=False, timeout=10)
        assert moved.status_code == 301 and moved.headers["location"] == f"https://{hub}/hub/login?next=%2F"


def test_the_cas_certificate_replaces_the_self_signed_one_and_is_renewed_without_closing_connections(clean, lab: Lab, site: Path, gateway: str,
                                                                                                    tmp_path: Path) -> None:
    hub = lab.hosts["hub"]
    with Pebble(gateway, tmp_path / "pebble", http_port=80, port=14100, validity=90) as ca:  # renewal due 30 s before the end
        options = acme(ca, site)
        result = deployer(site, "deploy", *options)
        assert result.returncode == 0, result.stderr + result.stdout
        root = x509.load_pem_x509_certificate(ca.root().encode())
        deadline = time.monotonic() + 90
        while (cert := served(hub)).issuer == cert.subject:
            assert time.monotonic() < deadline, status_line(site, options)
            time.sleep(2)
        chain_issuer = cert.issuer
        assert chain_issuer != root.subject and "Pebble Intermediate CA" in chain_issuer.rfc4514_string()
        line = status_line(site, options)
        assert line.startswith(f"certificate: from {ca.directory} for {hub}, valid until "), line
        # A TLS connection opened just before the renewal is still open after it and answers. (Requests
        # through the proxy to the hub end with the connection closed, so the connection is opened, not used,
        # until then; the proxy's own keep-alive across a swap is shown in tests/hub/test_acme.py.)
        renew_at = dt.datetime.fromisoformat(re.search(r"due for renewal at (\S+)$", line).group(1))
        time.sleep(max(0.0, (renew_at - dt.datetime.now(dt.timezone.utc)).total_seconds() - 10))
        opened = http.client.HTTPSConnection(hub, 443, context=ssl._create_unverified_context(), timeout=30)
        opened.connect()
        first = x509.load_der_x509_certificate(opened.sock.getpeercert(binary_form=True)).serial_number
        assert first == cert.serial_number
        deadline = time.monotonic() + 45
        while served(hub).serial_number == first:
            assert time.monotonic() < deadline, f"not renewed: {status_line(site, options)}"
            time.sleep(1)
        renewed = served(hub)
        assert renewed.issuer == chain_issuer and renewed.not_valid_after_utc > cert.not_valid_after_utc
        opened.request("GET", "/hub/health")
        answer = opened.getresponse()
        answer.read()
        assert answer.status == 200
        opened.close()
        assert status_line(site, options).startswith(f"certificate: from {ca.directory} for {hub}, valid until {renewed.not_valid_after_utc:%Y-%m-%dT%H:%M:%S}")
