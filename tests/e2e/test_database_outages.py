"""Chaos: the API's own PostgreSQL cluster frozen (SIGSTOP), stopped and restarted; a SQLite file
locked by another process. Answers come as 503/018 with ``Retry-After`` within the database
timeout, ``/readyz`` turns unready, both recover by themselves, and nothing acknowledged is lost.
The full SQLite disk is tests/e2e/test_full_disk.py.

Before: a frozen server held requests for 50 s (new ones 503 after 10 s, the redundancy read 20 s)
and a SQLite write waited 54.5 s behind another process's lock although the budget said 30 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator

import httpx
import pytest
import sqlalchemy as sa

from proxy_failover.config import Settings
from proxy_failover.core.errors import StorageTimeout
from proxy_failover.entrypoints.api import create_app
from proxy_failover.store import database
from proxy_failover.store.repository import Store
from tests.helpers.api import SECRET, Api, Tokens, in_process
from tests.helpers.pg_cluster import PgCluster, own_cluster
from tests.helpers.processes import wait_for

#: The deadline configured here; answers must come within it plus scheduling slack.
TIMEOUT = 1.0
#: Generous for a loaded 2-core CI machine, and far below the 10-50 s it took before.
ANSWER_WITHIN = 4.0
PROXY = "chaos"


@contextlib.asynccontextmanager
async def api_on(url: str) -> AsyncIterator[Api]:
    settings = Settings(database_url=url, jwt_secret=SECRET, database_timeout_seconds=TIMEOUT)
    app = create_app(settings)
    async with in_process(app, Tokens.signed_with(SECRET), "http://api") as api:
        yield api


async def _timed(api: Api, method: str, path: str, **kw: object) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    async with asyncio.timeout(30):  # a hang fails the test instead of the suite
        response = await api.call(method, path, api.tokens.admin, **kw)
    return response, time.monotonic() - started


def _assert_unavailable(response: httpx.Response, took: float) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "PROXY_FAILOVER_018"
    assert int(response.headers["Retry-After"]) >= 1
    assert took < ANSWER_WITHIN, took


async def _register(api: Api, name: str) -> str:
    body = {"proxyId": PROXY, "instanceData": {"instanceName": name}}
    return str((await api.ok("POST", "/proxy/instances", api.tokens.admin, 201, json=body))["id"])


async def _recovered(api: Api) -> bool:
    response = await api.call("GET", "/readyz")
    return response.status_code == 200


@pytest.fixture
def cluster() -> AsyncIterator[PgCluster]:  # type: ignore[misc]
    with own_cluster() as running:
        yield running


@pytest.mark.postgres
async def test_a_frozen_postgresql_is_503_within_the_timeout_and_recovers_by_itself(
    cluster: PgCluster,
) -> None:
    async with api_on(cluster.url) as api:
        acknowledged = [await _register(api, "before")]
        cluster.freeze()
        try:
            in_flight = asyncio.create_task(_timed(api, "GET", f"/proxy/{PROXY}/instances"))
            for method, path, body in [
                ("GET", f"/proxy/{PROXY}/redundancy", None),
                (
                    "POST",
                    "/proxy/instances",
                    {"proxyId": PROXY, "instanceData": {"instanceName": "x"}},
                ),
                ("GET", "/readyz", None),
            ]:
                response, took = await _timed(api, method, path, json=body)
                _assert_unavailable(response, took)
            _assert_unavailable(*await in_flight)
        finally:
            cluster.thaw()
        await wait_for(lambda: _recovered(api), within=15)
        acknowledged.append(await _register(api, "after"))
        listed = await api.ok("GET", f"/proxy/{PROXY}/instances", api.tokens.admin)
    assert sorted(i["id"] for i in listed) == sorted(acknowledged)


@pytest.mark.postgres
async def test_a_stopped_postgresql_is_503_and_a_restart_loses_nothing_acknowledged(
    cluster: PgCluster,
) -> None:
    async with api_on(cluster.url) as api:
        acknowledged = [await _register(api, f"i{n}") for n in range(5)]
        cluster.stop("immediate")  # a crash: no checkpoint, WAL replay on start
        response, took = await _timed(api, "GET", f"/proxy/{PROXY}/instances")
        _assert_unavailable(response, took)
        response, took = await _timed(api, "GET", "/readyz")
        _assert_unavailable(response, took)
        cluster.start()
        await wait_for(lambda: _recovered(api), within=20)
        listed = await api.ok("GET", f"/proxy/{PROXY}/instances", api.tokens.admin)
    assert sorted(i["id"] for i in listed) == sorted(acknowledged)


@pytest.mark.postgres
async def test_more_requests_than_the_pool_holds_all_fail_within_one_deadline(
    cluster: PgCluster,
) -> None:
    """Against a frozen server, requests beyond the pool (5 + 10 overflow) wait for a slot; the
    wait and the new connection share one deadline instead of adding up (before: those requests
    answered after twice the timeout). A bound with room for a loaded machine, far from 2x."""
    deadline = 2.0
    store = Store(cluster.url, timeout_seconds=deadline)
    try:
        async with store.read() as reader:  # the pool holds a live connection when it freezes
            await reader.connection.execute(sa.text("SELECT 1"))
        cluster.freeze()

        async def read() -> tuple[BaseException | None, float]:
            started = time.monotonic()
            try:
                async with store.read() as reader:
                    await reader.connection.execute(sa.text("SELECT 1"))
            except Exception as error:
                return error, time.monotonic() - started
            return None, time.monotonic() - started

        try:
            answers = await asyncio.gather(*(read() for _ in range(30)))
        finally:
            cluster.thaw()
        assert all(isinstance(error, StorageTimeout) for error, _ in answers), answers
        assert max(took for _, took in answers) < 1.5 * deadline, sorted(t for _, t in answers)
        async with store.read() as reader:  # and the pool works again by itself
            assert (await reader.connection.execute(sa.text("SELECT 1"))).scalar() == 1
    finally:
        await store.close()


async def _write_until(
    api: Api, stop: asyncio.Event, writer: int, answers: list[int], acknowledged: list[str]
) -> None:
    """Register instances back to back until ``stop``; each answer's status joins ``answers``,
    each 201's instance id ``acknowledged``."""
    n = 0
    while not stop.is_set():
        body = {"proxyId": PROXY, "instanceData": {"instanceName": f"w{writer}-{n}"}}
        async with asyncio.timeout(30):
            answer = await api.call("POST", "/proxy/instances", api.tokens.admin, json=body)
        n += 1
        if answer.status_code == 201:
            acknowledged.append(answer.json()["data"]["id"])
        else:
            assert answer.status_code == 503, answer.text  # never a 500
            assert answer.json()["error"]["code"] == "PROXY_FAILOVER_018"
            await asyncio.sleep(0.05)  # a client backing off, not a busy loop on a dead server
        answers.append(answer.status_code)


@pytest.mark.postgres
async def test_writes_in_flight_across_a_crash_and_restart_lose_nothing_acknowledged(
    cluster: PgCluster,
) -> None:
    """Four clients write while the server is killed (immediate stop) and restarted: each answer
    is 201 or 503/018, and every 201 is there afterwards. A 503 may still have committed (its
    answer was lost with the connection): not acknowledged is no promise either way."""
    answers: list[int] = []
    acknowledged: list[str] = []

    async def count(status: int, more_than: int) -> bool:
        return answers.count(status) > more_than

    async with api_on(cluster.url) as api:
        await _register(api, "first")
        stop = asyncio.Event()
        writers = [
            asyncio.create_task(_write_until(api, stop, w, answers, acknowledged)) for w in range(4)
        ]
        try:
            await wait_for(lambda: count(201, 20), within=20)  # writes acknowledged
            cluster.stop("immediate")  # a crash: no checkpoint, WAL replay on start
            await wait_for(lambda: count(503, 8), within=20)  # writes refused meanwhile
            cluster.start()
            await wait_for(lambda: _recovered(api), within=20)
            after = answers.count(201)
            await wait_for(lambda: count(201, after + 20), within=20)  # acknowledged again
        finally:
            stop.set()
            await asyncio.gather(*writers)
        listed = await api.ok("GET", f"/proxy/{PROXY}/instances", api.tokens.admin)
    assert set(acknowledged) <= {i["id"] for i in listed}
    assert len(acknowledged) == answers.count(201) > 40


async def test_a_sqlite_file_locked_by_another_process_is_503_within_the_timeout(
    sqlite_url: str,
) -> None:
    async with api_on(sqlite_url) as api:
        await _register(api, "before")
        other = sqlite3.connect(sa.make_url(sqlite_url).database or "", isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # holds the write lock, like a stuck process
            writes = [
                _timed(
                    api,
                    "POST",
                    "/proxy/instances",
                    json={"proxyId": PROXY, "instanceData": {"instanceName": f"w{n}"}},
                )
                for n in range(5)
            ]
            for response, took in await asyncio.gather(*writes):  # queued writers too
                _assert_unavailable(response, took)
            _assert_unavailable(*await _timed(api, "GET", "/readyz"))  # writes would be refused
            reads = await api.ok("GET", f"/proxy/{PROXY}/instances", api.tokens.admin)
            assert [i["instanceName"] for i in reads] == ["before"]  # reads go on meanwhile
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert await _recovered(api)
        await _register(api, "after")  # recovered by itself


async def test_a_writer_queued_behind_one_that_missed_the_lock_gives_up_with_it(
    sqlite_url: str,
) -> None:
    """The gate's wait and the file's must not add up: a writer queued behind a holder that then
    misses its deadline on another process's lock fails with it (before: it took the gate and
    waited its own full budget on the file, so a request behind the previous one's audit row
    answered after twice the timeout)."""
    store = Store(sqlite_url, timeout_seconds=2.0)
    other = sqlite3.connect(sa.make_url(sqlite_url).database or "", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")

        async def write() -> None:
            async with store.write():
                pass

        holder = asyncio.create_task(write())
        await wait_for(lambda: _gate_taken(store))
        # Queue a quarter into the holder's wait: its gate wait ends when the holder fails, well
        # before its own gate deadline, and (before) it then waited on the file all over again.
        await asyncio.sleep(0.5)
        assert not holder.done()
        queued = asyncio.create_task(write())
        results = await asyncio.gather(holder, queued, return_exceptions=True)
    finally:
        other.execute("ROLLBACK")
        other.close()
        await store.close()
    assert all(isinstance(result, StorageTimeout) for result in results), results
    assert "database is locked" in str(results[0])  # the holder waited on the file
    assert "locked by another process" in str(results[1])  # the queued one gave up with it


async def _gate_taken(store: Store) -> bool:
    gate = database._write_gates.get(store.engine.sync_engine)
    return gate is not None and gate.lock.locked()
