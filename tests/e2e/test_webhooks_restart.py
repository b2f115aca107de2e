"""``serve`` killed with -9 while deliveries are pending, restarted: every one is delivered."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest

from tests.helpers.api import SECRET as JWT_SECRET
from tests.helpers.api import Api, Tokens
from tests.helpers.live_app import fail_over, setup_proxy
from tests.helpers.processes import wait_for
from tests.helpers.serve import ServeProcess, start_serve, stop_serve
from tests.helpers.webhook_receiver import WebhookReceiver

PROXY = "edge-restart"
SECRET = "restart-receiver-secret"
ENV = {
    "PFO_JWT_SECRET": JWT_SECRET,
    "PFO_WEBHOOK_TIME_SCALE": "0.001",  # retries after 1 ms, 5 ms, ... 3.6 s
    "PFO_WEBHOOK_TIMEOUT_SECONDS": "1",  # a killed worker's claims free up 3 s later
}


@pytest.mark.slow
async def test_kill_9_with_pending_deliveries_then_restart_delivers_every_one(
    sqlite_url: str, tmp_path: Path, tokens: Tokens
) -> None:
    receiver = WebhookReceiver(SECRET)  # port reserved; down for now
    server: ServeProcess | None = start_serve(sqlite_url, tmp_path / "first.log", ENV)
    assert server is not None
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            api = Api(http, tokens)
            first, second = await setup_proxy(api, PROXY, "edge-a", "edge-b")
            await api.ok(
                "POST",
                f"/proxy/{PROXY}/webhooks",
                tokens.alice,
                201,
                json={"url": receiver.url, "secret": SECRET},
            )
            await fail_over(api, PROXY, None, first)
            await fail_over(api, PROXY, first, second)
            await fail_over(api, PROXY, second, first)
            path = f"/proxy/{PROXY}/webhooks/deliveries?limit=1000"

            async def head_refused_twice() -> list[dict[str, object]]:
                listed: list[dict[str, object]] = await api.ok("GET", path, tokens.alice)
                return listed if int(str(listed[-1]["attempts"])) >= 2 else []

            queued = await wait_for(head_refused_twice, within=10)
        assert len(queued) >= 6  # 3 x (started, completed) at least
        assert {d["status"] for d in queued} == {"pending"}
        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait(timeout=10)
        server = None

        await receiver.start()
        server = start_serve(sqlite_url, tmp_path / "second.log", ENV)
        wanted = [str(d["id"]) for d in reversed(queued)]  # oldest first

        async def all_arrived() -> bool:
            return set(wanted) <= {r.delivery_id for r in receiver.accepted}

        await wait_for(all_arrived, within=30)
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            listed = await Api(http, tokens).ok("GET", path, tokens.alice)
    finally:
        if server is not None:
            stop_serve(server)
        await receiver.stop()

    assert {d["status"] for d in listed if d["id"] in wanted} == {"delivered"}
    assert all(r.signature_ok for r in receiver.received)
    first_seen: list[str] = []
    for r in receiver.accepted:
        if r.delivery_id not in first_seen:
            first_seen.append(r.delivery_id)
    assert first_seen[: len(wanted)] == wanted  # in order, none lost
    epochs = [r.payload["epoch"] for r in receiver.accepted if r.payload["type"].startswith("fail")]
    assert epochs == sorted(epochs)
