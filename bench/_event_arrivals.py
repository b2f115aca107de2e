"""When the control plane's failover events reach a stream client: the part of a data plane's
follow time that is the control plane's (commit, notify, stream), measured beside the data planes.

The data planes follow ``GET /proxy/:id/stream`` like this client does, so the arrival here
estimates when theirs received the event; what a data plane adds is its time after that.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx

from proxy_failover.client import AsyncFailoverClient


class EventArrivals:
    """Follows one proxy's stream; the first arrival of each failover event, by its id."""

    def __init__(self, url: str, token: str, proxy_id: str) -> None:
        self.url = url
        self.token = token
        self.proxy_id = proxy_id
        self.by_event: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        opened = asyncio.Event()
        self._task = asyncio.create_task(self._follow(opened))
        await asyncio.wait_for(opened.wait(), 10)

    async def _follow(self, opened: asyncio.Event) -> None:
        async with AsyncFailoverClient(self.url, self.token) as client:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    async for event in client.stream_events(self.proxy_id, on_open=opened.set):
                        details = event.data.get("data")
                        if event.type.startswith("failover.") and isinstance(details, dict):
                            self.by_event.setdefault(str(details.get("eventId")), time.time())
                await asyncio.sleep(0.1)

    def arrival(self, event_id: str) -> float | None:
        return self.by_event.get(event_id)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
