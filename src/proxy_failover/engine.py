"""The health and failover engine: probes instances on schedule and applies one decision per proxy.

Each evaluation loads one consistent snapshot of a proxy, lets ``core.failover.decide`` make exactly
one decision and hands it to ``service.apply_decision`` (one transaction); whatever failed is left
to the next tick. ``tick(now)`` is the whole step and is driven by a fake clock in tests; ``run()``
only loops it, sleeping until the next probe or evaluation is due or a change wakes a proxy.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
import gc
import heapq
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from proxy_failover.core.errors import FailoverError, NotFound
from proxy_failover.core.failover import decide
from proxy_failover.core.model import (
    AdminState,
    CheckResult,
    Decision,
    DecisionAction,
    EventStatus,
    EventType,
    FailoverConfig,
    FailoverEvent,
    HealthState,
    HealthStatus,
    Instance,
    Notification,
    ProxySnapshot,
)

log = logging.getLogger("proxy_failover.engine")

Clock = Callable[[], datetime]

#: Set while the engine writes (probe results, its own decisions), so the service's change callback
#: for those commits does not wake the proxy again (the engine wakes it itself when health moved).
_engine_writing: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "pfo_engine_engine_writing", default=False
)

#: Every proxy is evaluated at least this often (SPEC §4), more often when its interval is shorter.
MAX_EVALUATION_PERIOD = 1.0
#: How often stale in-progress switch events are looked for (they only matter after 300 s).
STALE_CHECK_PERIOD = 5.0
#: How often the set of proxies is re-read, in case a change callback was missed.
DISCOVERY_PERIOD = 1.0
#: The first probe of a newly seen instance starts within this many seconds (spread, not a burst).
FIRST_PROBE_SPREAD = 1.0
JITTER = 0.10
#: A probe starting this late (or half its interval, if more) means the engine is overloaded.
OVERLOAD_LAG = 0.25
#: Pace of first probes (new connections) at a cold start: 10,000 instances start over 5 s.
FIRST_PROBES_PER_SECOND = 2000.0
#: ... after a first burst of this many, which start at once (within the first-probe spread).
FIRST_PROBE_BURST = 500
#: An early probe (after a dropped keep-alive connection) waits at least this share of the interval
#: since the last probe, so a server that closes idle connections quickly cannot cause a storm.
EARLY_PROBE_GAP = 0.25
#: After this many early probes in a row found the instance fine, drops no longer trigger them.
MAX_BENIGN_DROPS = 2
#: run() starts the probes due within this window together (seconds of added schedule lag).
BATCH_WINDOW = 0.005
#: Routine probe results (a success on a steadily healthy instance) are recorded together, at
#: most this long after the first of them, or at once when this many are pending; a result that
#: may move an instance's state is recorded at once (with whatever is pending).
FLUSH_WINDOW = 0.25
FLUSH_SIZE = 2000
FLUSH_CHUNK = 500
#: ... and at most this share of the instance's interval after it (short intervals flush sooner).
FLUSH_INTERVAL_SHARE = 0.25
#: With ``freeze_heap``: the live heap is frozen this long after start, and again this often.
HEAP_FREEZE_AFTER = 20.0
HEAP_REFREEZE_PERIOD = 3600.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


class ProbeAdapter(Protocol):
    """The outbound probe edge (``adapters.probes.Prober``), injected for testability.

    Optional, used when present: ``start(target, on_result) -> bool``, a probe started without a
    task (on a pooled connection) whose result comes by callback; False means "use ``probe``".
    """

    def prepare(self, instance: Instance, config: FailoverConfig) -> Any:
        """An opaque probe target; raises ``ValueError`` when the instance cannot be probed."""

    async def probe(self, target: Any) -> CheckResult: ...

    def forget(self, instance_id: str) -> None: ...

    #: The engine sets this: called with an instance id when its idle probe connection drops.
    on_connection_lost: Callable[[str], None] | None

    async def request_recovery(
        self, url: str, payload: dict[str, Any], timeout_s: float
    ) -> CheckResult: ...


class EngineService(Protocol):
    """The service methods the engine uses (``ProxyFailoverService`` provides them).

    Optional, used when present: ``record_probe_results`` (results in bulk, health only) instead
    of ``record_check_results``, and ``proxy_versions`` (change counters: unchanged snapshots are
    not re-read). The in-memory test service has neither, and the engine works the same.
    """

    async def list_proxy_ids(self) -> list[str]: ...
    async def load_snapshot(self, proxy_id: str) -> ProxySnapshot: ...
    async def record_check_result(self, instance_id: str, result: CheckResult) -> Instance: ...
    async def record_check_results(
        self, results: Sequence[tuple[str, CheckResult]]
    ) -> list[Instance | None]: ...
    async def apply_decision(
        self, proxy_id: str, decision: Decision, detected_at: datetime
    ) -> FailoverEvent | None: ...
    async def close_stale_events(self) -> list[FailoverEvent]: ...
    async def open_recovery_event(self, instance_id: str, reason: str) -> FailoverEvent | None: ...
    async def close_recovery_event(
        self, event_id: str, status: EventStatus, error_message: str | None = None
    ) -> FailoverEvent: ...
    async def get_failover_events(
        self,
        proxy_id: str,
        limit: int = 50,
        *,
        status: EventStatus | None = None,
        event_type: EventType | None = None,
        before: datetime | None = None,
    ) -> list[FailoverEvent]: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one evaluation (or housekeeping step) of a tick did, for tests, logs and metrics."""

    proxy_id: str
    decision: Decision | None = None
    event: FailoverEvent | None = None
    note: str | None = None
    error: str | None = None


@dataclass(slots=True)
class _Probed:
    """Schedule of one probed instance."""

    instance_id: str
    proxy_id: str
    target: Any
    endpoint: str | None
    config: FailoverConfig
    status: HealthStatus
    failures: int
    successes: int
    due: float
    first_scheduled: float = 0.0
    last_started: float = 0.0
    early: bool = False  # the next probe was brought forward by a dropped connection
    benign_drops: int = 0  # early probes in a row that found the instance fine
    in_flight: bool = False
    generation: int = 0  # bumps on reschedule; stale heap entries are skipped


@dataclass(slots=True)
class _Recovery:
    """An instance's recovery action: its open event and the POSTs made so far."""

    event_id: str
    attempts: int = 0
    next_attempt_at: float = 0.0
    posting: bool = False


@dataclass(slots=True)
class _ProxyState:
    next_evaluation: float = 0.0
    last_reason_code: str | None = None
    last_error: str | None = None
    recoveries: dict[str, _Recovery] = field(default_factory=dict)
    exhausted: set[str] = field(default_factory=set)  # recovery spent; wait for health to move
    adopted: bool = False
    #: The last snapshot loaded and the proxy's change counter read before it (None: unknown).
    snapshot: ProxySnapshot | None = None
    version: int | None = None


@dataclass(slots=True)
class EngineStats:
    """Counters for benchmarks and metrics; lags are start-time minus due-time, in seconds."""

    probes_started: int = 0
    probes_completed: int = 0
    probe_failures: int = 0
    evaluations: int = 0
    decisions_applied: int = 0
    inconclusive: int = 0  # timed-out probes not recorded because the engine was overloaded
    early_probes: int = 0  # probes brought forward by a dropped keep-alive connection
    connection_drops: int = 0
    lags: deque[float] = field(default_factory=lambda: deque(maxlen=200_000))


def _interval_for(
    config: FailoverConfig, status: HealthStatus, failures: int, successes: int
) -> float:
    """SPEC §4: downinter while unhealthy, fastinter while a transition is pending, else inter."""
    base = config.health_check_interval_seconds
    if status is HealthStatus.UNHEALTHY:
        pending = config.enable_auto_recovery and 0 < successes < config.healthy_threshold
        if pending:
            return config.fast_interval_seconds or base
        return config.down_interval_seconds or base
    if 0 < failures < config.unhealthy_threshold:
        return config.fast_interval_seconds or base
    return base


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
        *,
        clock: Clock = _utcnow,
        rng: random.Random | None = None,
        first_probe_spread: float = FIRST_PROBE_SPREAD,
        stale_check_period: float = STALE_CHECK_PERIOD,
        discovery_period: float = DISCOVERY_PERIOD,
        batch_window: float = BATCH_WINDOW,
        flush_window: float = FLUSH_WINDOW,
        flush_size: int = FLUSH_SIZE,
        freeze_heap: bool = False,
    ) -> None:
        self._service = service
        self._prober = prober
        self._clock = clock
        self._rng = rng or random.Random()
        self._first_probe_spread = first_probe_spread
        self._stale_check_period = stale_check_period
        self._discovery_period = discovery_period
        self._batch_window = batch_window
        self._flush_window = flush_window
        self._flush_size = flush_size
        #: ``serve`` sets it: see ``_tend_heap``.
        self._freeze_heap = freeze_heap
        self._heap_frozen_at: float | None = None
        self._run_started = 0.0
        self._pending: list[tuple[_Probed, float, CheckResult]] = []
        self._flush_due = float("inf")  # loop time of the next scheduled routine flush
        self._flushing = False
        self._sleep_until = 0.0
        self._next_first_probe = 0.0
        self._proxies: dict[str, _ProxyState] = {}
        self._probed: dict[str, _Probed] = {}
        self._probed_by_proxy: dict[str, set[str]] = {}
        self._heap: list[tuple[float, int, str]] = []  # (due, generation, instance id)
        self._eval_heap: list[tuple[float, str]] = []  # (next evaluation, proxy id)
        self._woken: dict[str, float] = {}  # proxy id -> when it was woken
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._stopping = False
        self._next_stale_check = 0.0
        self._next_discovery = 0.0
        self.stats = EngineStats()
        prober.on_connection_lost = self._probe_soon
        #: ``prober.start``: a probe on a pooled connection with a callback, no task (optional).
        self._start_pooled: Callable[[Any, Callable[[CheckResult], None]], bool] | None = getattr(
            prober, "start", None
        )
        self._pooled_in_flight = 0
        #: ``service.proxy_versions`` (change counters: skip unchanged snapshots), if offered.
        self._proxy_versions: Callable[[], Awaitable[dict[str, int]]] | None = getattr(
            service, "proxy_versions", None
        )
        #: ``service.record_probe_results`` (health only, routine successes in bulk), if offered.
        self._record_probe_results: (
            Callable[[Sequence[tuple[str, CheckResult]]], Awaitable[list[HealthState | None]]]
            | None
        ) = getattr(service, "record_probe_results", None)
        self._pooled_idle: asyncio.Event | None = None

    # --- wake-ups --------------------------------------------------------------------------------
    def notify(self, proxy_id: str, notifications: Sequence[Notification] = ()) -> None:
        """The service's change listener: evaluate ``proxy_id`` at once (not for our own probes)."""
        if _engine_writing.get():
            return
        self._wake_proxy(proxy_id, self._clock().timestamp())

    def _wake_proxy(self, proxy_id: str, at: float) -> None:
        self._proxies.setdefault(proxy_id, _ProxyState())
        self._woken.setdefault(proxy_id, at)
        self._wake.set()

    # --- the step -------------------------------------------------------------------------------
    async def tick(self, now: datetime) -> list[Outcome]:
        """Start the probes due by ``now``, then evaluate every woken or due proxy once."""
        t = now.timestamp()
        outcomes: list[Outcome] = []
        if t >= self._next_discovery:
            self._next_discovery = t + self._discovery_period
            try:
                await self._discover(t)
            except Exception as exc:  # the database may be briefly unavailable: try next tick
                log.warning("engine: cannot list proxies: %s", exc)
        # woken proxies first: a reported failure must not wait behind routine work, and a change
        # (maintenance, new endpoint) must reach the schedule before the next probe starts
        woken, self._woken = self._woken, {}
        for proxy_id, woken_at in woken.items():
            outcomes.extend(await self._evaluate(proxy_id, now, woken_at))
        self._start_due_probes(t)
        if t >= self._next_stale_check:
            self._next_stale_check = t + self._stale_check_period
            outcomes.extend(await self._close_stale())
        due: list[str] = []
        while self._eval_heap and self._eval_heap[0][0] <= t:
            at, proxy_id = heapq.heappop(self._eval_heap)
            state = self._proxies.get(proxy_id)
            if state is not None and state.next_evaluation == at and proxy_id not in woken:
                due.append(proxy_id)
        versions = await self._versions() if due else None
        for proxy_id in due:
            version = None if versions is None else versions.get(proxy_id)
            outcomes.extend(await self._evaluate(proxy_id, now, None, version))
        if due:
            self._start_due_probes(self._clock().timestamp())
        return outcomes

    async def wait_for_probes(self) -> None:
        """Wait until every probe started so far has finished (tests, shutdown)."""
        while self._tasks or self._pooled_in_flight:
            if self._pooled_in_flight:
                self._pooled_idle = asyncio.Event()
                await self._pooled_idle.wait()
                self._pooled_idle = None
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def next_deadline(self) -> float:
        """The earliest time (epoch seconds) a probe, an evaluation or housekeeping is due."""
        candidates = [self._next_discovery, self._next_stale_check]
        while self._heap and self._is_stale_entry(self._heap[0]):
            heapq.heappop(self._heap)
        if self._heap:
            candidates.append(self._heap[0][0])
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

        Probe starts are batched in windows of ``batch_window`` seconds (a few ms of schedule lag
        buys an order of magnitude fewer loop turns at 10,000 probes/s); wake-ups from changes
        are handled at once.
        """
        self._stopping = False
        self._run_started = self._clock().timestamp()
        log.info("engine: started")
        try:
            while not self._stopping:
                self._wake.clear()
                try:
                    await self.tick(self._clock())
                except Exception:  # never die: the next tick retries
                    log.exception("engine: tick failed")
                if self._freeze_heap:
                    self._tend_heap(self._clock().timestamp())
                if self._stopping or self._wake.is_set():
                    continue
                t = self._clock().timestamp()
                delay = min(
                    max(self.next_deadline() - t, self._batch_window), MAX_EVALUATION_PERIOD
                )
                self._sleep_until = t + delay
                try:
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                finally:
                    self._sleep_until = 0.0
        finally:
            await self._shutdown()
            log.info("engine: stopped")

    def _tend_heap(self, t: float) -> None:
        """Keep the garbage collector's full passes off the probe schedule.

        With 10,000 instances the long-lived heap (instances, schedules, connections) is large,
        and each full collection walked all of it: pauses of 100 ms and more, felt as probe lag.
        Once the cold start has settled (``HEAP_FREEZE_AFTER`` seconds), the live heap is moved
        out of the collector's sight (``gc.freeze``); every ``HEAP_REFREEZE_PERIOD`` it is brought
        back, collected once (cycles that died meanwhile are freed) and frozen again.
        """
        frozen_at = self._heap_frozen_at
        if frozen_at is None:
            if t - self._run_started < HEAP_FREEZE_AFTER:
                return
        elif t - frozen_at < HEAP_REFREEZE_PERIOD:
            return
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        self._heap_frozen_at = t
        log.debug("engine: heap frozen (%d objects)", gc.get_freeze_count())

    def stop(self) -> None:
        """Ask ``run()`` to finish after the current step."""
        self._stopping = True
        self._wake.set()

    async def _shutdown(self) -> None:
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
            self._schedule_evaluation(
                proxy_id, t + self._rng.uniform(0.0, self._first_probe_spread)
            )
        for proxy_id in [p for p in self._proxies if p not in ids]:
            if proxy_id not in self._woken:  # a just-woken proxy may be newer than the list
                self._drop_proxy(proxy_id)

    def _schedule_evaluation(self, proxy_id: str, at: float) -> None:
        self._proxies[proxy_id].next_evaluation = at
        heapq.heappush(self._eval_heap, (at, proxy_id))

    def _drop_proxy(self, proxy_id: str) -> None:
        self._proxies.pop(proxy_id, None)
        for instance_id in list(self._probed_by_proxy.get(proxy_id, ())):
            self._unschedule(instance_id)

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

    # --- evaluation -----------------------------------------------------------------------------
    async def _versions(self) -> dict[str, int] | None:
        """Every proxy's change counter, if the service offers them (None: load every time)."""
        if self._proxy_versions is None:
            return None
        try:
            return await self._proxy_versions()
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
            if reuse:
                assert state.snapshot is not None
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
            period = min(MAX_EVALUATION_PERIOD, snapshot.config.health_check_interval_seconds)
            self._schedule_evaluation(proxy_id, t + period)
            if not reuse:
                self._sync_probes(snapshot, t)
            decision = self._hold_activation(decide(snapshot, now), snapshot, t)
            event: FailoverEvent | None = None
            if decision.action is not DecisionAction.NONE:
                token = _engine_writing.set(True)
                try:
                    event = await self._service.apply_decision(
                        proxy_id, decision, datetime.fromtimestamp(detected_at, UTC)
                    )
                finally:
                    _engine_writing.reset(token)
                    state.snapshot = state.version = None  # it changed (or may have)
                self.stats.decisions_applied += 1
                log.warning("engine: %s: %s", proxy_id, decision.reason)
            elif decision.reason_code != state.last_reason_code:
                log.info("engine: %s: %s", proxy_id, decision.reason)
            state.last_reason_code = decision.reason_code
            outcomes.append(Outcome(proxy_id, decision, event))
            outcomes.extend(await self._handle_recoveries(snapshot, state, t))
        except Exception as exc:
            outcomes.append(self._error(proxy_id, state, exc, t))
            return outcomes
        if state.last_error is not None:
            log.info("engine: %s: evaluation works again", proxy_id)
            state.last_error = None
        return outcomes

    def _hold_activation(self, decision: Decision, snapshot: ProxySnapshot, t: float) -> Decision:
        """Hold an activation while an instance this engine just started probing awaits its first
        result (at most one interval + timeout), so the best instance wins, not the first to answer.

        ``decide`` counts the interval from registration, which after an engine (re)start may be
        long past for instances never probed.
        """
        if decision.action is not DecisionAction.ACTIVATE:
            return decision
        config = snapshot.config
        patience = config.health_check_interval_seconds + config.health_check_timeout_seconds
        waiting = [
            i.instance_name
            for i in snapshot.instances
            if i.last_health_check is None
            and i.admin_state is AdminState.ENABLED
            and (probed := self._probed.get(i.id)) is not None
            and t - probed.first_scheduled < patience
        ]
        if not waiting:
            return decision
        return Decision(
            DecisionAction.NONE,
            decision.reason_code,
            f"no active instance: waiting for the first probe of {', '.join(waiting)}",
        )

    def _error(self, proxy_id: str, state: _ProxyState, exc: Exception, t: float) -> Outcome:
        """Log a proxy's problem once when it appears or changes; retry at the next period."""
        text = f"{type(exc).__name__}: {exc}"
        if text != state.last_error:
            log.error("engine: %s: evaluation failed: %s", proxy_id, text)
            state.last_error = text
        self._schedule_evaluation(proxy_id, t + MAX_EVALUATION_PERIOD)
        return Outcome(proxy_id, error=text)

    # --- probing --------------------------------------------------------------------------------
    def _sync_probes(self, snapshot: ProxySnapshot, t: float) -> None:
        """Make the probe schedule match the snapshot: new, changed and removed instances."""
        config = snapshot.config
        wanted: set[str] = set()
        for instance in snapshot.instances:
            if not instance.endpoint or instance.admin_state is AdminState.MAINTENANCE:
                continue
            wanted.add(instance.id)
            probed = self._probed.get(instance.id)
            if (
                probed is not None
                and probed.endpoint == instance.endpoint
                and (probed.config is config or probed.config == config)
            ):
                if not probed.in_flight:  # the snapshot may carry a reported status
                    probed.status = instance.health_status
                    probed.failures = instance.consecutive_failures
                    probed.successes = instance.consecutive_successes
                continue
            try:
                target = self._prober.prepare(instance, config)
            except ValueError as exc:
                if probed is not None:
                    self._unschedule(instance.id)
                log.debug("engine: %s not probed: %s", instance.id, exc)
                continue
            if probed is None:
                # spread first probes over a second, and at a cold start with thousands of
                # instances also pace them: each opens a connection, far dearer than a probe
                slot = max(t - FIRST_PROBE_BURST / FIRST_PROBES_PER_SECOND, self._next_first_probe)
                self._next_first_probe = slot + 1.0 / FIRST_PROBES_PER_SECOND
                due = max(
                    slot,
                    t
                    + self._rng.uniform(
                        0.0, min(self._first_probe_spread, config.health_check_interval_seconds)
                    ),
                )
                probed = _Probed(
                    instance.id,
                    snapshot.config.proxy_id,
                    target,
                    instance.endpoint,
                    config,
                    instance.health_status,
                    instance.consecutive_failures,
                    instance.consecutive_successes,
                    due,
                    first_scheduled=t,
                )
                self._probed[instance.id] = probed
                self._probed_by_proxy.setdefault(probed.proxy_id, set()).add(instance.id)
                self._push(probed)
            else:
                if probed.endpoint != instance.endpoint:
                    self._prober.forget(instance.id)
                old_interval = probed.config.health_check_interval_seconds
                probed.target, probed.endpoint, probed.config = target, instance.endpoint, config
                if config.health_check_interval_seconds < old_interval and not probed.in_flight:
                    probed.due = min(probed.due, t + self._jittered(config, probed))
                    self._push(probed)
        for instance_id in self._probed_by_proxy.get(config.proxy_id, set()) - wanted:
            self._unschedule(instance_id)

    def _unschedule(self, instance_id: str) -> None:
        probed = self._probed.pop(instance_id, None)
        if probed is not None:
            self._probed_by_proxy.get(probed.proxy_id, set()).discard(instance_id)
            probed.generation += 1
            self._prober.forget(instance_id)

    def _push(self, probed: _Probed) -> None:
        probed.generation += 1
        heapq.heappush(self._heap, (probed.due, probed.generation, probed.instance_id))

    def _is_stale_entry(self, entry: tuple[float, int, str]) -> bool:
        probed = self._probed.get(entry[2])
        return probed is None or probed.generation != entry[1] or probed.in_flight

    def _jittered(self, config: FailoverConfig, probed: _Probed) -> float:
        interval = _interval_for(config, probed.status, probed.failures, probed.successes)
        return interval * (1.0 + self._rng.uniform(-JITTER, JITTER))

    def _probe_soon(self, instance_id: str) -> None:
        """The instance dropped its idle keep-alive probe connection (a killed process does so at
        once): probe it now rather than at its next slot, but never more often than every
        ``EARLY_PROBE_GAP`` of its interval. The thresholds still apply: this only finds out
        sooner, it decides nothing. A server that habitually closes idle connections (two early
        probes in a row found it fine) gets no more early probes until one finds a failure.
        """
        self.stats.connection_drops += 1
        probed = self._probed.get(instance_id)
        if probed is None or probed.in_flight or probed.benign_drops >= MAX_BENIGN_DROPS:
            return
        gap = EARLY_PROBE_GAP * probed.config.health_check_interval_seconds
        due = max(self._clock().timestamp(), probed.last_started + gap)
        if due < probed.due:
            self.stats.early_probes += 1
            probed.early = True
            probed.due = due
            self._push(probed)
            self._wake.set()

    def _start_due_probes(self, t: float) -> None:
        heap = self._heap
        if not heap or heap[0][0] > t:
            return
        started = self._clock().timestamp()  # one reading for the batch: they start together
        start = self._start_pooled
        while heap and heap[0][0] <= t:
            entry = heapq.heappop(heap)
            if self._is_stale_entry(entry):
                continue
            probed = self._probed[entry[2]]
            probed.in_flight = True
            due = probed.due
            self._begin(probed, due, started)
            if start is not None and start(
                probed.target, functools.partial(self._answered, probed, due, started)
            ):
                self._pooled_in_flight += 1
                continue
            self._track(asyncio.create_task(self._probe(probed, due, started)))

    def _is_inconclusive(
        self, result: CheckResult, probed: _Probed, lag: float, started: float
    ) -> bool:
        """A timed-out probe that also started late says the engine's own loop is overloaded:
        the answer may have sat unread in the socket. Counting it would fail over healthy
        instances because we are slow, so it is not recorded (refusals and bad statuses are).
        """
        if result.success:
            return False
        timeout = probed.config.health_check_timeout_seconds
        elapsed = self._clock().timestamp() - started
        overloaded = lag > max(OVERLOAD_LAG, 0.5 * probed.config.health_check_interval_seconds)
        if elapsed < timeout or not overloaded:
            return False
        self.stats.inconclusive += 1
        if self.stats.inconclusive == 1 or self.stats.inconclusive % 1000 == 0:
            log.warning(
                "engine: overloaded (probe started %.0f ms late): %d timed-out probes not counted",
                lag * 1000,
                self.stats.inconclusive,
            )
        return True

    def _begin(self, probed: _Probed, due: float, started: float) -> None:
        probed.last_started = started
        self.stats.probes_started += 1
        self.stats.lags.append(started - due)

    async def _probe(self, probed: _Probed, due: float, started: float) -> None:
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
        if self._after_probe(probed, due, started, result):
            await self._flush()

    def _answered(self, probed: _Probed, due: float, started: float, result: CheckResult) -> None:
        """A probe started on a pooled connection (``prober.start``) ended: no task was made."""
        self._pooled_in_flight -= 1
        if self._pooled_in_flight == 0 and self._pooled_idle is not None:
            self._pooled_idle.set()
        if self._stopping:
            probed.in_flight = False
            return
        try:
            urgent = self._after_probe(probed, due, started, result)
        except Exception:  # never lose the schedule over one result
            log.exception("engine: handling the probe result of %s failed", probed.instance_id)
            self._finish(probed, due, None)
            return
        if urgent:
            self._track(asyncio.get_running_loop().create_task(self._flush()))

    def _after_probe(
        self, probed: _Probed, due: float, started: float, result: CheckResult
    ) -> bool:
        """Count the result and queue it for recording (see ``_flush``); True when it must be
        recorded at once: a result that may move the instance's state (or a full batch)."""
        self.stats.probes_completed += 1
        # When it was made: a result older than the instance's last status change (a report
        # while it was in flight) is discarded by the state machine (core.health.is_out_of_date).
        result = dataclasses.replace(result, observed_at=datetime.fromtimestamp(started, UTC))
        if not result.success:
            self.stats.probe_failures += 1
            probed.benign_drops = 0
        elif probed.early:
            probed.benign_drops += 1
        probed.early = False
        if self._is_inconclusive(result, probed, started - due, started):
            # our own overload, not the instance's fault: record nothing
            self._finish(probed, due, None)
            return False
        self._pending.append((probed, due, result))
        # Only a success on a steadily healthy instance can wait for the batch.
        routine = result.success and probed.status is HealthStatus.HEALTHY and probed.failures == 0
        if not routine or len(self._pending) >= self._flush_size:
            return True
        # Recorded within the flush window, and within a quarter of the instance's interval: the
        # probe stays in flight until then, and must not hold up its next one.
        window = min(
            self._flush_window, FLUSH_INTERVAL_SHARE * probed.config.health_check_interval_seconds
        )
        loop = asyncio.get_running_loop()
        if loop.time() + window < self._flush_due:
            self._flush_due = loop.time() + window
            self._track(loop.create_task(self._flush_later(window)))
        return False

    def _track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush_later(self, delay: float) -> None:
        try:
            await asyncio.sleep(delay)
        finally:
            self._flush_due = float("inf")
        await self._flush()

    async def _flush(self) -> None:
        """Record the pending probe results in batches (one transaction per proxy, or per batch on
        SQLite): one commit per result bounded a process to a few hundred probes per second.

        One flush runs at a time: results arriving during its commit (a cold start's thousands of
        first results, all urgent) go into its next batch, right after, instead of each queueing
        for the database alone.
        """
        if self._flushing:
            return  # the running flush takes them as soon as its commit is done
        self._flushing = True
        try:
            while self._pending:
                # At most FLUSH_CHUNK results per transaction: on SQLite a transaction runs on the
                # event loop, and a long one would hold up the probes due meanwhile.
                batch = self._pending[:FLUSH_CHUNK]
                del self._pending[:FLUSH_CHUNK]
                await self._record(batch)
                if self._pending:
                    await asyncio.sleep(0)
        finally:
            self._flushing = False

    async def _record(self, batch: list[tuple[_Probed, float, CheckResult]]) -> None:
        token = _engine_writing.set(True)
        failed = False
        items = [(probed.instance_id, result) for probed, _, result in batch]
        try:
            answers: Sequence[HealthState | Instance | None]
            if self._record_probe_results is not None:
                answers = await self._record_probe_results(items)
            else:
                answers = await self._service.record_check_results(items)
        except asyncio.CancelledError:
            for probed, _, _ in batch:
                probed.in_flight = False
            raise
        except Exception as exc:
            log.warning("engine: recording %d probe results failed: %s", len(batch), exc)
            answers = [None] * len(batch)
            failed = True
        finally:
            _engine_writing.reset(token)
        now = self._clock().timestamp()
        for (probed, due, result), answer in zip(batch, answers, strict=True):
            if answer is None and not failed:  # removed meanwhile; the next snapshot confirms it
                probed.in_flight = False
                self._unschedule(probed.instance_id)
                self._wake_proxy(probed.proxy_id, now)
                continue
            health = answer.health if isinstance(answer, Instance) else answer
            self._finish(probed, due, health, now, result.error)

    def _finish(
        self,
        probed: _Probed,
        due: float,
        health: HealthState | None,
        now: float | None = None,
        error: str | None = None,
    ) -> None:
        """After a probe was recorded (or not): wake the proxy when health moved, schedule the
        next probe."""
        probed.in_flight = False
        if self._probed.get(probed.instance_id) is not probed:
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
                )
                self._wake_proxy(probed.proxy_id, now)
        probed.due = max(due + self._jittered(probed.config, probed), now)
        self._push(probed)
        if probed.due < self._sleep_until - self._batch_window:
            self._wake.set()  # the loop sleeps past this probe's next start: wake it earlier

    # --- recovery actions (SPEC §5) -------------------------------------------------------------
    async def _handle_recoveries(
        self, snapshot: ProxySnapshot, state: _ProxyState, t: float
    ) -> list[Outcome]:
        config = snapshot.config
        proxy_id = config.proxy_id
        outcomes: list[Outcome] = []
        if not state.adopted:
            await self._adopt_recoveries(proxy_id, state, t)
            state.adopted = True
        by_id = {i.id: i for i in snapshot.instances}
        for instance_id in list(state.recoveries):
            instance = by_id.get(instance_id)
            if instance is None or instance.admin_state is AdminState.MAINTENANCE:
                why = "instance removed" if instance is None else "instance put into maintenance"
                outcomes.append(
                    await self._close_recovery(state, instance_id, False, why, proxy_id)
                )
        for instance in snapshot.instances:
            if instance.health_status is not HealthStatus.UNHEALTHY:
                state.exhausted.discard(instance.id)
            recovery = state.recoveries.get(instance.id)
            if recovery is not None:
                if instance.health_status is HealthStatus.HEALTHY:
                    outcomes.append(
                        await self._close_recovery(state, instance.id, True, None, proxy_id)
                    )
                elif recovery.attempts < config.max_recovery_attempts and instance.recovery_url:
                    if t >= recovery.next_attempt_at and not recovery.posting:
                        outcomes.append(self._post_recovery(instance, recovery, config, t))
                elif t >= recovery.next_attempt_at and not recovery.posting:
                    message = (
                        f"instance still unhealthy after {recovery.attempts} recovery attempts"
                    )
                    outcomes.append(
                        await self._close_recovery(state, instance.id, False, message, proxy_id)
                    )
                    state.exhausted.add(instance.id)
                continue
            if (
                instance.recovery_url
                and instance.health_status is HealthStatus.UNHEALTHY
                and instance.admin_state is not AdminState.MAINTENANCE
                and config.enable_auto_recovery
                and config.max_recovery_attempts > 0
                and instance.id not in state.exhausted
            ):
                reason = f"Instance {instance.instance_name} unhealthy: calling its recovery URL"
                event = await self._service.open_recovery_event(instance.id, reason)
                if event is None:
                    continue
                recovery = _Recovery(event.id, next_attempt_at=t)
                state.recoveries[instance.id] = recovery
                log.warning("engine: %s: %s", proxy_id, reason)
                outcomes.append(Outcome(proxy_id, event=event, note="recovery started"))
                outcomes.append(self._post_recovery(instance, recovery, config, t))
        return outcomes

    async def _adopt_recoveries(self, proxy_id: str, state: _ProxyState, t: float) -> None:
        """After a restart, carry on the recovery events a previous engine left in progress."""
        events = await self._service.get_failover_events(
            proxy_id, 1000, status=EventStatus.IN_PROGRESS, event_type=EventType.RECOVERY
        )
        for event in events:
            instance_id = event.target_instance_id or event.source_instance_id
            if instance_id and instance_id not in state.recoveries:
                state.recoveries[instance_id] = _Recovery(event.id, next_attempt_at=t)

    def _post_recovery(
        self, instance: Instance, recovery: _Recovery, config: FailoverConfig, t: float
    ) -> Outcome:
        """Start one recovery POST in the background; the next one is due a backoff later."""
        recovery.attempts += 1
        recovery.next_attempt_at = t + config.recovery_backoff_seconds
        recovery.posting = True
        attempt = recovery.attempts
        payload = {"instanceId": instance.id, "proxyId": instance.proxy_id, "attempt": attempt}
        url = instance.recovery_url or ""

        async def post() -> None:
            try:
                result = await self._prober.request_recovery(
                    url, payload, config.health_check_timeout_seconds
                )
                if not result.success:
                    log.warning(
                        "engine: recovery POST %d for %s failed: %s",
                        attempt,
                        instance.id,
                        result.error,
                    )
            finally:
                recovery.posting = False
                self._wake_proxy(instance.proxy_id, self._clock().timestamp())

        task = asyncio.create_task(post())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return Outcome(instance.proxy_id, note=f"recovery attempt {attempt} for {instance.id}")

    async def _close_recovery(
        self,
        state: _ProxyState,
        instance_id: str,
        completed: bool,
        message: str | None,
        proxy_id: str,
    ) -> Outcome:
        recovery = state.recoveries.pop(instance_id)
        status = EventStatus.COMPLETED if completed else EventStatus.FAILED
        try:
            event = await self._service.close_recovery_event(recovery.event_id, status, message)
        except FailoverError as exc:
            if completed:  # the service closes it itself in the commit that made it healthy
                return Outcome(proxy_id, note="recovery completed")
            return Outcome(proxy_id, note=f"recovery event {recovery.event_id}: {exc}")
        log.warning("engine: %s: recovery of %s %s", proxy_id, instance_id, status)
        return Outcome(proxy_id, event=event, note=f"recovery {status}")
