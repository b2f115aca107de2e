"""EngineLeader: stand by, lead while the lease holds, step down in time, release on stop.

A scripted lease repository and engines that record what happens to them; real (short) time,
every wait polls a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from proxy_failover.core.model import Notification
from proxy_failover.leadership import EngineLeader
from proxy_failover.store.leases import Lease
from tests.helpers.processes import wait_for


@dataclass
class ScriptedLeases:
    """One lease in memory; ``renewals`` says how renewals go: ``ok``, ``lost`` or ``error``
    (the database is unreachable: every call fails)."""

    free: bool = True
    renewals: str = "ok"
    epoch: int = 0
    expires_at: float = 0.0  # monotonic: when the lease would lapse for everyone else
    log: list[str] = field(default_factory=list)
    acquire_attempts: int = 0

    async def try_acquire(self, name: str, holder: str, ttl_seconds: float) -> Lease | None:
        self.acquire_attempts += 1
        if self.renewals == "error":
            raise ConnectionError("database unreachable")
        if not self.free:
            return None
        self.free = False
        self.epoch += 1
        self.expires_at = time.monotonic() + ttl_seconds
        self.log.append(f"acquire {self.epoch}")
        return Lease(name, holder, self.epoch, datetime.now(UTC))

    async def renew(self, lease: Lease, ttl_seconds: float) -> Lease | None:
        if self.renewals == "error":
            raise ConnectionError("database unreachable")
        if self.renewals == "lost" or lease.epoch != self.epoch:
            return None
        self.expires_at = time.monotonic() + ttl_seconds
        self.log.append(f"renew {lease.epoch}")
        return lease

    async def release(self, lease: Lease) -> bool:
        if self.renewals == "error":
            raise ConnectionError("database unreachable")
        self.log.append(f"release {lease.epoch}")
        self.free = True
        return True


@dataclass
class RecordingEngine:
    """Runs until stopped (unless ``stubborn``); records its life in the shared log."""

    number: int
    log: list[str]
    stubborn: bool = False
    dies: bool = False
    stopped_at: float | None = None
    notified: list[str] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        self.log.append(f"run {self.number}")
        try:
            if self.dies:
                return
            if self.stubborn:
                await asyncio.sleep(3600)
            await self._stop.wait()
        finally:
            self.log.append(f"ended {self.number}")

    def stop(self) -> None:
        self.stopped_at = time.monotonic()
        self.log.append(f"stop {self.number}")
        self._stop.set()

    def notify(self, proxy_id: str, notifications: Sequence[Notification] = ()) -> None:
        self.notified.append(proxy_id)


@dataclass
class Harness:
    leases: ScriptedLeases
    leader: EngineLeader
    engines: list[RecordingEngine]
    task: asyncio.Task[None] | None = None

    @property
    def log(self) -> list[str]:
        return self.leases.log

    async def stop(self) -> None:
        self.leader.stop()
        assert self.task is not None
        await asyncio.wait_for(self.task, 10)


@contextlib.asynccontextmanager
async def harness(
    ttl: float = 0.6, *, free: bool = True, stubborn: bool = False, dies: bool = False
) -> AsyncIterator[Harness]:
    leases = ScriptedLeases(free=free)
    engines: list[RecordingEngine] = []

    @contextlib.asynccontextmanager
    async def term() -> AsyncIterator[RecordingEngine]:
        engine = RecordingEngine(len(engines) + 1, leases.log, stubborn=stubborn, dies=dies)
        engines.append(engine)
        yield engine
        leases.log.append(f"closed {engine.number}")

    leader = EngineLeader(leases, term, ttl_seconds=ttl, holder="me")
    h = Harness(leases, leader, engines)
    h.task = asyncio.create_task(leader.run())
    try:
        yield h
    finally:
        if not h.task.done():
            await h.stop()


def became(predicate: Callable[[], object]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return bool(predicate())

    return check


async def test_leads_while_holding_the_lease_and_forwards_changes() -> None:
    async with harness() as h:
        await wait_for(became(lambda: h.leader.is_leader))
        h.leader.notify("edge")
        await wait_for(became(lambda: "renew 1" in h.log))  # renewed every ttl/3
        assert h.leader.lease is not None
        assert h.leader.lease.epoch == 1
        await h.stop()
    assert [engine.notified for engine in h.engines] == [["edge"]]
    assert not h.leader.is_leader
    # the engine stops and its term closes before the lease is given back
    tail = [line for line in h.log if not line.startswith("renew")]
    assert tail == ["acquire 1", "run 1", "stop 1", "ended 1", "closed 1", "release 1"]


async def test_standby_runs_nothing_and_drops_changes_until_the_lease_is_free() -> None:
    async with harness(free=False) as h:
        await wait_for(became(lambda: h.leases.acquire_attempts >= 2))
        h.leader.notify("edge")  # no engine here: the leader's engine sees it in the database
        assert h.engines == []
        assert not h.leader.is_leader
        h.leases.free = True  # the other replica released it (or it expired)
        await wait_for(became(lambda: h.leader.is_leader))
        assert len(h.engines) == 1
        assert h.engines[0].notified == []


async def test_lost_lease_stops_the_engine_at_once_without_releasing() -> None:
    async with harness() as h:
        await wait_for(became(lambda: h.leader.is_leader))
        h.leases.renewals = "lost"  # someone else took it over
        await wait_for(became(lambda: "closed 1" in h.log))
        assert not h.leader.is_leader
        assert "release 1" not in h.log
        assert h.leader.terms == 1
        h.leases.renewals = "ok"
        h.leases.free = True
        await wait_for(became(lambda: h.leader.terms == 2))
        assert h.leader.lease is not None
        assert h.leader.lease.epoch == 2
        assert len(h.engines) == 2  # a fresh engine for the new term


async def test_unrenewable_lease_stops_the_engine_before_it_could_expire(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="proxy_failover.engine"):
        async with harness(ttl=1.5) as h:
            await wait_for(became(lambda: h.leader.is_leader))
            h.leases.renewals = "error"  # the database stops answering
            await wait_for(became(lambda: "closed 1" in h.log))
            stopped_at = h.engines[0].stopped_at
            assert stopped_at is not None
            # a third of the TTL before the lease lapses for the other replicas
            assert stopped_at < h.leases.expires_at
            assert not h.leader.is_leader
            await wait_for(became(lambda: h.leases.acquire_attempts >= 3))  # standing by
            assert len(h.engines) == 1
    messages = [record.getMessage() for record in caplog.records]
    assert any("renewing the engine lease failed" in m for m in messages)
    assert any("not renewed" in m and "stepping down" in m for m in messages)
    assert any("could not release" in m for m in messages)  # it expires by itself


async def test_engine_that_ignores_stop_is_cancelled_when_its_lease_may_lapse() -> None:
    async with harness(stubborn=True) as h:
        await wait_for(became(lambda: h.leader.is_leader))
        h.leases.renewals = "lost"
        await wait_for(became(lambda: "ended 1" in h.log))
        assert h.log.index("stop 1") < h.log.index("ended 1") < h.log.index("closed 1")


async def test_engine_that_ends_by_itself_is_replaced_by_a_fresh_one() -> None:
    async with harness(dies=True) as h:
        await wait_for(became(lambda: h.leader.terms >= 2))
        assert "release 1" in h.log
        assert h.log.index("closed 1") < h.log.index("release 1") < h.log.index("acquire 2")


async def test_a_term_that_cannot_start_releases_the_lease_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    leases = ScriptedLeases()
    opened = [0]

    @contextlib.asynccontextmanager
    async def term() -> AsyncIterator[RecordingEngine]:
        opened[0] += 1
        if opened[0] == 1:
            raise OSError("too many open files")
        yield RecordingEngine(opened[0], leases.log)

    leader = EngineLeader(leases, term, ttl_seconds=0.6, holder="me")
    task = asyncio.create_task(leader.run())
    try:
        await wait_for(became(lambda: leader.is_leader))
    finally:
        leader.stop()
        await asyncio.wait_for(task, 10)
    assert leases.log[:3] == ["acquire 1", "release 1", "acquire 2"]
    assert any("leading failed" in record.getMessage() for record in caplog.records)
