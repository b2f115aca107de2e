"""Event streams are capped per caller (429/022) and in total (503/023), give their slot back when
they close, and share one watch of the event log that still brings other replicas' commits; on
SQLite and PostgreSQL.

Before: nothing capped streams, and every idle stream re-read the log each second on its own
(1,000 idle streams cost 85 % of a core).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx

from proxy_failover.entrypoints.api.streams import StreamHub
from tests.helpers.api import Api, Tokens, api_settings
from tests.helpers.live_app import EventStream, fail_over, live_api, setup_proxy
from tests.helpers.processes import wait_for

PROXY = "capped"


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _hub(api: Api) -> StreamHub:
    assert api.app is not None
    hub: StreamHub = api.app.state.streams
    return hub


@contextlib.asynccontextmanager
async def _opened(api: Api, token: str) -> AsyncIterator[tuple[httpx.Response, EventStream]]:
    async with api.http.stream("GET", f"/proxy/{PROXY}/stream", headers=_auth(token)) as answer:
        assert answer.status_code == 200
        stream = EventStream(answer)
        assert await stream.next_line() == "retry: 2000"  # the stream is open on the server
        yield answer, stream


def _refusal(response: httpx.Response) -> tuple[int, str, int]:
    error = response.json()["error"]
    assert error["statusCode"] == response.status_code
    assert error["details"]["limit"] == "streams"
    assert int(response.headers["Retry-After"]) == error["details"]["retryAfterSeconds"] >= 1
    return response.status_code, error["code"], int(response.headers["Retry-After"])


async def test_streams_are_capped_per_caller_and_in_total(
    database_url: str, tokens: Tokens
) -> None:
    settings = api_settings(database_url, stream_max_per_caller=2, stream_max_total=3)
    async with live_api(settings, tokens) as api:
        await setup_proxy(api, PROXY, "a")
        path = f"/proxy/{PROXY}/stream"
        alice, admin = tokens.alice, tokens.admin
        async with contextlib.AsyncExitStack() as held:
            await held.enter_async_context(_opened(api, alice))
            first, _ = await held.enter_async_context(_opened(api, alice))
            status, code, _ = _refusal(await api.call("GET", path, alice))
            assert (status, code) == (429, "PROXY_FAILOVER_022")
            await held.enter_async_context(_opened(api, admin))  # another caller: the third
            status, code, _ = _refusal(await api.call("GET", path, admin))
            assert (status, code) == (503, "PROXY_FAILOVER_023")
            assert _hub(api).slots.in_use == 3
            await first.aclose()  # a closed stream gives its slot back

            async def reopened() -> bool:
                try:
                    async with _opened(api, admin):
                        return True
                except AssertionError:
                    return False

            assert await wait_for(reopened, within=10)
        await wait_for(lambda: _no_slots_held(api), within=10)


async def _no_slots_held(api: Api) -> bool:
    return _hub(api).slots.in_use == 0


async def test_a_refused_stream_leaves_the_open_one_streaming(
    database_url: str, tokens: Tokens
) -> None:
    settings = api_settings(database_url, stream_max_per_caller=1)
    async with live_api(settings, tokens) as api:
        first, _ = await setup_proxy(api, PROXY, "a", "b")
        async with _opened(api, tokens.alice) as (_, stream):
            refused = await api.call("GET", f"/proxy/{PROXY}/stream", tokens.alice)
            assert refused.status_code == 429
            await fail_over(api, PROXY, None, first)
            seen = await stream.next_event(within=5.0, prefix="failover.")
            assert seen["event"] == "failover.started"


async def test_a_commit_of_another_replica_reaches_the_stream_through_the_shared_watch(
    database_url: str, tokens: Tokens
) -> None:
    """Two apps on one database: a stream on the first sees a failover made through the second,
    and five idle streams share one watch that reads the log about once a second."""
    settings = api_settings(database_url)
    async with live_api(settings, tokens) as here, live_api(settings, tokens) as there:
        first, _ = await setup_proxy(there, PROXY, "a", "b")
        async with contextlib.AsyncExitStack() as held:
            streams = [
                await held.enter_async_context(_opened(here, tokens.alice)) for _ in range(5)
            ]
            hub = _hub(here)
            reads_before = hub.watch_reads
            await asyncio.sleep(2.0)  # five idle streams for two seconds
            assert hub.watch_reads - reads_before <= 4  # one watch, not one read per stream
            await fail_over(there, PROXY, None, first)
            seen = [await stream.next_event(5.0, prefix="failover.") for _, stream in streams]
        assert {event["event"] for event in seen} == {"failover.started"}
        assert hub.slots.in_use == 0 or await wait_for(lambda: _no_slots_held(here), within=10)
