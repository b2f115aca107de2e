"""The engine's coordinator: each tick evaluates the proxies that are due or were woken, one
decision each, and hands the probe schedule, the recorder and the recoveries their turn.

Each evaluation loads one consistent snapshot of a proxy, lets ``core.failover.decide`` make exactly
one decision and hands it to ``service.apply_decision`` (one transaction); whatever failed is left
to the next tick. ``tick(now)`` is the whole step and is driven by a fake clock in tests; ``run()``
only loops it, sleeping until the next probe or evaluation is due or a change wakes a proxy.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from proxy_failover.core.errors import NotFound
from proxy_failover.core.failover import decide
from proxy_failover.core.health import is_report_expired
from proxy_failover.core.model import (
    DecisionAction,
    FailoverEvent,
    Notification,
    NotificationType,
    ProxySnapshot,
)
from proxy_failover.engine.ports import Clock, EngineService, EngineStats, Outcome, ProbeAdapter
from proxy_failover.engine.recording import ProbeRecorder, engine_writing
from proxy_failover.engine.recovery import Recoveries
from proxy_failover.engine.schedule import ProbeSchedule
from proxy_failover.engine.settings import MAX_EVALUATION_PERIOD, EngineSettings
from proxy_failover.service.context import log_fields

log = logging.getLogger("proxy_failover.engine")


def _utcnow() -> datetime:
    return datetime.now(UTC)


#: Commits after which ``core.failover.decide`` answers NONE whatever the rest of the state: only
#: a manual execute notifies ``failover.started``, and it commits its target (eligible: healthy
#: and enabled, ``check_execute``) as the active instance with its switch event open, so no
#: failover is due and a failback waits while the event is open (tests/unit/test_failover.py
#: holds this over generated snapshots with core's own rules). Nothing the probe schedule or the
#: recoveries read moved either (configuration, instances' endpoints, health, admin state). Such
#: a commit wakes no evaluation (~2.4 ms of CPU each, on the thread the API shares the
#: interpreter with); the proxy's periodic evaluation still reads the new state.
NO_DECISION_NOTIFICATIONS = frozenset({NotificationType.FAILOVER_STARTED.value})


def can_change_decision(notifications: Sequence[Notification]) -> bool:
    """Whether a commit that notified ``notifications`` may change the engine's decision (a
    commit without notifications may: a new instance, a configuration change)."""
    return not notifications or any(n.type not in NO_DECISION_NOTIFICATIONS for n in notifications)


@dataclass(slots=True)
class _ProxyState:
    next_evaluation: float = 0.0
    last_reason_code: str | None = None
    last_error: str | None = None
    #: The last snapshot loaded and the proxy's change counter read before it (None: unknown).
    snapshot: ProxySnapshot | None = None
    version: int | None = None


class Engine:
    """Background health probing, automatic failover/failback, recovery actions.

    ``notify(proxy_id, notifications)`` is the service's change listener: it wakes that proxy's
    evaluation at once. The engine holds no state that matters across a restart: the database is
    the truth, and the in-memory schedules are rebuilt from snapshots.
    """

    def __init__(
        self,
        service: EngineService,
        prober: ProbeAdapter,
        settings: EngineSettings | None = None,
        *,
        clock: Clock = _utcnow,
        rng: random.Random | None = None,
    ) -> None:
        self._service = service
        self._settings = settings = settings or EngineSettings()
        self._clock = clock
        self.stats = EngineStats()
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._sleep_until = 0.0
        self._stopping = False
        self._proxies: dict[str, _ProxyState] = {}
        self._eval_heap: list[tuple[float, str]] = []  # (next evaluation, proxy id)
        self._woken: dict[str, float] = {}  # proxy id -> when it was woken
        self._next_stale_check = 0.0
        self._next_discovery = 0.0
        self._next_prune = 0.0
        self._rng = rng or random.Random()
        self._schedule = ProbeSchedule(prober, settings, self._rng)
        self._recorder = ProbeRecorder(
            service,
            prober,
            self._schedule,
            lambda: self.stats,
            settings,
            clock,
            wake_proxy=self._wake_proxy,
            rescheduled=self._rescheduled,
            track=self._track,
        )
        self._recoveries = Recoveries(
            service, prober, clock, wake_proxy=self._wake_proxy, track=self._track
        )
        prober.on_connection_lost = self._probe_soon

    # --- wake-ups --------------------------------------------------------------------------------
    def notify(self, proxy_id: str, notifications: Sequence[Notification] = ()) -> None:
        """The service's change listener: evaluate ``proxy_id`` at once (not for our own writes,
        nor for a commit that cannot change the decision: ``can_change_decision``)."""
        if engine_writing.get() or not can_change_decision(notifications):
            return
        self._wake_proxy(proxy_id, self._clock().timestamp())

    def _wake_proxy(self, proxy_id: str, at: float) -> None:
        self._proxies.setdefault(proxy_id, _ProxyState())
        self._woken.setdefault(proxy_id, at)
        self._wake.set()

    def _rescheduled(self, due: float) -> None:
        if due < self._sleep_until - self._settings.batch_window:
            self._wake.set()  # the loop sleeps past this probe's next start: wake it earlier

    def _probe_soon(self, instance_id: str) -> None:
        """The prober saw the instance's idle connection drop: maybe probe it early."""
        self.stats.connection_drops += 1
        if self._schedule.bring_forward(instance_id, self._clock().timestamp()):
            self.stats.early_probes += 1
            self._wake.set()

    def _track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- the step -------------------------------------------------------------------------------
    async def tick(self, now: datetime) -> list[Outcome]:
        """Start the probes due by ``now``, then evaluate every woken or due proxy once."""
        t = now.timestamp()
        outcomes: list[Outcome] = []
        if t >= self._next_discovery:
            self._next_discovery = t + self._settings.discovery_period
            try:
                await self._discover(t)
            except Exception as exc:  # the database may be briefly unavailable: try next tick
                log.warning("engine: cannot list proxies: %s", exc)
        # woken proxies first: a reported failure must not wait behind routine work, and a change
        # (maintenance, new endpoint) must reach the schedule before the next probe starts
        woken, self._woken = self._woken, {}
        for proxy_id, woken_at in woken.items():
            outcomes.extend(await self._evaluate(proxy_id, now, woken_at))
        self._recorder.start_due(t)
        if t >= self._next_stale_check:
            self._next_stale_check = t + self._settings.stale_check_period
            outcomes.extend(await self._close_stale())
        if t >= self._next_prune:
            self._next_prune = t + await self._prune_history()
        due: list[str] = []
        horizon = t + self._settings.evaluation_window  # the ones due soon too (settings)
        while self._eval_heap and self._eval_heap[0][0] <= horizon:
            at, proxy_id = heapq.heappop(self._eval_heap)
            state = self._proxies.get(proxy_id)
            if state is not None and state.next_evaluation == at and proxy_id not in woken:
                due.append(proxy_id)
        versions = await self._versions() if due else None
        for proxy_id in due:
            version = None if versions is None else versions.get(proxy_id)
            outcomes.extend(await self._evaluate(proxy_id, now, None, version))
        if due:
            self._recorder.start_due(self._clock().timestamp())
        return outcomes

    async def wait_for_probes(self) -> None:
        """Wait until every probe started so far has finished (tests, shutdown)."""
        while self._tasks or self._recorder.has_pooled_in_flight:
            await self._recorder.wait_pooled_idle()
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def next_deadline(self) -> float:
        """The earliest time (epoch seconds) a probe, an evaluation or housekeeping is due."""
        candidates = [self._next_discovery, self._next_stale_check, self._next_prune]
        next_probe = self._schedule.next_due()
        if next_probe is not None:
            candidates.append(next_probe)
        while self._eval_heap:
            at, proxy_id = self._eval_heap[0]
            state = self._proxies.get(proxy_id)
            if state is not None and state.next_evaluation == at:
                break
            heapq.heappop(self._eval_heap)
        if self._eval_heap:
            candidates.append(self._eval_heap[0][0])
        if self._woken:
            candidates.append(0.0)
        return min(candidates)

    async def run(self) -> None:
        """Loop ticks until ``stop()``; sleeps until the next deadline or a wake-up.

        Probe starts are batched in windows of ``batch_window`` seconds; wake-ups from changes
        are handled at once.
        """
        self._stopping = self._recorder.stopping = False
        log.info("engine: started")
        batch_window = self._settings.batch_window
        try:
            while not self._stopping:
                self._wake.clear()
                try:
                    await self.tick(self._clock())
                except Exception:  # never die: the next tick retries
                    log.exception("engine: tick failed")
                if self._stopping or self._wake.is_set():
                    continue
                t = self._clock().timestamp()
                delay = min(max(self.next_deadline() - t, batch_window), MAX_EVALUATION_PERIOD)
                self._sleep_until = t + delay
                try:
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                finally:
                    self._sleep_until = 0.0
        finally:
            await self.shutdown()
            log.info("engine: stopped")

    def stop(self) -> None:
        """Ask ``run()`` to finish after the current step."""
        self._stopping = self._recorder.stopping = True
        self._wake.set()

    async def shutdown(self) -> None:
        """Cancel the background tasks (probes, flush timers, recovery POSTs) and wait for them."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        self._tasks.clear()

    # --- discovery and housekeeping -------------------------------------------------------------
    async def _discover(self, t: float) -> None:
        ids = set(await self._service.list_proxy_ids())
        for proxy_id in ids - self._proxies.keys():
            self._proxies[proxy_id] = _ProxyState()
            # spread first evaluations over a period so many proxies never evaluate in one burst
            spread = self._settings.first_probe_spread
            self._schedule_evaluation(proxy_id, t + self._rng.uniform(0.0, spread))
        for proxy_id in [p for p in self._proxies if p not in ids]:
            if proxy_id not in self._woken:  # a just-woken proxy may be newer than the list
                self._drop_proxy(proxy_id)

    def _schedule_evaluation(self, proxy_id: str, at: float) -> None:
        self._proxies[proxy_id].next_evaluation = at
        heapq.heappush(self._eval_heap, (at, proxy_id))

    def _drop_proxy(self, proxy_id: str) -> None:
        self._proxies.pop(proxy_id, None)
        self._schedule.drop_proxy(proxy_id)
        self._recoveries.drop_proxy(proxy_id)

    async def _close_stale(self) -> list[Outcome]:
        try:
            closed = await self._service.close_stale_events()
        except Exception as exc:
            log.warning("engine: cannot close stale events: %s", exc)
            return []
        for event in closed:
            log.warning(
                "engine: closed stale %s event %s of %s as failed",
                event.event_type,
                event.id,
                event.proxy_id,
            )
        return [Outcome(e.proxy_id, event=e, note="stale event closed") for e in closed]

    async def _prune_history(self) -> float:
        """Retention (leader only: this engine runs only while holding the lease); returns the
        delay until the next run: short while a table had a full batch (a backlog)."""
        settings = self._settings
        try:
            pruned = await self._service.prune_history(settings.retention)
        except Exception as exc:
            log.warning("engine: cannot prune old history: %s", exc)
            return settings.retention_period
        if any(pruned.values()):
            log.info("engine: pruned old history: %s", pruned)
        if max(pruned.values(), default=0) >= settings.retention.batch:
            return settings.retention_backlog_period
        return settings.retention_period

    # --- evaluation -----------------------------------------------------------------------------
    async def _versions(self) -> dict[str, int] | None:
        """Every proxy's change counter (None when unreadable: load every snapshot then)."""
        try:
            return await self._service.proxy_versions()
        except Exception as exc:  # load snapshots as usual; the error shows there too
            log.debug("engine: cannot read change counters: %s", exc)
            return None

    async def _evaluate(
        self, proxy_id: str, now: datetime, woken_at: float | None, version: int | None = None
    ) -> list[Outcome]:
        """Evaluate one proxy on its snapshot. A periodic evaluation (``version`` given, nothing
        woke it) reuses the last snapshot when the proxy's change counter has not moved since:
        only probe counters and timestamps can differ then, which no decision reads; the
        decision itself is made again (time moves: failback delays, activation, recoveries)."""
        state = self._proxies.setdefault(proxy_id, _ProxyState())
        t = now.timestamp()
        detected_at = min(woken_at, t) if woken_at is not None else t
        self.stats.evaluations += 1
        reuse = version is not None and version == state.version and state.snapshot is not None
        try:
            if reuse and state.snapshot is not None:
                snapshot = state.snapshot
            else:
                snapshot = await self._service.load_snapshot(proxy_id)
        except NotFound:  # the proxy was deleted
            self._drop_proxy(proxy_id)
            return []
        except Exception as exc:
            state.snapshot = state.version = None
            return [self._error(proxy_id, state, exc, t)]
        # A woken evaluation does not know the counter its snapshot matches: the next periodic
        # one loads again (once) and remembers it.
        state.snapshot, state.version = snapshot, version
        outcomes: list[Outcome] = []
        try:
            ttl = snapshot.config.health_report_ttl_seconds
            if any(is_report_expired(i, ttl, now) for i in snapshot.instances):
                snapshot = await self._expire_reports(proxy_id, state)
            period = min(MAX_EVALUATION_PERIOD, snapshot.config.health_check_interval_seconds)
            self._schedule_evaluation(proxy_id, t + period)
            if not reuse:
                self._schedule.sync(snapshot, t)
            decision = decide(snapshot, now, self._schedule.probing_since)
            event: FailoverEvent | None = None
            if decision.action is not DecisionAction.NONE:
                token = engine_writing.set(True)
                try:
                    event = await self._service.apply_decision(
                        proxy_id, decision, datetime.fromtimestamp(detected_at, UTC)
                    )
                finally:
                    engine_writing.reset(token)
                    state.snapshot = state.version = None  # it changed (or may have)
                self.stats.decisions_applied += 1
                log.warning(
                    "engine: %s: %s",
                    proxy_id,
                    decision.reason,
                    extra=log_fields(
                        proxy_id,
                        decision.target_instance_id,
                        event.epoch if event else None,
                        event.id if event else None,
                    ),
                )
            elif decision.reason_code != state.last_reason_code:
                log.info("engine: %s: %s", proxy_id, decision.reason, extra=log_fields(proxy_id))
            state.last_reason_code = decision.reason_code
            outcomes.append(Outcome(proxy_id, decision, event))
            outcomes.extend(await self._recoveries.handle(snapshot, now))
        except Exception as exc:
            outcomes.append(self._error(proxy_id, state, exc, t))
            return outcomes
        if state.last_error is not None:
            log.info("engine: %s: evaluation works again", proxy_id)
            state.last_error = None
        return outcomes

    async def _expire_reports(self, proxy_id: str, state: _ProxyState) -> ProxySnapshot:
        """Reported statuses past their TTL turn unhealthy (in the database, so a restart
        forgets nothing); the proxy is read again for this evaluation's decision."""
        token = engine_writing.set(True)
        try:
            expired = await self._service.expire_health_reports(proxy_id)
        finally:
            engine_writing.reset(token)
        for instance in expired:
            log.warning(
                "engine: %s: %s: report expired, now unhealthy",
                proxy_id,
                instance.instance_name,
                extra=log_fields(proxy_id, instance.id),
            )
        state.snapshot = state.version = None
        return await self._service.load_snapshot(proxy_id)

    def _error(self, proxy_id: str, state: _ProxyState, exc: Exception, t: float) -> Outcome:
        """Log a proxy's problem once when it appears or changes; retry at the next period."""
        text = f"{type(exc).__name__}: {exc}"
        if text != state.last_error:
            log.error(
                "engine: %s: evaluation failed: %s", proxy_id, text, extra=log_fields(proxy_id)
            )
            state.last_error = text
        self._schedule_evaluation(proxy_id, t + MAX_EVALUATION_PERIOD)
        return Outcome(proxy_id, error=text)
