"""A commit reaches the live streams of its proxy from memory, right after it commits, on SQLite and
PostgreSQL: the stream sends it without reading the event log, with the log's ``seq`` as its id;
the engine thread's commits cross over to the API's streams the same way; and when another
replica's entries lie in between, the stream reads the log and loses nothing, in order, without
waiting for the once-a-second shared watch (set to an hour here, so it cannot help). The webhook
worker is woken only by commits that queued deliveries (it ran two database reads on the API's
loop after every commit, beside the streams).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from proxy_failover.entrypoints.api.streams import StreamHub
from tests.helpers.api import Api, Tokens, api_settings
from tests.helpers.live_app import EventStream, fail_over, live_api, setup_proxy
from tests.helpers.processes import InstanceProcess, wait_for

PROXY = "handed"
NO_WATCH_SECONDS = 3600.0


def _hub(api: Api) -> StreamHub:
    assert api.app is not None
    hub: StreamHub = api.app.state.streams
    hub.poll_seconds = NO_WATCH_SECONDS  # before the first stream starts the watch
    return hub


@contextlib.asynccontextmanager
async def _stream(api: Api, hub: StreamHub) -> AsyncIterator[EventStream]:
    """alice's stream of PROXY, once its first round (one read of the log) is done."""
    reads = hub.log_reads
    headers = {"Authorization": f"Bearer {api.tokens.alice}"}
    async with api.http.stream("GET", f"/proxy/{PROXY}/stream", headers=headers) as answer:
        assert answer.status_code == 200
        stream = EventStream(answer)
        assert await stream.next_line() == "retry: 2000"

        async def caught_up() -> bool:
            return hub.log_reads == reads + 1

        await wait_for(caught_up)
        yield stream


async def _logged(api: Api, after: int) -> list[tuple[int, str]]:
    assert api.app is not None
    log = api.app.state.runtime.notifier.notification_log
    return [(entry.seq, entry.type) for entry in await log.notifications_after(PROXY, after)]


async def test_a_commit_reaches_the_stream_from_memory_with_its_log_seq(
    database_url: str, tokens: Tokens
) -> None:
    async with live_api(api_settings(database_url), tokens) as api:
        first, _ = await setup_proxy(api, PROXY, "a", "b")
        hub = _hub(api)
        async with _stream(api, hub) as stream:
            reads = hub.log_reads
            before = (await _logged(api, 0))[-1][0]
            await fail_over(api, PROXY, None, first)
            seen = [await stream.next_event(5.0, prefix="failover.") for _ in range(2)]
            assert hub.log_reads == reads  # both came from memory
        logged = [entry for entry in await _logged(api, before) if entry[1].startswith("failover.")]
    sent = [(int(event["id"]), event["event"]) for event in seen]
    assert sent == logged
    assert [kind for _, kind in sent] == ["failover.started", "failover.completed"]


async def test_another_replicas_entries_in_between_are_read_from_the_log_in_order(
    database_url: str, tokens: Tokens
) -> None:
    settings = api_settings(database_url)
    async with live_api(settings, tokens) as here, live_api(settings, tokens) as there:
        first, _ = await setup_proxy(here, PROXY, "a", "b")
        hub = _hub(here)
        async with _stream(here, hub) as stream:
            before = (await _logged(here, 0))[-1][0]
            started = await there.ok(  # committed by the other replica: not handed over here
                "POST",
                "/proxy/failover/execute",
                tokens.admin,
                json={"proxyId": PROXY, "targetInstanceId": first, "reason": "test"},
            )
            await here.ok(  # follows the other replica's entries: the stream reads the log
                "PUT",
                f"/proxy/failover/events/{started['id']}/complete",
                tokens.admin,
                json={"status": "completed"},
            )
            logged = await _logged(here, before)
            seen = [await stream.next_event(5.0) for _ in logged]
    assert [(int(event["id"]), event["event"]) for event in seen] == logged
    assert [kind for _, kind in logged][-2:] == ["failover.started", "failover.completed"]


async def test_the_engine_threads_commits_reach_the_stream_from_memory(
    database_url: str, tokens: Tokens
) -> None:
    instance = InstanceProcess().start()
    try:
        async with live_api(api_settings(database_url), tokens, run_engine=True) as api:
            alice = tokens.alice
            config = {"healthCheckIntervalSeconds": 0.2, "healthCheckTimeoutSeconds": 0.2}
            body = {"proxyId": PROXY, "config": {**config, "healthyThreshold": 1}}
            await api.ok("POST", "/proxy/failover/config", alice, 201, json=body)
            hub = _hub(api)
            async with _stream(api, hub) as stream:
                reads = hub.log_reads
                data = {"instanceName": "probed", "endpoint": instance.endpoint}
                await api.ok(
                    "POST",
                    "/proxy/instances",
                    alice,
                    201,
                    json={"proxyId": PROXY, "instanceData": data},
                )
                # the engine's probe finds it healthy and activates it, on the engine's thread
                activated = await stream.next_event(10.0, prefix="failover.completed")
                assert hub.log_reads == reads
    finally:
        instance.kill()
    assert activated["data"]["data"]["triggeredBy"] == "system"


async def test_only_commits_that_queue_deliveries_wake_the_webhook_worker(api: Api) -> None:
    assert api.app is not None
    worker = api.app.state.runtime.notifier.worker
    first, second = await setup_proxy(api, PROXY, "a", "b")
    wakes = worker.wakes
    await fail_over(api, PROXY, None, first)  # notifies, no subscription
    assert worker.wakes == wakes
    hook = {"url": "https://ops.example/hook", "secret": "s" * 32, "events": ["failover.started"]}
    await api.ok("POST", f"/proxy/{PROXY}/webhooks", api.tokens.admin, 201, json=hook)
    await fail_over(api, PROXY, first, second)  # started: queued; completed: not subscribed
    assert worker.wakes == wakes + 1
