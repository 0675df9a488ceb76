"""Counts the hub's calls to its Docker proxy (benchmarks/scale.py; standard library only).

    python callcount.py SOCKET

The Docker proxy (deployer_hub.dockerproxy) logs refusals only, so the benchmark counts the calls on
their way to it: this process puts itself in front of the proxy's socket SOCKET (on the host, in the
deployment's docker-proxy directory, which the hub container mounts), relays every connection the hub
makes to the proxy byte for byte, and counts the HTTP requests the hub sends (their request lines).

Installed without a moment in which SOCKET is missing: a hard link SOCKET.bench-real to the proxy's
socket first (a unix socket is found by its inode, so the link reaches the proxy), then a socket of its
own, bound beside it with SOCKET's owner and mode, renamed over SOCKET. Connections the hub opened
before stay with the proxy and are not counted: the benchmark restarts the hub after this starts.

Prints one JSON line {"inode": ...} once it serves; then, for every line on its standard input, one JSON
line {"total": N, "calls": {"GET /services/{id}": n, ...}, "relaying": SOCKET is still this relay's}
(counted since the start; paths without their /v1.NN prefix and query, names and IDs as {id}). When its
standard input closes (or on SIGTERM) it puts the proxy's socket back at SOCKET and ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import sys

COLLECTIONS = {"services", "tasks", "nodes", "configs", "secrets", "networks", "containers", "images", "volumes", "plugins"}
MAX_HEAD = 64 * 1024


def kind(method: str, target: str) -> str:
    path = target.split("?", 1)[0]
    path = re.sub(r"^/v\d+(\.\d+)?(?=/)", "", path)
    parts = path.split("/")
    for i in range(2, len(parts)):
        if parts[i - 1] in COLLECTIONS and parts[i] not in ("create", ""):
            parts[i] = "{id}"
    return f"{method} {'/'.join(parts)}"


class Relay:
    def __init__(self, path: str) -> None:
        self.path = path
        self.upstream = path + ".bench-real"
        self.calls: dict[str, int] = {}
        self.inode = 0

    def install(self) -> socket.socket:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.upstream)  # left by a relay that was killed
        os.link(self.path, self.upstream)
        st = os.stat(self.path)
        temporary = self.path + ".bench-relay"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o777)
        try:
            sock.bind(temporary)
        finally:
            os.umask(old)
        os.chown(temporary, st.st_uid, st.st_gid)
        os.chmod(temporary, st.st_mode & 0o777)
        sock.listen(128)
        self.inode = os.stat(temporary).st_ino
        os.rename(temporary, self.path)
        return sock

    def relaying(self) -> bool:
        try:
            return os.stat(self.path).st_ino == self.inode
        except OSError:
            return False

    def uninstall(self) -> None:
        """The proxy's socket back at its path (if the path is still ours: a proxy started anew made its own)."""
        if os.path.lexists(self.upstream):
            if self.relaying():
                os.rename(self.upstream, self.path)
            else:
                os.unlink(self.upstream)

    async def serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(self.upstream, limit=MAX_HEAD)
        except OSError:
            client_writer.close()
            return
        back = asyncio.create_task(self._pipe(up_reader, client_writer))
        try:
            await self._requests(client_reader, up_writer)
            with contextlib.suppress(Exception):
                up_writer.write_eof()
            await asyncio.wait([back], timeout=330)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, asyncio.CancelledError):
            pass  # (cancelled: this relay is ending; the connection just closes)
        finally:
            back.cancel()
            for writer in (up_writer, client_writer):
                writer.close()

    async def _requests(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """The client's requests, each counted, passed on whole (head, then its body by its framing)."""
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                if exc.partial:
                    writer.write(exc.partial)
                return
            lines = head.decode("latin-1").split("\r\n")
            request = lines[0].split(" ")
            if len(request) == 3:
                name = kind(request[0], request[1])
                self.calls[name] = self.calls.get(name, 0) + 1
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            writer.write(head)
            if "chunked" in headers.get("transfer-encoding", "").lower():
                while True:
                    size_line = await reader.readuntil(b"\r\n")
                    writer.write(size_line)
                    size = int(size_line.split(b";", 1)[0].strip(), 16)
                    if size == 0:
                        while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
                            writer.write(line)
                        writer.write(b"\r\n")
                        break
                    writer.write(await reader.readexactly(size + 2))
            elif headers.get("content-length", "0").isdigit() and int(headers.get("content-length", "0")):
                writer.write(await reader.readexactly(int(headers["content-length"])))
            await writer.drain()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.write_eof()

    def report(self) -> str:
        return json.dumps({"total": sum(self.calls.values()), "calls": dict(sorted(self.calls.items())), "relaying": self.relaying()})


async def main(path: str) -> None:
    relay = Relay(path)
    sock = relay.install()
    try:
        server = await asyncio.start_unix_server(relay.serve, sock=sock, limit=MAX_HEAD)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        commands = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
        print(json.dumps({"inode": relay.inode}), flush=True)

        async def answer() -> None:
            while await commands.readline():
                print(relay.report(), flush=True)
            stop.set()

        task = asyncio.create_task(answer())
        await stop.wait()
        task.cancel()
        server.close()
    finally:
        relay.uninstall()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
