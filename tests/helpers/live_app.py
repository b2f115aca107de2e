"""The whole app served by uvicorn on a local port, in the test's event loop (SSE needs a real
server: an in-process ASGI transport buffers whole responses), and a small failover scenario."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import uvicorn

from proxy_failover.config import Settings
from proxy_failover.entrypoints.api import create_app
from tests.helpers.api import Api
from tests.helpers.processes import free_port


class EventStream:
    """Reads ``text/event-stream`` frames into dicts of their fields."""

    def __init__(self, response: httpx.Response) -> None:
        self._lines = response.aiter_lines()

    async def next_line(self, within: float = 5.0) -> str:
        """The next raw line (``retry: 2000`` first: the server holds the stream open)."""
        return await asyncio.wait_for(anext(self._lines), within)

    async def next_event(self, within: float, prefix: str = "") -> dict[str, Any]:
        """The next event whose type starts with ``prefix``, read within ``within`` seconds."""
        return await asyncio.wait_for(self._read(prefix), within)

    async def _read(self, prefix: str) -> dict[str, Any]:
        fields: dict[str, str] = {}
        async for line in self._lines:
            if not line:
                if "data" in fields and fields.get("event", "").startswith(prefix):
                    return {**fields, "data": json.loads(fields["data"])}
                fields = {}
                continue
            if line.startswith(":"):
                continue
            name, _, text = line.partition(":")
            fields[name] = text.removeprefix(" ")
        raise AssertionError("stream ended")


@contextlib.asynccontextmanager
async def live_api(
    settings: Settings, tokens: Any, *, run_engine: bool = False
) -> AsyncIterator[Api]:
    """``create_app(settings)`` on uvicorn (lifespan on; the engine's thread with
    ``run_engine``); an ``Api`` client pointed at it."""
    port = free_port()
    app = create_app(settings, run_engine=run_engine)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        ws="none",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            yield Api(http, tokens, app)
    finally:
        server.should_exit = True
        await task


async def setup_proxy(api: Api, proxy: str, *names: str) -> list[str]:
    """alice's proxy with healthy instances (priority in the given order); their ids."""
    alice = api.tokens.alice
    await api.ok(
        "POST",
        "/proxy/failover/config",
        alice,
        201,
        json={"proxyId": proxy, "config": {"enableAutoFailover": False}},
    )
    ids = []
    for rank, name in enumerate(names):
        data = await api.ok(
            "POST",
            "/proxy/instances",
            alice,
            201,
            json={"proxyId": proxy, "instanceData": {"instanceName": name, "priority": rank}},
        )
        ids.append(str(data["id"]))
    for instance_id in ids:
        await api.ok(
            "PUT", f"/proxy/instances/{instance_id}/health", alice, json={"healthStatus": "healthy"}
        )
    return ids


async def fail_over(api: Api, proxy: str, source: str | None, target: str) -> dict[str, Any]:
    """An admin's manual failover, executed and completed: failover.started then .completed."""
    admin = api.tokens.admin
    event = await api.ok(
        "POST",
        "/proxy/failover/execute",
        admin,
        json={
            "proxyId": proxy,
            "sourceInstanceId": source,
            "targetInstanceId": target,
            "reason": "test",
        },
    )
    done = await api.ok(
        "PUT",
        f"/proxy/failover/events/{event['id']}/complete",
        admin,
        json={"status": "completed"},
    )
    assert isinstance(done, dict)
    return done
