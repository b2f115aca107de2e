"""The engine's leader lease: of several ``serve`` replicas on one database, one runs the engine.

Without it every replica probes every instance (N replicas, N probes) and sends the same recovery
POSTs. Decisions would stay safe either way (``apply_decision`` re-checks under the proxy's row
lock); the lease is about not duplicating the work. ``EngineLeader.run()`` loops: stand by (try to
take the lease every ``standby_period``), lead (run one fresh engine while renewing the lease every
``ttl/3``), step down (stop that engine) as soon as the lease is lost or could not be renewed for
``2*ttl/3`` -- a third of the TTL before anyone else can take it -- and release the lease on a clean
stop so a standby takes over at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from proxy_failover.core.model import Notification
from proxy_failover.store.leases import Lease

log = logging.getLogger("proxy_failover.engine")

#: The lease's name in ``pfo_leases``.
ENGINE_LEASE = "engine"
DEFAULT_TTL_SECONDS = 10.0
#: A standby tries to take the lease at least this often (more often with a short TTL).
MAX_STANDBY_PERIOD = 1.0


class LeaseRepository(Protocol):
    """``store.leases.Leases``, injected for testability."""

    async def try_acquire(self, name: str, holder: str, ttl_seconds: float) -> Lease | None: ...
    async def renew(self, lease: Lease, ttl_seconds: float) -> Lease | None: ...
    async def release(self, lease: Lease) -> bool: ...


class Runner(Protocol):
    """What one term runs: ``engine.Engine``."""

    async def run(self) -> None: ...
    def stop(self) -> None: ...
    def notify(self, proxy_id: str, notifications: Sequence[Notification] = ()) -> None: ...


#: Opens one term's runner (and whatever it holds, e.g. its prober) and closes it after the term.
TermFactory = Callable[[], contextlib.AbstractAsyncContextManager[Runner]]


def default_holder() -> str:
    """Unique per process run: host, pid and a random suffix (a restarted process is new)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class EngineLeader:
    """Runs a fresh engine only while this process holds the engine lease.

    The engine's in-memory schedule and recovery bookkeeping start afresh on every term: another
    replica may have led in between, and the database is the truth. ``notify`` (the service's
    change listener) reaches the engine while leading and is dropped on a standby: the leader's
    next evaluation (at most a second later) sees the change in the database.
    """

    def __init__(
        self,
        leases: LeaseRepository,
        open_term: TermFactory,
        *,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        holder: str | None = None,
        name: str = ENGINE_LEASE,
        standby_period: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_seconds <= 0:
            raise ValueError("the lease TTL must be positive")
        self._leases = leases
        self._open_term = open_term
        self.ttl = ttl_seconds
        self.holder = holder or default_holder()
        self.name = name
        self.renew_period = ttl_seconds / 3
        #: Step down this long before the lease could expire: the engine stops well before a
        #: standby may take over.
        self.margin = ttl_seconds / 3
        self.standby_period = (
            standby_period
            if standby_period is not None
            else min(MAX_STANDBY_PERIOD, self.renew_period)
        )
        self._retry_period = min(0.5, ttl_seconds / 10)
        self._clock = clock
        self._stopping = asyncio.Event()
        self._runner: Runner | None = None
        self.is_leader = False
        #: The lease of the current term (None while standing by).
        self.lease: Lease | None = None
        self.terms = 0

    # --- the service's change listener ----------------------------------------------------------
    def notify(self, proxy_id: str, notifications: Sequence[Notification] = ()) -> None:
        runner = self._runner
        if runner is not None:
            runner.notify(proxy_id, notifications)

    # --- the loop -------------------------------------------------------------------------------
    async def run(self) -> None:
        """Stand by, lead, step down, ... until ``stop()``; releases the lease on the way out."""
        self._stopping.clear()
        log.info("engine: asking for the engine lease as %s (ttl %gs)", self.holder, self.ttl)
        problem: str | None = None
        standing_by_logged = False
        while not self._stopping.is_set():
            started = self._clock()
            try:
                lease = await self._leases.try_acquire(self.name, self.holder, self.ttl)
            except Exception as exc:  # the database may be briefly unavailable: retry
                lease = None
                if str(exc) != problem:
                    problem = str(exc)
                    log.warning("engine: cannot take the engine lease: %s", exc)
            else:
                if problem is not None:
                    log.info("engine: lease store reachable again")
                    problem = None
            if lease is not None:
                standing_by_logged = False
                try:
                    await self._lead(lease, started)
                    continue  # try again at once: after a clean stop the loop ends
                except Exception:  # e.g. the term's engine could not be built: never die
                    log.exception("engine: leading failed: stepping down")
                    await self._release(lease)
                    await self._pause(self.standby_period)
                    continue
            if not standing_by_logged and problem is None:
                standing_by_logged = True
                log.info("engine: another replica holds the engine lease: standing by")
            await self._pause(self.standby_period)

    def stop(self) -> None:
        """Ask ``run()`` to stop the engine, release the lease and return."""
        self._stopping.set()

    async def _pause(self, seconds: float, task: asyncio.Task[None] | None = None) -> None:
        """Sleep ``seconds``; wake early on ``stop()`` or when ``task`` ends."""
        waiter = asyncio.ensure_future(self._stopping.wait())
        waited: set[asyncio.Future[Any]] = {waiter}
        if task is not None:
            waited.add(task)
        try:
            await asyncio.wait(
                waited, timeout=max(seconds, 0.0), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            waiter.cancel()

    async def _lead(self, lease: Lease, started: float) -> None:
        """One term: run a fresh engine while the lease holds, stop it before it could lapse."""
        valid_until = started + self.ttl  # the database's expiry is later: it started after us
        release = True
        log.info("engine: took the engine lease (epoch %d): leading", lease.epoch)
        async with self._open_term() as runner:
            task = asyncio.create_task(runner.run(), name="pfo-engine-term")
            self._runner, self.lease, self.is_leader = runner, lease, True
            self.terms += 1
            next_renewal = started + self.renew_period
            failing = False
            try:
                while True:
                    stop_at = valid_until - self.margin
                    await self._pause(min(next_renewal, stop_at) - self._clock(), task)
                    if self._stopping.is_set():
                        break
                    if task.done():
                        log.error("engine: the engine stopped by itself: stepping down")
                        break
                    now = self._clock()
                    if now >= stop_at:
                        log.warning(
                            "engine: engine lease not renewed for %.1fs: stepping down",
                            now - (valid_until - self.ttl),
                        )
                        break
                    if now < next_renewal:
                        continue
                    try:
                        async with asyncio.timeout(stop_at - now):
                            renewed = await self._leases.renew(lease, self.ttl)
                    except Exception as exc:  # timeouts too: retry until stop_at
                        if not failing:
                            failing = True
                            log.warning("engine: renewing the engine lease failed: %s", exc)
                        next_renewal = self._clock() + self._retry_period
                        continue
                    if renewed is None:
                        log.warning(
                            "engine: lost the engine lease (epoch %d): stepping down", lease.epoch
                        )
                        release = False
                        break
                    if failing:
                        failing = False
                        log.info("engine: engine lease renewed again")
                    lease, valid_until = renewed, now + self.ttl
                    self.lease = lease
                    next_renewal = now + self.renew_period
            finally:
                self._runner, self.lease, self.is_leader = None, None, False
                await self._end(runner, task, valid_until)
        if release:
            await self._release(lease)

    async def _end(self, runner: Runner, task: asyncio.Task[None], valid_until: float) -> None:
        """Stop the term's engine; cancel it if it is still running when the lease may lapse."""
        runner.stop()
        grace = max(valid_until - self._clock(), 0.1)
        try:
            await asyncio.wait_for(asyncio.shield(task), grace)
        except TimeoutError:
            log.warning("engine: engine did not stop within %.1fs: cancelling it", grace)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        except Exception:
            log.exception("engine: engine failed")

    async def _release(self, lease: Lease) -> None:
        """Give the lease back so a standby takes over now rather than after the TTL."""
        try:
            async with asyncio.timeout(self.margin):
                released = await self._leases.release(lease)
        except Exception as exc:
            log.warning(
                "engine: could not release the engine lease (it expires by itself): %s", exc
            )
            return
        if released:
            log.info("engine: released the engine lease (epoch %d)", lease.epoch)
