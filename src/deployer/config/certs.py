"""Checks on an operator-supplied TLS certificate and key (never printing the key)."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

#: Warn when a certificate expires sooner than this.
EXPIRY_WARNING = dt.timedelta(days=14)


@dataclass
class CertCheck:
    cert_errors: list[str] = field(default_factory=list)
    key_errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _public_bytes(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def names(cert: x509.Certificate) -> list[str]:
    """DNS names and IP addresses the certificate is valid for (SAN, else the CN)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        found = san.get_values_for_type(x509.DNSName) + [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
        if found:
            return found
    except x509.ExtensionNotFound:
        pass
    return [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]


def covers(cert_names: list[str], host: str) -> bool:
    """Whether ``host`` matches one of ``cert_names`` (one-label wildcards as browsers allow)."""
    host = host.lower().rstrip(".")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    for name in (n.lower().rstrip(".") for n in cert_names):
        if ip is not None:
            try:
                if ipaddress.ip_address(name) == ip:
                    return True
            except ValueError:
                continue
        elif name == host:
            return True
        elif name.startswith("*.") and "." in host and host.split(".", 1)[1] == name[2:]:
            return True
    return False


def check(cert_pem: bytes, key_pem: bytes, host: str, now: dt.datetime | None = None) -> CertCheck:
    """``host`` is the hub's host without port or brackets (HubAddress.host)."""
    result = CertCheck()
    now = now or dt.datetime.now(dt.timezone.utc)
    cert = key = None
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        result.cert_errors.append("not a PEM certificate (expected -----BEGIN CERTIFICATE-----)")
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        result.key_errors.append("the private key is encrypted; give it unencrypted (openssl pkey -in KEY -out KEY.plain)")
    except (ValueError, Exception):  # cryptography raises several types for garbage input
        result.key_errors.append("not a PEM private key (expected -----BEGIN ... PRIVATE KEY-----)")
    if cert is None:
        return result
    if key is not None and _public_bytes(key.public_key()) != _public_bytes(cert.public_key()):
        result.key_errors.append("does not match jupyterhub_cert: the key belongs to another certificate")
    not_after = cert.not_valid_after_utc
    if not_after <= now:
        result.cert_errors.append(f"expired on {not_after:%Y-%m-%d}; renew it or remove jupyterhub_cert/jupyterhub_key to use a self-signed pair")
    elif not_after - now < EXPIRY_WARNING:
        result.warnings.append(f"expires on {not_after:%Y-%m-%d}, in less than {EXPIRY_WARNING.days} days")
    if cert.not_valid_before_utc > now:
        result.cert_errors.append(f"not valid before {cert.not_valid_before_utc:%Y-%m-%d}")
    cert_names = names(cert)
    if not covers(cert_names, host):
        result.cert_errors.append(f"does not cover jupyterhub_host {host!r} (it covers: {', '.join(cert_names) or 'no names'})")
    return result


def is_ca_bundle(pem: bytes) -> bool:
    """Whether ``pem`` holds one or more PEM certificates (an extra CA bundle)."""
    try:
        return bool(x509.load_pem_x509_certificates(pem))
    except ValueError:
        return False
