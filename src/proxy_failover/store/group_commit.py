"""Group commit: writes that arrive while an earlier write of the same key waits for its lock join
the next transaction together, so a burst of N small writes costs a few transactions, not N.

Why: under load, a health report's own work (one row, a few microseconds in the database) is a
small part of its transaction's cost (connection, ``BEGIN``, the proxy lock, the snapshot read,
``COMMIT``). Reports queue anyway, on SQLite's single writer or on PostgreSQL's row lock of the
proxy; here they queue as a batch and share one transaction.

Each key has at most one writer task. The writer calls ``commit(key, take)``; ``commit`` opens its
transaction, takes its locks, then calls ``take()`` for the items queued so far (later items start
the next batch) and returns one outcome per item: its result or the exception for that item alone.
If the transaction itself fails, a batch of several is retried one item per transaction, so one
item's failure never becomes another's (except a missed database deadline, ``StorageTimeout``,
which fails the batch at once); items never taken fail with the error that stopped them.
A caller's cancellation never cancels the shared transaction: it runs in the writer's task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from proxy_failover.core.errors import StorageTimeout, StorageUnavailable

K = TypeVar("K", bound=Hashable)
I = TypeVar("I")  # noqa: E741 - the item type, beside K and R
R = TypeVar("R")

#: ``commit(key, take)``: outcomes (a result or that item's exception) in the order ``take`` gave.
Commit = Callable[[K, Callable[[], list[I]]], Awaitable[list[R | Exception]]]


@dataclass(slots=True)
class _Pending(Generic[I, R]):
    item: I
    done: asyncio.Future[R]


@dataclass(slots=True)
class _Queue(Generic[I, R]):
    pending: list[_Pending[I, R]] = field(default_factory=list)
    writer: asyncio.Task[None] | None = None


class GroupCommit(Generic[K, I, R]):
    """Submit items by key; each is committed with whatever else of its key is waiting."""

    def __init__(self, commit: Commit[K, I, R]) -> None:
        self._commit = commit
        self._queues: dict[K, _Queue[I, R]] = {}
        self.transactions = 0  # committed or not: for tests and benchmarks

    async def submit(self, key: K, item: I) -> R:
        """Queue ``item`` and wait for its outcome (its result, or its exception raised)."""
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = _Queue()
        done: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        queue.pending.append(_Pending(item, done))
        # A writer whose task has returned may not have been cleared yet (its done-callback runs
        # later): it takes nothing more, so this item needs a writer of its own.
        if queue.writer is None or queue.writer.done():
            writer = asyncio.get_running_loop().create_task(self._write(key, queue))
            writer.add_done_callback(lambda task: self._writer_done(key, queue, task))
            queue.writer = writer
        return await asyncio.shield(done)

    async def _write(self, key: K, queue: _Queue[I, R]) -> None:
        while queue.pending:
            await self._run(key, queue)

    def _writer_done(self, key: K, queue: _Queue[I, R], writer: asyncio.Task[None]) -> None:
        """The writer ended: normally with nothing left; if cancelled (the loop is stopping),
        whatever still waits is told so rather than left waiting forever."""
        if queue.writer is not writer:  # a newer writer has the queue (see ``submit``)
            return
        queue.writer = None
        if writer.cancelled() or writer.exception() is not None:
            for pending in queue.pending:
                _settle(pending, _cancelled())
            queue.pending.clear()
        if not queue.pending and queue.writer is None and self._queues.get(key) is queue:
            del self._queues[key]

    async def _run(self, key: K, queue: _Queue[I, R]) -> None:
        taken: list[_Pending[I, R]] = []

        def take() -> list[I]:
            taken.extend(queue.pending)
            queue.pending.clear()
            return [pending.item for pending in taken]

        try:
            self.transactions += 1
            outcomes = await self._commit(key, take)
        except BaseException as error:
            if not taken:  # failed before its lock: whatever waits failed with it
                take()
            # A deadline missed is the database's state, not one item's: retrying each alone
            # would multiply the wait by the batch size while it stays unavailable.
            if (
                len(taken) > 1
                and isinstance(error, Exception)
                and not isinstance(error, StorageTimeout)
            ):
                for one in taken:
                    await self._alone(key, one)
                return
            for pending in taken:
                _settle(pending, error if isinstance(error, Exception) else _cancelled())
            if not isinstance(error, Exception):
                raise
            return
        for pending, outcome in zip(taken, outcomes, strict=True):
            _settle(pending, outcome)

    async def _alone(self, key: K, pending: _Pending[I, R]) -> None:
        """One item in its own transaction (its batch failed as a whole)."""
        try:
            self.transactions += 1
            (outcome,) = await self._commit(key, lambda: [pending.item])
        except Exception as error:
            outcome = error
        _settle(pending, outcome)


def _cancelled() -> Exception:
    return StorageUnavailable("the write was cancelled: the service is stopping")


def _settle(pending: _Pending[I, R], outcome: R | Exception) -> None:
    if pending.done.done():
        return
    if isinstance(outcome, Exception):
        pending.done.set_exception(outcome)
        pending.done.exception()  # its caller may be gone: never "exception was never retrieved"
    else:
        pending.done.set_result(outcome)
