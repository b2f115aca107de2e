"""Outbound HTTP a remote peer cannot turn against us: a response is read up to a small cap.

Webhook receivers and recovery endpoints are chosen by users. What they answer is only a status
to us, so their bodies are read up to ``RESPONSE_READ_LIMIT`` (enough for keep-alive to reuse the
connection after an ordinary answer) and discarded; a receiver streaming gigabytes costs nothing.
"""

from __future__ import annotations

from typing import Any

import httpx

#: Bytes of a response body read (and dropped) at most; past it the connection is closed.
RESPONSE_READ_LIMIT = 64 * 1024


async def post_for_status(
    client: httpx.AsyncClient, url: str, *, limit: int = RESPONSE_READ_LIMIT, **request: Any
) -> int:
    """POST and return the response status, reading at most ``limit`` bytes of its body.

    Bound the whole exchange with ``asyncio.timeout`` at the caller: httpx's timeouts are per
    network operation, so a body dripped a byte at a time would never trip them."""
    async with client.stream("POST", url, **request) as response:
        read = 0
        async for chunk in response.aiter_raw():
            read += len(chunk)
            if read >= limit:
                break  # leaving the block closes the connection instead of draining it
        return response.status_code
