"""One write gate per SQLite file, shared by every engine, event loop and thread of the process.

``serve`` runs the engine on its own loop and thread with its own connection pool; its writers
and the API's must queue on one gate, or they meet each other's lock inside SQLite and back off
(1, 2, 4 ... 50 ms) while the other side takes the lock back to back.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from proxy_failover.store import database
from proxy_failover.store.database import WriteGate

DEADLINE = 5.0


class LoopThread:
    """An event loop running in a thread of its own (as ``bootstrap.EngineThread`` runs one)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def submit(self, factory: Callable[[], Awaitable[Any]]) -> Any:
        async def run() -> Any:
            return await factory()

        return asyncio.run_coroutine_threadsafe(run(), self.loop)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(DEADLINE)
        self.loop.close()


async def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


async def test_a_waiter_on_another_loop_gets_the_gate_when_it_is_released() -> None:
    gate = WriteGate()
    other = LoopThread()
    try:
        await gate.acquire()
        got = threading.Event()

        async def take() -> None:
            await gate.acquire()
            got.set()

        done = other.submit(take)
        await asyncio.sleep(0.05)
        assert not got.is_set()  # held here: the other loop waits
        gate.release()
        await wait_for(got.is_set, "the other loop to take the gate")
        assert gate.locked()  # handed over, never free in between
        done.result(DEADLINE)
        other.submit(lambda: asyncio.sleep(0, gate.release())).result(DEADLINE)
        assert not gate.locked()
    finally:
        other.close()


async def test_waiters_are_served_in_arrival_order_across_loops() -> None:
    gate = WriteGate()
    threads = [LoopThread() for _ in range(3)]
    order: list[int] = []
    try:
        await gate.acquire()

        def taker(n: int) -> Callable[[], Awaitable[None]]:
            async def take() -> None:
                await gate.acquire()
                order.append(n)
                gate.release()

            return take

        futures = []
        for n, thread in enumerate(threads):
            futures.append(thread.submit(taker(n)))
            await wait_for(lambda n=n: len(gate._waiters) == n + 1, f"waiter {n} queued")
        gate.release()
        for future in futures:
            future.result(DEADLINE)
        assert order == [0, 1, 2]
        assert not gate.locked()
    finally:
        for thread in threads:
            thread.close()


async def test_a_cancelled_waiter_leaves_the_queue_and_one_woken_passes_the_gate_on() -> None:
    gate = WriteGate()
    await gate.acquire()
    gone = asyncio.create_task(gate.acquire())
    await wait_for(lambda: len(gate._waiters) == 1, "the first waiter queued")
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert not gate._waiters  # left the queue without taking the gate

    woken = asyncio.create_task(gate.acquire())
    after = asyncio.create_task(gate.acquire())
    await wait_for(lambda: len(gate._waiters) == 2, "two waiters queued")
    gate.release()  # ownership goes to ``woken`` ...
    woken.cancel()  # ... which is cancelled before it runs: it must hand the gate on
    with pytest.raises(asyncio.CancelledError):
        await woken
    await asyncio.wait_for(after, DEADLINE)
    assert gate.locked()
    gate.release()
    assert not gate.locked()


async def test_engines_on_one_file_share_one_gate_and_writers_on_two_loops_never_meet_busy(
    sqlite_url: str, tmp_path: Path
) -> None:
    """Two engines on one file (the API's pool and the engine thread's): one gate; a writer on
    the other thread queues on it while this one holds a write transaction, and gets in as soon
    as it commits, with no SQLITE_BUSY retry in between."""
    ours = database.create_engine(sqlite_url)
    theirs = database.create_engine(sqlite_url)
    elsewhere = database.create_engine(f"sqlite+aiosqlite:///{tmp_path / 'other.db'}")
    other = LoopThread()
    try:
        gate = database.write_gate(ours)._gate  # type: ignore[attr-defined]
        assert database.write_gate(theirs)._gate is gate  # type: ignore[attr-defined]
        assert database.write_gate(elsewhere)._gate is not gate  # type: ignore[attr-defined]
        ours_access = database.EngineAccess(ours)
        theirs_access = database.EngineAccess(theirs)
        entered = threading.Event()

        async def their_write() -> float:
            async with theirs_access.write() as conn:
                entered.set()
                await conn.execute(sa.text("SELECT 1"))
            return time.monotonic()

        async with ours_access.write() as conn:
            await conn.execute(sa.text("SELECT 1"))
            waiting = other.submit(their_write)
            await wait_for(lambda: len(gate._waiters) == 1, "the other thread's writer queued")
            assert not entered.is_set()
            released = time.monotonic()
        got_in = waiting.result(DEADLINE)
        assert got_in - released < 1.0  # no busy back-off ladder, no timeout
        assert entered.is_set()
    finally:
        other.close()
        for engine in (ours, theirs, elsewhere):
            await engine.dispose()
