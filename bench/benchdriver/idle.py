"""Idle keep-alive connections: open many, send one request on each, then hold them open."""

from __future__ import annotations

import asyncio
from typing import Callable

# Connections being opened at once; more would overflow listen backlogs for no benefit.
OPEN_CONCURRENCY = 500
RESPONSE_TIMEOUT_SECONDS = 30.0


async def _open_one(port: int, host: str, limit: asyncio.Semaphore):
    async with limit:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), RESPONSE_TIMEOUT_SECONDS)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split()[1])
        length = 0
        for line in header_lines:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        # The upstream's body has a Content-Length; a chunked body would need a parser, and no
        # target sends one for this route.
        await asyncio.wait_for(reader.readexactly(length), RESPONSE_TIMEOUT_SECONDS)
        if status != 200:
            writer.close()
            raise ConnectionError(f"status {status}")
        return reader, writer


async def _hold(port: int, host: str, count: int, hold_seconds: float, measure: Callable[[], object]):
    limit = asyncio.Semaphore(OPEN_CONCURRENCY)
    results = await asyncio.gather(
        *(_open_one(port, host, limit) for _ in range(count)), return_exceptions=True
    )
    connections = [result for result in results if isinstance(result, tuple)]
    errors = [result for result in results if isinstance(result, BaseException)]
    # Let the proxy finish whatever it does after a response before memory is read.
    await asyncio.sleep(hold_seconds)
    # The event loop reads every socket while it sleeps, so a connection the server closed
    # is at EOF by now.
    still_open = sum(1 for reader, _ in connections if not reader.at_eof())
    measured = measure()
    for _, writer in connections:
        writer.close()
    await asyncio.gather(
        *(writer.wait_closed() for _, writer in connections), return_exceptions=True
    )
    first_error = repr(errors[0]) if errors else ""
    return len(connections), still_open, len(errors), first_error, measured


def hold_idle_connections(
    port: int, host: str, count: int, hold_seconds: float, measure: Callable[[], object]
) -> tuple[int, int, int, str, object]:
    """Open `count` connections to 127.0.0.1:`port`, complete one GET on each, wait
    `hold_seconds`, call `measure()` while every connection is idle and open, and close them.

    Returns (connections that got a 200, of them still open at `measure()`, failed
    connections, first failure, the value `measure()` returned)."""
    return asyncio.run(_hold(port, host, count, hold_seconds, measure))
