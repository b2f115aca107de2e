"""Probing and recording: start the due probes, take their results, record them in batches.

Routine results (a success on a steadily healthy instance, the overwhelming majority) wait a
short window and go in bulk; any result that may move an instance's state is recorded at once,
taking the pending ones along. A probe stays in flight until its result is recorded, so the next
probe of that instance never overtakes it.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from proxy_failover.core.health import is_routine_success
from proxy_failover.core.model import CheckResult, HealthState
from proxy_failover.engine.ports import Clock, EngineService, EngineStats, ProbeAdapter
from proxy_failover.engine.schedule import Probed, ProbeSchedule
from proxy_failover.engine.settings import EngineSettings
from proxy_failover.service.context import log_fields

log = logging.getLogger("proxy_failover.engine")

#: Set while the engine writes (probe results, its own decisions), so the service's change callback
#: for those commits does not wake the proxy again (the engine wakes it itself when health moved).
engine_writing: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "pfo_engine_engine_writing", default=False
)

_Pending = tuple[Probed, float, CheckResult]


class ProbeRecorder:
    """Runs the probes the schedule says are due and records their results through the service.

    ``wake_proxy(proxy_id, at)`` is called when a recorded result moved an instance's status (or
    the instance is gone); ``rescheduled(due)`` whenever a next probe was scheduled (the loop may
    sleep past it); ``track(task)`` keeps the background tasks it starts.
    """

    def __init__(
        self,
        service: EngineService,
        prober: ProbeAdapter,
        schedule: ProbeSchedule,
        stats: Callable[[], EngineStats],
        settings: EngineSettings,
        clock: Clock,
        *,
        wake_proxy: Callable[[str, float], None],
        rescheduled: Callable[[float], None],
        track: Callable[[asyncio.Task[None]], None],
    ) -> None:
        self._service = service
        self._prober = prober
        self._schedule = schedule
        self._stats = stats
        self._settings = settings
        self._clock = clock
        self._wake_proxy = wake_proxy
        self._rescheduled = rescheduled
        self._track = track
        #: Results waiting to be recorded, by proxy (in arrival order within each): a batch
        #: takes whole proxies, so it locks few proxy rows and finding the proxies no running
        #: flush holds costs one look per proxy, not one per pending result.
        self._pending: dict[str, list[_Pending]] = {}
        self._pending_count = 0
        self._flush_due = float("inf")  # loop time of the next scheduled routine flush
        self._flushing = 0  # flushes running
        self._busy_proxies: set[str] = set()  # proxies of the batches being recorded
        self._pooled_in_flight = 0
        self._pooled_idle: asyncio.Event | None = None
        #: Set while the engine stops: results of probes still in flight are dropped.
        self.stopping = False

    @property
    def has_pooled_in_flight(self) -> bool:
        return self._pooled_in_flight > 0

    async def wait_pooled_idle(self) -> None:
        """Wait until no probe started on a pooled connection is in flight."""
        if self._pooled_in_flight:
            self._pooled_idle = asyncio.Event()
            await self._pooled_idle.wait()
            self._pooled_idle = None

    # --- starting probes -------------------------------------------------------------------------
    def start_due(self, t: float) -> None:
        """Start every probe due by ``t``: on a pooled connection by callback when the prober can,
        else awaited in a task."""
        next_due = self._schedule.next_due()
        if next_due is None or next_due > t:
            return
        started = self._clock().timestamp()  # one reading for the batch: they start together
        started_at = datetime.fromtimestamp(started, UTC)  # and one conversion (observed_at)
        start = self._prober.start
        stats = self._stats()
        for probed in self._schedule.pop_due(t):
            probed.in_flight = True
            due = probed.due
            probed.last_started = started
            stats.probes_started += 1
            stats.lags.append(started - due)
            answered = functools.partial(self._answered, probed, due, started, started_at)
            if start(probed.target, answered):
                self._pooled_in_flight += 1
                continue
            self._track(asyncio.create_task(self._probe(probed, due, started, started_at)))

    async def _probe(
        self, probed: Probed, due: float, started: float, started_at: datetime
    ) -> None:
        """One probe the prober could not start on a pooled connection (a first probe, a new
        connection, TCP): awaited in its own task, then handled as ``_answered`` handles one."""
        try:
            result = await self._prober.probe(probed.target)
        except asyncio.CancelledError:
            probed.in_flight = False
            raise
        except Exception as exc:
            log.warning("engine: probe of %s failed: %s", probed.instance_id, exc)
            self._finish(probed, due, None)
            return
        if self._after_probe(probed, due, started, started_at, result):
            await self.flush()

    def _answered(
        self,
        probed: Probed,
        due: float,
        started: float,
        started_at: datetime,
        result: CheckResult,
    ) -> None:
        """A probe started on a pooled connection (``prober.start``) ended: no task was made."""
        self._pooled_in_flight -= 1
        if self._pooled_in_flight == 0 and self._pooled_idle is not None:
            self._pooled_idle.set()
        if self.stopping:
            probed.in_flight = False
            return
        try:
            urgent = self._after_probe(probed, due, started, started_at, result)
        except Exception:  # never lose the schedule over one result
            log.exception("engine: handling the probe result of %s failed", probed.instance_id)
            self._finish(probed, due, None)
            return
        if urgent and self._flushing < self._settings.concurrent_flushes:
            # (with every flush running, one would return at once: the running ones take this
            # result in their next batch. Past ``flush_size`` pending, every result is urgent,
            # and a task each for nothing cost the loop the capacity it needed to catch up.)
            self._track(asyncio.get_running_loop().create_task(self.flush()))

    def _is_inconclusive(
        self, result: CheckResult, probed: Probed, lag: float, started: float
    ) -> bool:
        """A timed-out probe that also started late says the engine's own loop is overloaded:
        the answer may have sat unread in the socket. Counting it would fail over healthy
        instances because we are slow, so it is not recorded (refusals and bad statuses are).
        """
        if result.success:
            return False
        timeout = probed.config.health_check_timeout_seconds
        elapsed = self._clock().timestamp() - started
        late = max(self._settings.overload_lag, 0.5 * probed.config.health_check_interval_seconds)
        if elapsed < timeout or lag <= late:
            return False
        stats = self._stats()
        stats.inconclusive += 1
        if stats.inconclusive == 1 or stats.inconclusive % 1000 == 0:
            log.warning(
                "engine: overloaded (probe started %.0f ms late): %d timed-out probes not counted",
                lag * 1000,
                stats.inconclusive,
            )
        return True

    # --- recording results ------------------------------------------------------------------------
    def _after_probe(
        self,
        probed: Probed,
        due: float,
        started: float,
        started_at: datetime,
        result: CheckResult,
    ) -> bool:
        """Count the result and queue it for recording (see ``flush``); True when it must be
        recorded at once: a result that may move the instance's state (or a full batch)."""
        stats = self._stats()
        stats.probes_completed += 1
        # When it was made: a result older than the instance's last status change (a report
        # while it was in flight) is discarded by the state machine (core.health.is_out_of_date).
        result = result.observed(started_at)
        if not result.success:
            stats.probe_failures += 1
            probed.benign_drops = 0
        elif probed.early:
            probed.benign_drops += 1
        probed.early = False
        if self._is_inconclusive(result, probed, started - due, started):
            # our own overload, not the instance's fault: record nothing
            self._finish(probed, due, None)
            return False
        self._queue((probed, due, result))
        # Only a routine success (as the engine last saw the instance) can wait for the batch;
        # the service checks the same predicate against the database when it records it.
        seen = HealthState(probed.status, probed.failures, probed.successes)
        routine = is_routine_success(seen, result.success)
        settings = self._settings
        if not routine or self._pending_count >= settings.flush_size:
            return True
        window = min(
            settings.flush_window,
            settings.flush_interval_share * probed.config.health_check_interval_seconds,
        )
        loop = asyncio.get_running_loop()
        if loop.time() + window < self._flush_due:
            self._flush_due = loop.time() + window
            self._track(loop.create_task(self._flush_later(window)))
        return False

    async def _flush_later(self, delay: float) -> None:
        try:
            await asyncio.sleep(delay)
        finally:
            self._flush_due = float("inf")
        await self.flush()

    async def flush(self) -> None:
        """Record the pending probe results in batches (one transaction each): one commit per
        result bounded a process to a few hundred probes per second.

        At most ``concurrent_flushes`` run at once, over disjoint sets of proxies; results
        arriving during a commit (a cold start's thousands of first results, all urgent) go into
        a running flush's next batch, right after, instead of each queueing for the database.
        """
        if self._flushing >= self._settings.concurrent_flushes:
            return  # the running flushes take them as soon as their commits are done
        self._flushing += 1
        try:
            while batch := self._take_batch():
                try:
                    await self._record(batch)
                finally:
                    for probed, _, _ in batch:
                        self._busy_proxies.discard(probed.proxy_id)
                if self._pending_count:
                    await asyncio.sleep(0)
        finally:
            self._flushing -= 1

    def _queue(self, item: _Pending) -> None:
        """Add a result to the pending ones of its proxy (see ``_take_batch``)."""
        waiting = self._pending.get(item[0].proxy_id)
        if waiting is None:
            self._pending[item[0].proxy_id] = [item]
        else:
            waiting.append(item)
        self._pending_count += 1

    def _take_batch(self) -> list[_Pending]:
        """Up to ``flush_chunk`` pending results (on SQLite a transaction runs on the event loop,
        and a long one would hold up the probes due meanwhile), of proxies no running flush
        holds, whole proxies first (the last one taken may be split); their proxies are held
        until the batch is recorded.

        Why by proxy: a flat queue in arrival order spread every batch over nearly all proxies,
        so a second flush found almost every proxy held and scanned the whole backlog for the
        rest; with a backlog of thousands that scan took most of the engine's CPU.
        """
        room = self._settings.flush_chunk
        busy = self._busy_proxies
        batch: list[_Pending] = []
        taken: list[str] = []
        for proxy_id, waiting in self._pending.items():
            if proxy_id in busy:
                continue
            if len(waiting) <= room:
                batch.extend(waiting)
                taken.append(proxy_id)
                room -= len(waiting)
            else:
                batch.extend(waiting[:room])
                del waiting[:room]
                room = 0
            busy.add(proxy_id)
            if not room:
                break
        for proxy_id in taken:
            del self._pending[proxy_id]
        self._pending_count -= len(batch)
        return batch

    async def _record(self, batch: list[_Pending]) -> None:
        token = engine_writing.set(True)
        failed = False
        items = [(probed.instance_id, result) for probed, _, result in batch]
        answers: Sequence[HealthState | None]
        try:
            answers = await self._service.record_probe_results(items)
        except asyncio.CancelledError:
            for probed, _, _ in batch:
                probed.in_flight = False
            raise
        except Exception as exc:
            log.warning("engine: recording %d probe results failed: %s", len(batch), exc)
            answers = [None] * len(batch)
            failed = True
        finally:
            engine_writing.reset(token)
        now = self._clock().timestamp()
        for (probed, due, result), health in zip(batch, answers, strict=True):
            if health is None and not failed:  # removed meanwhile; the next snapshot confirms it
                probed.in_flight = False
                self._schedule.unschedule(probed.instance_id)
                self._wake_proxy(probed.proxy_id, now)
                continue
            self._finish(probed, due, health, now, result.error)

    def _finish(
        self,
        probed: Probed,
        due: float,
        health: HealthState | None,
        now: float | None = None,
        error: str | None = None,
    ) -> None:
        """After a probe was recorded (or not): wake the proxy when health moved, schedule the
        next probe."""
        probed.in_flight = False
        if not self._schedule.is_scheduled(probed):
            return  # unscheduled while in flight
        if now is None:
            now = self._clock().timestamp()
        if health is not None:
            moved = health.status is not probed.status
            probed.status = health.status
            probed.failures = health.consecutive_failures
            probed.successes = health.consecutive_successes
            if moved:
                log.info(
                    "engine: %s/%s is %s%s",
                    probed.proxy_id,
                    probed.instance_id,
                    health.status,
                    f" ({error})" if error else "",
                    extra=log_fields(probed.proxy_id, probed.instance_id),
                )
                self._wake_proxy(probed.proxy_id, now)
        self._schedule.reschedule(probed, due, now)
        self._rescheduled(probed.due)
