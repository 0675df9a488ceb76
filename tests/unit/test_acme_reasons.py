"""The ACME client's decisions, as pure functions: when to order, and the one line an operator reads
when the CA cannot validate (the CA's own words and what to check)."""

from __future__ import annotations

import datetime as dt

import pytest
from acme import challenges, errors, messages
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from deployer_hub.acmecert import AcmeFailure, explain, host_of, why_order

NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.timezone.utc)
DIRECTORY = "https://acme.example.org/dir"


def cert(names: list[str], days: float, *, self_signed: bool = False, age: float = 0) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    issuer = subject if self_signed else x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Some CA")])
    start = NOW - dt.timedelta(days=age)
    built = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(start + dt.timedelta(days=days))
             .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False).sign(key, hashes.SHA256()))
    return built.public_bytes(Encoding.PEM)


@pytest.mark.parametrize(("pem", "issued_by", "expected"), [
    (None, None, "no certificate yet"),
    (b"garbage", DIRECTORY, "cannot be read"),
    (cert(["hub.example.org"], 365, self_signed=True), DIRECTORY, "not from the ACME CA yet"),
    (cert(["hub.example.org"], 90), "https://other-ca.example.org/dir", "not from the ACME CA yet"),  # the directory was changed
    (cert(["other.example.org"], 90), DIRECTORY, "does not cover hub.example.org"),
    (cert(["hub.example.org"], 90, age=61), DIRECTORY, "renewing"),  # 29 days left: within 30
    (cert(["hub.example.org"], 6 / 24, age=4.5 / 24), DIRECTORY, "renewing"),  # a 6 h certificate: due with 2 h left
    (cert(["hub.example.org"], 90, age=10), DIRECTORY, None),
    (cert(["HUB.example.org"], 90, age=10), DIRECTORY, None),
])
def test_an_order_is_made_only_when_the_certificate_in_use_is_not_the_cas_or_is_due(pem, issued_by, expected) -> None:
    reason = why_order(pem, "hub.example.org", issued_by, DIRECTORY, 30, NOW)
    assert (reason is None) if expected is None else (expected in reason), reason


def failed_validation(kind: str, detail: str) -> errors.ValidationError:
    challenge = messages.ChallengeBody(chall=challenges.HTTP01(token=b"t" * 32), status=messages.STATUS_INVALID,
                                       error=messages.Error(typ=f"urn:ietf:params:acme:error:{kind}", detail=detail))
    authz = messages.AuthorizationResource(body=messages.Authorization(challenges=(challenge,), status=messages.STATUS_INVALID))
    return errors.ValidationError([authz])


@pytest.mark.parametrize(("error", "said", "hint"), [
    (failed_validation("dns", "DNS problem: NXDOMAIN looking up A for hub.example.org"), "NXDOMAIN", "give it a public DNS A/AAAA record pointing at the hub"),
    (failed_validation("connection", "Fetching http://hub.example.org/.well-known/acme-challenge/t: Connection refused"), "Connection refused",
     "open port 80 to the hub from the internet"),
    (failed_validation("connection", "Timeout during connect (likely firewall problem)"), "firewall", "open port 80"),
    (failed_validation("unauthorized", "Invalid response from http://hub.example.org/.well-known/acme-challenge/t: 404"), "404",
     "does the name point at this hub"),
    (messages.Error(typ="urn:ietf:params:acme:error:rateLimited", detail="too many certificates already issued"), "too many", "tries again later"),
    (messages.Error(typ="urn:ietf:params:acme:error:rejectedIdentifier", detail="Policy forbids issuing for name"), "Policy forbids",
     "use a name it accepts"),
    (errors.TimeoutError(), "did not finish the order for hub.example.org", ""),
    (AcmeFailure("the CA offers no HTTP-01 challenge for hub.example.org"), "no HTTP-01 challenge", ""),
    (ConnectionError("Max retries exceeded"), "cannot talk to the ACME directory: ConnectionError", ""),
])
def test_a_failure_reads_as_the_cas_words_and_what_to_check_in_one_line(error, said, hint) -> None:
    line = explain(error, "hub.example.org")
    assert said in line and hint in line and "\n" not in line


def test_the_host_loses_its_port_and_ipv6_brackets() -> None:
    assert [host_of(h) for h in ("hub.example.org", "hub.example.org:8443", "10.0.0.1:443", "[fd00::1]:8443", "fd00::1")] == [
        "hub.example.org", "hub.example.org", "10.0.0.1", "fd00::1", "fd00::1"]
