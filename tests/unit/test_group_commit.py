"""GroupCommit's queueing rules, with a scripted commit function standing in for a transaction."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from proxy_failover.core.errors import StorageTimeout, StorageUnavailable
from proxy_failover.store.group_commit import GroupCommit


class Script:
    """A commit that waits on ``gate`` before taking (as a transaction waits for its lock)."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.batches: list[list[str]] = []
        self.fail_before_take: Exception | None = None
        self.fail_with: Callable[[list[str]], Exception | None] = lambda _items: None

    async def commit(self, key: str, take: Callable[[], list[str]]) -> list[str | Exception]:
        await self.gate.wait()
        if self.fail_before_take is not None:
            raise self.fail_before_take
        items = take()
        self.batches.append(items)
        failure = self.fail_with(items)
        if failure is not None:
            raise failure
        return [ValueError(item) if item.startswith("bad") else f"{key}:{item}" for item in items]


async def test_items_waiting_for_the_lock_share_the_next_transaction() -> None:
    script = Script()
    group: GroupCommit[str, str, str] = GroupCommit(script.commit)
    first = asyncio.ensure_future(group.submit("k", "1"))
    rest = [asyncio.ensure_future(group.submit("k", str(n))) for n in range(2, 5)]
    other = asyncio.ensure_future(group.submit("other", "x"))
    await asyncio.sleep(0)  # every item queued; the writers wait for their "lock"
    script.gate.set()
    assert await first == "k:1"
    assert [await r for r in rest] == ["k:2", "k:3", "k:4"]
    assert await other == "other:x"
    assert sorted(script.batches) == [["1", "2", "3", "4"], ["x"]]
    assert group.transactions == 2


async def test_an_item_failing_alone_fails_no_other() -> None:
    script = Script()
    script.gate.set()
    group: GroupCommit[str, str, str] = GroupCommit(script.commit)
    answers = await asyncio.gather(
        group.submit("k", "a"),
        group.submit("k", "bad"),
        group.submit("k", "b"),
        return_exceptions=True,
    )
    assert answers[0] == "k:a"
    assert answers[2] == "k:b"
    assert isinstance(answers[1], ValueError)
    assert script.batches == [["a", "bad", "b"]]


async def test_a_failed_transaction_is_retried_one_item_at_a_time() -> None:
    script = Script()
    script.gate.set()
    script.fail_with = lambda items: StorageUnavailable("boom") if "poison" in items else None
    group: GroupCommit[str, str, str] = GroupCommit(script.commit)
    answers = await asyncio.gather(
        group.submit("k", "a"),
        group.submit("k", "poison"),
        group.submit("k", "b"),
        return_exceptions=True,
    )
    assert answers[0] == "k:a"
    assert answers[2] == "k:b"
    assert isinstance(answers[1], StorageUnavailable)
    assert script.batches == [["a", "poison", "b"], ["a"], ["poison"], ["b"]]
    assert group.transactions == 4


async def test_a_missed_database_deadline_fails_the_batch_at_once_without_retrying_alone() -> None:
    """While the database does not answer, a retry per item would multiply the wait by the
    batch size (five queued writes took 11 s behind a locked SQLite file)."""
    script = Script()
    script.gate.set()
    script.fail_with = lambda items: StorageTimeout("database is locked")
    group: GroupCommit[str, str, str] = GroupCommit(script.commit)
    answers = await asyncio.gather(
        *(group.submit("k", item) for item in "abc"), return_exceptions=True
    )
    assert all(isinstance(answer, StorageTimeout) for answer in answers)
    assert script.batches == [["a", "b", "c"]]
    assert group.transactions == 1


async def test_a_failure_before_the_lock_fails_everything_waiting_then_recovers() -> None:
    script = Script()
    script.fail_before_take = StorageUnavailable("database down")
    group: GroupCommit[str, str, str] = GroupCommit(script.commit)
    waiting = [asyncio.ensure_future(group.submit("k", n)) for n in "abc"]
    script.gate.set()
    for future in waiting:
        with pytest.raises(StorageUnavailable):
            await future
    script.fail_before_take = None
    assert await group.submit("k", "d") == "k:d"  # the queue is usable again
    assert script.batches == [["d"]]


@pytest.mark.parametrize("turns", [1, 3], ids=["before-it-started", "while-it-waits"])
async def test_cancelling_the_writer_fails_its_items_as_unavailable(turns: int) -> None:
    script = Script()
    group: GroupCommit[str, str, str] = GroupCommit(script.commit)
    waiting = asyncio.ensure_future(group.submit("k", "a"))
    for _ in range(turns):
        await asyncio.sleep(0)
    writers = [
        t for t in asyncio.all_tasks() if t is not asyncio.current_task() and t is not waiting
    ]
    assert len(writers) == 1
    writers[0].cancel()  # the service is stopping
    with pytest.raises(StorageUnavailable):
        await waiting
    script.gate.set()
    assert await group.submit("k", "b") == "k:b"  # a new writer serves later items


async def test_an_item_submitted_as_the_writer_finishes_gets_a_writer_of_its_own() -> None:
    """The writer's task has returned but its done-callback has not run yet: an item submitted in
    that window used to see a writer (done, not yet cleared), join its queue and wait forever (a
    health report or an audit row hung; seen across a PostgreSQL crash)."""
    late: list[asyncio.Future[str]] = []

    async def commit(key: str, take: Callable[[], list[str]]) -> list[str | Exception]:
        items = take()
        if items == ["first"]:  # its first step runs before the writer's done-callback
            late.append(asyncio.ensure_future(group.submit(key, "late")))
        return list(items)

    group: GroupCommit[str, str, str] = GroupCommit(commit)
    assert await asyncio.wait_for(group.submit("k", "first"), 5) == "first"
    assert len(late) == 1
    assert await asyncio.wait_for(late[0], 5) == "late"
