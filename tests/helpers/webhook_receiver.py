"""A real webhook receiver for tests: uvicorn on a local port, verifying every signature.

It can be created before it listens (``port`` is reserved up front) so a test can let deliveries
fail first and start it later; ``fail_first`` answers 500 to that many requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import uvicorn

from proxy_failover.core.webhooks import verify
from tests.helpers.processes import free_port

Scope = dict[str, Any]
Message = dict[str, Any]


@dataclass(frozen=True)
class Received:
    """One request as the receiver saw it."""

    headers: dict[str, str]
    body: bytes
    signature_ok: bool

    @property
    def payload(self) -> dict[str, Any]:
        data = json.loads(self.body)
        assert isinstance(data, dict)
        return data

    @property
    def delivery_id(self) -> str:
        return self.headers["x-pfo-delivery"]


class WebhookReceiver:
    """Collects POSTs; ``received`` keeps every request, ``accepted`` the 2xx-answered ones."""

    def __init__(self, secret: str, *, port: int | None = None, fail_first: int = 0) -> None:
        self.secret = secret
        self.port = port or free_port()
        self.fail_first = fail_first
        #: While cleared, requests are received but not answered (a hanging receiver).
        self.answering = asyncio.Event()
        self.answering.set()
        self.received: list[Received] = []
        self.accepted: list[Received] = []
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        chunks: list[bytes] = []
        while True:
            message: Message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        ok = verify(
            self.secret,
            headers.get("x-pfo-timestamp", ""),
            body,
            headers.get("x-pfo-signature", ""),
            datetime.now(UTC),
        )
        item = Received(headers, body, ok)
        self.received.append(item)
        await self.answering.wait()
        status = 200
        if len(self.received) <= self.fail_first:
            status = 500
        elif not ok:
            status = 401
        else:
            self.accepted.append(item)
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def start(self) -> WebhookReceiver:
        config = uvicorn.Config(
            self,
            host="127.0.0.1",
            port=self.port,
            lifespan="off",
            ws="none",
            log_level="warning",
            access_log=False,
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        return self

    async def stop(self) -> None:
        self.answering.set()
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._server = None
        self._task = None
