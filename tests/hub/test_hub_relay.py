"""The hub API's relay (deployer_hub.hubrelay) as notebooks use it: real sockets on this machine."""

from __future__ import annotations

import asyncio
import socket

import pytest
from deployer_hub import hubrelay

pytestmark = pytest.mark.hub


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def backend(port: int, reply: bytes) -> asyncio.Server:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.read()  # until the client's half-close: the relay passes it on
        writer.write(reply + b" to " + request)
        await writer.drain()
        writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", port)


async def ask(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    writer.write_eof()
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return answer


def test_each_connection_goes_to_the_hub_listening_now_and_an_absent_hub_closes_it() -> None:
    async def scenario() -> None:
        hub_port, relay_port = free_port(), free_port()
        relay = await hubrelay.serve("localhost", hub_port, relay_port, host="127.0.0.1")
        old = await backend(hub_port, b"old hub")
        assert await ask(relay_port, b"GET /hub/api") == b"old hub to GET /hub/api"
        old.close()
        await old.wait_closed()
        assert await ask(relay_port, b"x") == b""  # no hub: closed at once, not hung
        new = await backend(hub_port, b"new hub")  # the replaced hub, the relay's own address unchanged
        assert await ask(relay_port, b"GET /hub/api/user") == b"new hub to GET /hub/api/user"
        big = b"y" * 3_000_000  # larger than any buffer: back-pressure both ways
        assert await ask(relay_port, big) == b"new hub to " + big
        new.close()
        relay.close()

    asyncio.run(scenario())
