"""An allowlisting Docker API proxy: the hub spawns notebooks without holding the Docker socket.

Why: the engine's socket is root on the host. Whoever can write to it can start a privileged
container that bind-mounts ``/``, so a hub that holds it turns any hub compromise (a JupyterHub or
authenticator bug, a leaked admin token used against an extension, ...) into root on the hub node,
and through the swarm on every worker and on every other deployment sharing the swarm.

Threat model: the hub process is compromised and writes to this socket directly; the proxy's policy is
the wall. What such a hub can and cannot still do is listed in :mod:`deployer_hub.dockerpolicy`, which
makes every decision (pure, tested without an engine); this module is the HTTP around it.

This proxy listens on a unix socket of its own (mode 0600), forwards to the real socket only the
calls TenantSwarmSpawner makes (read from spawner.py and dockerspawner, confirmed by logging a real
spawn through it), only in API version 1.41, and refuses everything else with 403
``{"message": "deployer docker proxy: ..."}``:

* ``GET /_ping``, ``GET /version`` (docker-py's ``version="auto"``; the answer's ApiVersion capped at 1.41);
* ``POST /services/create``, checked field by field, keys as Go reads them (dockerpolicy.check_service_spec);
* ``GET`` and ``DELETE /services/{id}``: only services named ``service_prefix``... (a delete goes to
  the full ID just inspected, so a name cannot be swapped in between);
* ``GET /services?filters=``, ``GET /tasks?filters=``: only filtered to the deployment's services;
* ``GET /configs/{id}`` of configs named ``config_prefix``..., ``GET /secrets/{id}`` of secrets named
  ``secret_prefix``... (metadata only: the engine never returns a secret's value), ``GET /nodes/{id}``
  and ``GET /nodes`` (where the GPUs are).

No exec, attach or upgrade, no containers, images, volumes, networks, other secrets, swarm, plugins or
events. Each refusal is logged on stderr as one line (method, path, reason; never a body: it holds
the notebook's environment, tokens included).

It is worth something only where the hub cannot reach the real socket: run it in its own container
(or on the host) and give the hub only the directory of ``listen``.

Run: ``python -m deployer_hub.dockerproxy --policy FILE`` (or the policy JSON in
DEPLOYER_DOCKER_PROXY_POLICY; the file wins). Standard library only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import socket
import stat
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote

from . import dockerpolicy
from .dockerpolicy import Policy, Refused, check_service_spec, parse_body, route, scoped_filters

log = logging.getLogger("deployer.dockerproxy")

POLICY_ENV = "DEPLOYER_DOCKER_PROXY_POLICY"
MAX_HEAD = 16 * 1024  # request line and headers; docker-py sends well under 1 KiB
MAX_BODY = 1024 * 1024  # a service spec with a large environment is some 10 KiB
MAX_CHECKED_RESPONSE = 8 * 1024 * 1024  # a service or config inspected before it is passed on
IDLE_TIMEOUT = 60.0  # a keep-alive connection with no request (docker-py reconnects as needed)
BODY_TIMEOUT = 30.0  # the rest of a request once its head arrived
UPSTREAM_TIMEOUT = 300.0  # the engine's answer, and each read of a streamed body
MAX_CONNECTIONS = 64

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # a bare LF in a value would start a header of its own upstream
_TARGET = re.compile(r"/[\x21-\x7e]*")  # printable, no spaces: anything else is not HTTP
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"}
_FORWARDED = {"user-agent", "accept", "content-type"}  # the rest of the client's headers stay here


class Broken(Exception):
    """The engine or the client failed after the response began: the connection is just closed."""


class BadRequest(Exception):
    """Not HTTP we understand: 400 (or ``status``), then the connection is closed."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.status = status


def load_policy(path: str | None, environ: dict[str, str] | os._Environ = os.environ) -> Policy:
    """The policy file if given, else the JSON in DEPLOYER_DOCKER_PROXY_POLICY."""
    try:
        return dockerpolicy.load_policy(path, environ.get(POLICY_ENV))
    except ValueError as exc:
        if str(exc) == "no policy":
            raise ValueError(f"no policy: give --policy FILE or set {POLICY_ENV}") from None
        raise


# --- HTTP -----------------------------------------------------------------------------------


@dataclass
class Request:
    method: str
    target: str  # as received: path and query
    path: str  # without the query (and, once dispatched, without the /v1.NN prefix)
    prefix: str  # the /v1.NN prefix, or "" (set when the request is dispatched)
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes = b""
    close: bool = False  # the client asked to close after this request


@dataclass
class Response:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    framing: str  # "length", "chunked", "eof" or "none"
    length: int = 0
    upstream_close: bool = False  # the engine closes this connection after the body
    body: bytes | None = field(default=None, repr=False)  # when read whole


def _parse_headers(lines: list[bytes]) -> list[tuple[str, str]]:
    headers = []
    for line in lines:
        name, sep, value = line.partition(b":")
        text = value.strip(b" \t").decode("latin-1")
        if not sep or not _TOKEN.fullmatch(name.decode("latin-1")) or _CONTROL.search(text):
            raise BadRequest("malformed header line")
        headers.append((name.decode("latin-1"), text))
    return headers


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """The next request, or None when the client closed the connection between requests."""
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_TIMEOUT)
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise BadRequest("incomplete request head") from None
        return None
    except asyncio.LimitOverrunError:
        raise BadRequest("request head too large", 431) from None
    except TimeoutError:
        return None
    lines = head[:-4].split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[2] not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise BadRequest("malformed request line")
    method, target = parts[0].decode("latin-1"), parts[1].decode("latin-1")
    if not method.isalpha() or not method.isupper() or not _TARGET.fullmatch(target) or "#" in target:
        raise BadRequest("malformed request line")
    header_list = _parse_headers(lines[1:])
    headers: dict[str, str] = {}
    for name, value in header_list:
        name = name.lower()
        if name in headers and name in ("content-length", "transfer-encoding", "host"):
            raise BadRequest(f"repeated {name} header")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    path, _, query = target.partition("?")  # not urlsplit: "//host/..." would lose its first part
    close = parts[2] == b"HTTP/1.0" or "close" in headers.get("connection", "").lower()
    request = Request(method, target, path, "", parse_qs(query, keep_blank_values=True), headers, close=close)
    request.body = await _read_request_body(reader, headers)
    return request


async def _read_request_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "expect" in headers:
        raise BadRequest("Expect is not supported", 417)
    encoding = headers.get("transfer-encoding")
    length = headers.get("content-length")
    if encoding is not None and length is not None:
        raise BadRequest("both Content-Length and Transfer-Encoding")  # the classic smuggling shape
    try:
        if encoding is not None:
            if encoding.lower() != "chunked":
                raise BadRequest(f"unsupported Transfer-Encoding {encoding}", 501)
            return await asyncio.wait_for(_read_chunked(reader, MAX_BODY), BODY_TIMEOUT)
        if length is None:
            return b""
        if not length.isdigit():
            raise BadRequest("malformed Content-Length")
        if int(length) > MAX_BODY:
            raise BadRequest("request body over 1 MiB", 413)
        return await asyncio.wait_for(reader.readexactly(int(length)), BODY_TIMEOUT)
    except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
        raise BadRequest("incomplete or malformed request body") from None


async def _read_chunked(reader: asyncio.StreamReader, limit: int) -> bytes:
    body = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size < 0 or len(body) + size > limit:
            raise BadRequest("request body over 1 MiB", 413)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers: dropped
                pass
            return bytes(body)
        body += await reader.readexactly(size)
        if await reader.readexactly(2) != b"\r\n":
            raise BadRequest("malformed chunk")


def json_response(status: int, reason: str, payload: Any, close: bool = False) -> bytes:
    body = json.dumps(payload).encode()
    head = [f"HTTP/1.1 {status} {reason}", "Content-Type: application/json", f"Content-Length: {len(body)}"]
    if close:
        head.append("Connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


_REASONS = {400: "Bad Request", 403: "Forbidden", 413: "Payload Too Large", 417: "Expectation Failed",
            431: "Request Header Fields Too Large", 501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable"}


class Upstream:
    """One keep-alive connection to the engine, opened when first needed (one per client connection)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def send(self, method: str, target: str, headers: dict[str, str], body: bytes = b"") -> Response:
        """Send a request and read the response head; a reused connection the engine closed
        meanwhile is reopened once (nothing of the request reached the engine then)."""
        for attempt in (0, 1):
            reused = self.writer is not None
            if not reused:
                self.reader, self.writer = await asyncio.open_unix_connection(self.path, limit=MAX_HEAD)
            try:
                self._write_request(method, target, headers, body)
                await self.writer.drain()
                return await asyncio.wait_for(self._read_head(method), UPSTREAM_TIMEOUT)
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                self.close()
                if not reused or attempt or (isinstance(exc, asyncio.IncompleteReadError) and exc.partial):
                    raise
        raise AssertionError("unreachable")

    def _write_request(self, method: str, target: str, headers: dict[str, str], body: bytes) -> None:
        lines = [f"{method} {target} HTTP/1.1", "Host: docker"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if body or method in ("POST", "PUT"):
            lines.append(f"Content-Length: {len(body)}")
        assert self.writer is not None
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    async def _read_head(self, method: str) -> Response:
        assert self.reader is not None
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise ConnectionError("the engine's response head is too large") from None
        lines = head[:-4].split(b"\r\n")
        status_line = lines[0].decode("latin-1").split(" ", 2)
        if len(status_line) < 2 or not status_line[0].startswith("HTTP/1.") or not status_line[1].isdigit():
            raise ConnectionError("the engine's response is not HTTP/1.x")
        try:
            headers = _parse_headers(lines[1:])
        except BadRequest:
            raise ConnectionError("the engine's response headers are malformed") from None
        status = int(status_line[1])
        names = {name.lower(): value for name, value in headers}
        response = Response(status, status_line[2] if len(status_line) > 2 else "", headers, "eof")
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            response.framing = "none"
        elif "chunked" in names.get("transfer-encoding", "").lower():
            response.framing = "chunked"
        elif names.get("content-length", "").isdigit():
            response.framing, response.length = "length", int(names["content-length"])
        response.upstream_close = "close" in names.get("connection", "").lower()
        return response

    async def read_body(self, response: Response) -> bytes:
        """The whole body, for a response the proxy checks before passing it on."""
        chunks = bytearray()
        async for piece in self._body(response):
            chunks += piece
            if len(chunks) > MAX_CHECKED_RESPONSE:
                self.close()
                raise ConnectionError("the engine's response is too large to check")
        self._after(response)
        return bytes(chunks)

    async def relay(self, response: Response, writer: asyncio.StreamWriter) -> None:
        """Pass the body on as it comes, in its own framing (chunks stay chunks)."""
        async for piece in self._body(response, raw=True):
            writer.write(piece)
            await writer.drain()
        self._after(response)

    def _after(self, response: Response) -> None:
        if response.framing == "eof" or response.upstream_close:
            self.close()

    async def _body(self, response: Response, raw: bool = False) -> AsyncIterator[bytes]:
        reader = self.reader
        assert reader is not None

        async def read(n: int) -> bytes:
            return await asyncio.wait_for(reader.readexactly(n), UPSTREAM_TIMEOUT)

        if response.framing == "length":
            left = response.length
            while left:
                piece = await read(min(left, 65536))
                left -= len(piece)
                yield piece
        elif response.framing == "chunked":
            while True:
                line = await asyncio.wait_for(reader.readuntil(b"\r\n"), UPSTREAM_TIMEOUT)
                size = int(line.split(b";", 1)[0].strip(), 16)
                if raw:
                    yield line
                if size == 0:
                    while (trailer := await asyncio.wait_for(reader.readuntil(b"\r\n"), UPSTREAM_TIMEOUT)) != b"\r\n":
                        if raw:
                            yield trailer
                    if raw:
                        yield b"\r\n"
                    return
                data = await read(size + 2)
                yield data if raw else data[:-2]
        elif response.framing == "eof":
            while piece := await asyncio.wait_for(reader.read(65536), UPSTREAM_TIMEOUT):
                yield piece


def response_head(response: Response, close: bool) -> bytes:
    lines = [f"HTTP/1.1 {response.status} {response.reason}".rstrip()]
    lines += [f"{n}: {v}" for n, v in response.headers if n.lower() not in _HOP_BY_HOP]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def with_body(response: Response, body: bytes) -> Response:
    """The response as read whole, re-framed with a Content-Length."""
    headers = [(n, v) for n, v in response.headers if n.lower() not in ("content-length", "transfer-encoding")]
    headers.append(("Content-Length", str(len(body))))
    return Response(response.status, response.reason, headers, "length", len(body), body=body)


# --- serving --------------------------------------------------------------------------------


class Proxy:
    """Serves client connections, each with its own keep-alive connection to the engine."""

    def __init__(self, policy: Policy, verbose: bool = False, max_connections: int = MAX_CONNECTIONS) -> None:
        self.policy = policy
        self.verbose = verbose
        self.max_connections = max_connections
        self.connections = 0
        self.idle: dict[asyncio.StreamWriter, None] = {}  # waiting for their next request, oldest first
        self.network_id: str | None = None

    async def serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.connections >= self.max_connections and self.idle:
            # A client's pool keeps connections it does not use; closing one costs it a reconnect.
            oldest = next(iter(self.idle))
            del self.idle[oldest]
            oldest.close()
        elif self.connections >= self.max_connections:
            log.warning("refused a connection: %d busy already", self.connections)
            writer.write(json_response(503, "Service Unavailable", {"message": "deployer docker proxy: too many connections"}, close=True))
            await self._close(writer)
            return
        self.connections += 1
        upstream = Upstream(self.policy.upstream)
        try:
            while await self._one_request(reader, writer, upstream):
                pass
        except (TimeoutError, Broken, OSError, asyncio.IncompleteReadError):
            pass  # the client or the engine went away mid-response: nothing left to tell anyone
        finally:
            self.connections -= 1
            self.idle.pop(writer, None)
            upstream.close()
            await self._close(writer)

    @staticmethod
    async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Let a client still sending (a body too large, say) read the answer: closing with its
        data unread would reset the connection before it sees the response."""
        writer.write_eof()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                for _ in range(64):
                    if not await reader.read(65536):
                        break

    @staticmethod
    async def _close(writer: asyncio.StreamWriter) -> None:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()

    async def _one_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: Upstream) -> bool:
        """Serve one request; False when the connection is to be closed."""
        self.idle[writer] = None
        try:
            request = await read_request(reader)
        except BadRequest as exc:
            self.idle.pop(writer, None)
            log.warning("refused a malformed request: %s", exc)
            writer.write(json_response(exc.status, _REASONS.get(exc.status, "Bad Request"), {"message": f"deployer docker proxy: {exc}"}, close=True))
            await writer.drain()
            await self._linger(reader, writer)
            return False
        self.idle.pop(writer, None)
        if request is None:
            return False
        try:
            return await self._dispatch(request, writer, upstream)
        except Refused as exc:
            where = f"{request.method} {request.prefix}{request.path}"
            log.warning("refused %s: %s", where, exc.reason or "not an allowed endpoint")
            message = f"deployer docker proxy: {where} is not allowed" + (f": {exc.reason}" if exc.reason else "")
            writer.write(json_response(exc.status, _REASONS.get(exc.status, "Forbidden"), {"message": message}, close=request.close))
            await writer.drain()
            return not request.close
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            # the engine is unreachable or answered nonsense before anything was sent back
            log.warning("%s %s: the engine failed: %s", request.method, request.path, exc or type(exc).__name__)
            writer.write(json_response(502, "Bad Gateway", {"message": f"deployer docker proxy: the Docker engine failed: {exc}"}, close=True))
            await writer.drain()
            return False

    async def _dispatch(self, request: Request, writer: asyncio.StreamWriter, upstream: Upstream) -> bool:
        if "upgrade" in request.headers or "upgrade" in request.headers.get("connection", "").lower():
            raise Refused("no connection upgrades (attach, exec)")
        request.prefix, request.path = dockerpolicy.split_version(request.method, request.path)
        handler, name = route(request.method, request.path)
        if request.method != "POST" and request.body:
            raise Refused("a body is only accepted with POST")
        if self.verbose:
            log.info("%s %s%s", request.method, request.prefix, request.path)
        return await getattr(self, "_" + handler)(request, name, writer, upstream)

    async def _forward(self, request: Request, writer: asyncio.StreamWriter, upstream: Upstream, target: str | None = None) -> bool:
        headers = {k: v for k, v in request.headers.items() if k in _FORWARDED}
        if request.path == "/services/create" and "x-registry-auth" in request.headers:
            headers["X-Registry-Auth"] = request.headers["x-registry-auth"]  # the hub's own registry login
        response = await upstream.send(request.method, target or request.target, headers, request.body)
        close = request.close or response.framing == "eof"
        writer.write(response_head(response, close))
        try:
            await upstream.relay(response, writer)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            raise Broken(str(exc)) from None  # too late for an error response
        return not close

    async def _fetch(self, upstream: Upstream, path: str) -> tuple[Response, Any]:
        """An object the proxy inspects itself: the response, read whole, and its JSON (or None)."""
        response = await upstream.send("GET", path, {"Accept": "application/json"})
        body = await upstream.read_body(response)
        response = with_body(response, body)
        if response.status != 200:
            return response, None
        found = json.loads(body)
        return response, (found if isinstance(found, dict) else {})  # {}: no name, so every check fails

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, response: Response, close: bool) -> bool:
        writer.write(response_head(response, close) + (response.body or b""))
        await writer.drain()
        return not close

    # handlers: (request, name in path, writer, upstream) -> keep the connection open

    async def _passthrough(self, request: Request, name: str, writer: asyncio.StreamWriter, upstream: Upstream) -> bool:
        return await self._forward(request, writer, upstream)

    async def _version(self, request: Request, name: str, writer: asyncio.StreamWriter, upstream: Upstream) -> bool:
        # Read whole and capped: a client that asks the engine's newest version next would be refused.
        response, found = await self._fetch(upstream, request.target)
        if found:
            body = json.dumps(dockerpolicy.capped_version(found)).encode()
            response = with_body(response, body)
        return await self._send(writer, response, request.close)

    async def _list_services(self, request: Request, name: str, writer: asyncio.StreamWriter, upstream: Upstream) -> bool:
        scoped_filters(request.query, "name", self.policy.service_prefix)  # Docker matches name as a prefix
        return await self._forward(request, writer, upstream)

    async def _list_tasks(self, request: Request, name: str, writer: asyncio.StreamWriter, upstream: Upstream) -> bool:
        scoped_filters(request.query, "service", self.policy.service_prefix)
        return await self._forward(request, writer, upstream)

    async def _inspect_service(self, request: Request, name: str, writer: asyncio.StreamWriter, upstream: Upstream) -> bool:
        # Checked on the answer itself: whatever name, ID or ID prefix the engine resolved.
        response, found = await self._fetch(upstream, request.target)
        if found is not None and not str(_get(found, "Spec", "Name")).startswith(self.policy.service_prefix):
            raise Refused(f"service {name} is not one of {self.policy.service_prefix}...")
        return await self._send(writer, response, request.close)

    async def _inspect_config(self, request: Request, name: str, writer: asyncio.StreamWriter, upstream: Upstream) -> bool:
        return await self._inspect_named(request, name, writer, upstream, "config", self.policy.config_prefix)

    async def _inspect_secret(self, request: Request, name: str, writer: asyncio.StreamWriter, upstream: Upstream) -> bool:
        return await self._inspect_named(request, name, writer, upstream, "secret", self.policy.secret_prefix)

    async def _inspect_named(self, request: Request, name: str, writer: asyncio.StreamWriter, upstream: Upstream, kind: str, prefix: str) -> bool:
        """A config or secret (metadata only: the engine never answers with a secret's value) named below ``prefix``."""
        response, found = await self._fetch(upstream, request.target)
        if found is not None and not (prefix and str(_get(found, "Spec", "Name")).startswith(prefix)):
            raise Refused(f"{kind} {name} is not one of {prefix or f'(no {kind}s allowed)'}...")
        return await self._send(writer, response, request.close)

    async def _remove_service(self, request: Request, name: str, writer: asyncio.StreamWriter, upstream: Upstream) -> bool:
        response, found = await self._fetch(upstream, f"{request.prefix}/services/{quote(name)}")
        if found is None:
            return await self._send(writer, response, request.close)  # 404 and the like, as the engine said
        if not str(_get(found, "Spec", "Name")).startswith(self.policy.service_prefix) or not isinstance(_get(found, "ID"), str):
            raise Refused(f"service {name} is not one of {self.policy.service_prefix}...")
        # By the full ID just checked: a name re-pointed meanwhile cannot be what gets removed.
        return await self._forward(request, writer, upstream, f"{request.prefix}/services/{quote(found['ID'])}")

    async def _create_service(self, request: Request, name: str, writer: asyncio.StreamWriter, upstream: Upstream) -> bool:
        needs = check_service_spec(parse_body(request.body), self.policy)
        for target in needs.networks:
            await self._check_network_id(upstream, request.prefix, target)
        for kind, references in (("config", needs.configs), ("secret", needs.secrets)):
            for ref_id, ref_name in references:
                _, found = await self._fetch(upstream, f"{request.prefix}/{kind}s/{quote(ref_id)}")
                if not found or found.get("ID") != ref_id or _get(found, "Spec", "Name") != ref_name:
                    raise Refused(f"{kind} {ref_name} is not the {kind} {ref_id}")
        return await self._forward(request, writer, upstream)

    async def _check_network_id(self, upstream: Upstream, prefix: str, target: str) -> None:
        """A network named by ID: the policy network's full ID (looked up once, again if it changed)."""
        if target == self.network_id:
            return
        _, found = await self._fetch(upstream, f"{prefix}/networks/{quote(self.policy.network)}")
        self.network_id = _get(found, "Id")
        if target != self.network_id:
            raise Refused(f"TaskTemplate.Networks: only the network {self.policy.network}")


def _get(obj: Any, *keys: str) -> Any:
    for key in keys:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj


def listen_socket(path: str, mode: int) -> socket.socket:
    """The unix socket, created with ``mode`` from the start (no window with the umask's mode)."""
    os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
    if os.path.lexists(path):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise ValueError(f"{path} exists and is not a socket")
        os.unlink(path)  # left by a proxy that did not stop cleanly
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o777 & ~mode)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    os.chmod(path, mode)
    sock.listen(128)
    return sock


async def serve(policy: Policy, verbose: bool = False, max_connections: int = MAX_CONNECTIONS) -> None:
    proxy = Proxy(policy, verbose, max_connections)
    sock = listen_socket(policy.listen, policy.listen_mode)
    server = await asyncio.start_unix_server(proxy.serve_connection, sock=sock, limit=MAX_HEAD)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("listening on %s for %s..., forwarding to %s", policy.listen, policy.service_prefix, policy.upstream)
    try:
        await stop.wait()
    finally:
        server.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(policy.listen)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployer_hub.dockerproxy", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--policy", help=f"policy JSON file (else the JSON in {POLICY_ENV})")
    parser.add_argument("--verbose", action="store_true", help="also log every allowed request")
    parser.add_argument("--max-connections", type=int, default=MAX_CONNECTIONS)
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s deployer-docker-proxy %(message)s")
    try:
        policy = load_policy(args.policy)
    except (OSError, ValueError, TypeError) as exc:
        print(f"deployer docker proxy: {exc}", file=sys.stderr)
        return 2
    asyncio.run(serve(policy, args.verbose, args.max_connections))
    return 0


if __name__ == "__main__":
    sys.exit(main())
