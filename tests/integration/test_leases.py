"""Named leases on SQLite and PostgreSQL: one holder at a time, expiry, release, fencing epochs;
two engine leaders on one database take turns.

Each holder has its own engine (its own connection pool), as two replicas would.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence

import pytest

from proxy_failover.core.model import Notification
from proxy_failover.leadership import EngineLeader
from proxy_failover.store import Store
from proxy_failover.store.leases import Leases
from tests.helpers.processes import wait_for

NAME = "engine"
LONG = 30.0


@pytest.fixture
async def replicas(database_url: str) -> AsyncIterator[list[Leases]]:
    """Lease repositories on three separate engines over the same database."""
    stores = [Store(database_url) for _ in range(3)]
    try:
        yield [Leases(store.engine) for store in stores]
    finally:
        for store in stores:
            await store.close()


async def test_a_live_lease_has_one_holder(replicas: list[Leases]) -> None:
    a, b, _ = replicas
    first = await a.try_acquire(NAME, "a", LONG)
    assert first is not None
    assert first.epoch == 1
    assert await b.try_acquire(NAME, "b", LONG) is None
    assert await b.holder_of(NAME) == "a"
    again = await a.try_acquire(NAME, "a", LONG)  # its own live lease: same term, extended
    assert again is not None
    assert again.epoch == first.epoch
    assert again.expires_at >= first.expires_at
    assert await b.try_acquire(NAME, "b", LONG) is None


async def test_renew_extends_the_lease_and_keeps_the_term(replicas: list[Leases]) -> None:
    a, b, _ = replicas
    lease = await a.try_acquire(NAME, "a", LONG)
    assert lease is not None
    renewed = await a.renew(lease, LONG)
    assert renewed is not None
    assert renewed.epoch == lease.epoch
    assert renewed.expires_at >= lease.expires_at
    assert await b.try_acquire(NAME, "b", LONG) is None


async def test_expired_lease_is_taken_over_and_the_old_holder_learns_at_renew(
    replicas: list[Leases],
) -> None:
    a, b, _ = replicas
    short = await a.try_acquire(NAME, "a", 0.2)
    assert short is not None

    taken = await wait_for(lambda: b.try_acquire(NAME, "b", LONG), within=10)
    assert taken is not None
    assert taken.epoch == short.epoch + 1
    assert await a.renew(short, LONG) is None
    assert await a.release(short) is False  # not its term any more: nothing changes
    assert await a.try_acquire(NAME, "a", LONG) is None
    assert await a.holder_of(NAME) == "b"
    assert await b.renew(taken, LONG) is not None


async def test_release_hands_the_lease_over_at_once(replicas: list[Leases]) -> None:
    a, b, _ = replicas
    lease = await a.try_acquire(NAME, "a", LONG)
    assert lease is not None
    assert await a.release(lease) is True
    assert await b.holder_of(NAME) is None
    taken = await b.try_acquire(NAME, "b", LONG)
    assert taken is not None
    assert taken.epoch == lease.epoch + 1
    assert await a.renew(lease, LONG) is None


async def test_the_same_holder_after_a_release_starts_a_new_term(replicas: list[Leases]) -> None:
    a, _, _ = replicas
    lease = await a.try_acquire(NAME, "a", LONG)
    assert lease is not None
    assert await a.release(lease)
    again = await a.try_acquire(NAME, "a", LONG)
    assert again is not None
    assert again.epoch == lease.epoch + 1
    assert await a.renew(lease, LONG) is None  # the old term's renewal is fenced off
    assert await a.renew(again, LONG) is not None


async def test_concurrent_acquires_have_exactly_one_winner(replicas: list[Leases]) -> None:
    attempts = [
        replica.try_acquire(NAME, f"holder-{n}-{k}", LONG)
        for n, replica in enumerate(replicas)
        for k in range(4)
    ]
    results = await asyncio.gather(*attempts)
    winners = [lease for lease in results if lease is not None]
    assert len(winners) == 1
    assert winners[0].epoch == 1
    assert await replicas[0].holder_of(NAME) == winners[0].holder


async def test_leases_of_different_names_are_independent(replicas: list[Leases]) -> None:
    a, b, _ = replicas
    assert await a.try_acquire("engine", "a", LONG) is not None
    other = await b.try_acquire("something-else", "b", LONG)
    assert other is not None
    assert other.epoch == 1


class IdleEngine:
    """Stands in for the engine: runs until stopped, and notes how many run at once."""

    def __init__(self, name: str, running: list[str], most: list[int]) -> None:
        self.name, self._running, self._most = name, running, most
        self._stop = asyncio.Event()

    async def run(self) -> None:
        self._running.append(self.name)
        self._most[0] = max(self._most[0], len(self._running))
        try:
            await self._stop.wait()
        finally:
            self._running.remove(self.name)

    def stop(self) -> None:
        self._stop.set()

    def notify(self, proxy_id: str, notifications: Sequence[Notification] = ()) -> None:
        return None


async def test_two_engine_leaders_on_one_database_take_turns(replicas: list[Leases]) -> None:
    running: list[str] = []
    most = [0]

    def terms(name: str) -> Callable[[], contextlib.AbstractAsyncContextManager[IdleEngine]]:
        @contextlib.asynccontextmanager
        async def term() -> AsyncIterator[IdleEngine]:
            yield IdleEngine(name, running, most)

        return term

    leaders = [
        EngineLeader(replicas[n], terms(name), ttl_seconds=1.0, holder=name)
        for n, name in enumerate(("a", "b"))
    ]
    tasks = [asyncio.create_task(leader.run()) for leader in leaders]
    try:

        async def sole_leader() -> EngineLeader | None:
            leading = [leader for leader in leaders if leader.is_leader]
            return leading[0] if len(leading) == 1 else None

        first = await wait_for(sole_leader)
        assert first is not None
        assert first.lease is not None
        initial = first.lease

        async def renewed() -> bool:
            return first.lease is not None and first.lease.expires_at > initial.expires_at

        await wait_for(renewed)  # renewals keep it: the other stays a standby meanwhile
        assert running == [first.holder]
        first.stop()  # a clean stop releases the lease: the standby takes over at once
        second = next(leader for leader in leaders if leader is not first)

        async def took_over() -> bool:
            # its engine starts just after the lease is won: wait for both
            return second.is_leader and running == [second.holder]

        await wait_for(took_over)
        assert second.lease is not None
        assert second.lease.epoch == initial.epoch + 1
    finally:
        for leader in leaders:
            leader.stop()
        await asyncio.gather(*tasks)
    assert most[0] == 1  # never two engines at once
