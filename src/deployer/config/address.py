"""The hub's public address (``jupyterhub_host``), parsed once: a host and an optional port.

Forms: ``name``, ``name:port``, ``1.2.3.4[:port]``, ``[IPv6]`` and ``[IPv6]:port``. A bare IPv6
literal is refused (``2001:db8::1`` could be an address or an address and a port), and so is a
link-local one (a browser cannot reach ``fe80::...`` without a zone). Model, settings, the
self-signed certificate and the certificate check all use the parsed parts.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


class AddressError(ValueError):
    """Not a host[:port]; the message says what to write instead."""


def is_hostname(value: str) -> bool:
    value = value.rstrip(".")
    return 0 < len(value) <= 253 and all(_LABEL.match(label) for label in value.split("."))


def is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class HubAddress:
    host: str  # a name or an IP literal, lower case, without brackets
    port: int | None = None

    @classmethod
    def parse(cls, value: str) -> "HubAddress":
        if "://" in value:
            raise AddressError(f"give the domain without the protocol: {value.split('://', 1)[1].split('/')[0]!r} instead of {value!r}")
        if "/" in value:
            raise AddressError(f"give only the domain, without a path: {value.split('/')[0]!r} instead of {value!r}")
        port_text: str | None = None
        if value.startswith("["):
            host, closed, rest = value[1:].partition("]")
            if not closed or (rest and not rest.startswith(":")):
                raise AddressError(f"{value!r} is not [IPv6] or [IPv6]:port")
            port_text = rest[1:] if rest else None
            try:
                ip = ipaddress.IPv6Address(host)
            except ValueError:
                raise AddressError(f"{value!r} is not a valid IPv6 address in brackets") from None
            if ip.is_link_local:
                raise AddressError(f"{value!r} is link-local: browsers cannot reach it; use the hub's global address or its name")
        elif value.count(":") > 1:
            raise AddressError(f"put an IPv6 address in brackets: [{value}] (or [{value}]:port)")
        else:
            host, _, port_text = value.partition(":") if ":" in value else (value, "", None)
            if not (is_hostname(host) or is_ip(host)):  # at most one ':' here, so an IP is an IPv4 one
                raise AddressError(f"{value!r} is not a valid domain name (letters, digits and '-' in dot-separated labels)")
        port = None
        if port_text is not None:
            if not (port_text.isdigit() and 0 < int(port_text) < 65536):
                raise AddressError(f"port must be a number from 1 to 65535, got {port_text!r}")
            port = int(port_text)
        return cls(host.lower(), port)

    @property
    def is_ip(self) -> bool:
        return is_ip(self.host)

    @property
    def netloc(self) -> str:
        """As in a URL: ``[v6]`` in brackets, ``:port`` only when given."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}" if self.port else host

    def __str__(self) -> str:
        return self.netloc
