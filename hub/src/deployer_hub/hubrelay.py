"""The hub API's stable address for notebooks: a TCP relay on the deployment's overlay network.

Notebooks reach the hub API by name. JupyterHub's single-user server resolves it with c-ares, which
keeps an answer for its DNS TTL (600 s from Docker's DNS); the hub's own address is its container's
(DNS round robin), new at every replacement of the hub. So for up to 10 minutes after a hub update, a
notebook kept calling the old hub: a new login to it failed. This relay runs in its own container on
the hub node (``python3 -m deployer_hub.hubrelay HUB_SERVICE PORT``), is left alone when the hub is
replaced, so its address, the one notebooks cache, does not change, and forwards each connection to
the hub as Docker's DNS names it at that moment. Standard library only.
"""

from __future__ import annotations

import asyncio
import logging
import sys

log = logging.getLogger("deployer_hub.hubrelay")
CONNECT_TIMEOUT = 10.0


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()  # the other direction may still be talking
    except (ConnectionError, OSError):
        writer.close()


def relay(target: str, port: int):
    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:  # resolved now, every time: the hub's current container
            hub_reader, hub_writer = await asyncio.wait_for(asyncio.open_connection(target, port), CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError) as error:
            log.warning("cannot reach the hub at %s:%d: %s", target, port, error)
            client_writer.close()
            return
        try:
            await asyncio.gather(_pipe(client_reader, hub_writer), _pipe(hub_reader, client_writer))
        finally:
            for writer in (hub_writer, client_writer):
                writer.close()

    return handle


async def serve(target: str, port: int, listen_port: int, host: str = "0.0.0.0") -> asyncio.Server:
    return await asyncio.start_server(relay(target, port), host, listen_port)


async def _main(target: str, port: int) -> None:
    server = await serve(target, port, port)
    log.info("relaying port %d to %s:%d", port, target, port)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or not args[1].isdigit():
        print("usage: python3 -m deployer_hub.hubrelay HUB_HOST PORT", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="[%(levelname).1s %(asctime)s hubrelay] %(message)s", stream=sys.stderr)
    asyncio.run(_main(args[0], int(args[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
