"""Prometheus metrics (``pfo_*``) on a registry of their own, one per app, never the global one.

Two kinds of series. State (health, active instance, epoch, healthy counts, webhook backlog) is
read from the database at scrape time by ``refresh``, so every replica reports the same truth and
no label ever goes stale. Happenings (failovers, probes, deliveries, HTTP requests) are counted as
they occur in this process: the service's change listener, the probe wrapper, the delivery worker
and the HTTP middleware feed them. The engine's own counters, schedule lag and leadership are read
from its stats at scrape time (``watch_engine``): nothing is added to the probe path.
"""

from __future__ import annotations

import bisect
import itertools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from proxy_failover.core.model import (
    CheckResult,
    FailoverConfig,
    HealthStatus,
    Instance,
    Notification,
    NotificationType,
)
from proxy_failover.core.webhooks import DeliveryStatus
from proxy_failover.store.gauges import InstanceGauge, ProxyGauge

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Probe and HTTP latencies: 1 ms to 10 s.
_FAST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Time to detect / switch: 10 ms to 10 min (detection spans thresholds x intervals).
_SLOW_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class _StateCollector(Collector):
    """Yields the gauges of the last loaded state; replaced whole on every refresh."""

    def __init__(self) -> None:
        self.proxies: Sequence[ProxyGauge] = ()
        self.instances: Sequence[InstanceGauge] = ()
        self.backlog: Mapping[str, int] = {}

    def collect(self) -> Iterator[Metric]:
        labels = ["proxy_id", "instance_id", "instance_name"]
        health = GaugeMetricFamily(
            "pfo_instance_health",
            "Instance health as a state set: 1 for the instance's current status, else 0.",
            labels=[*labels, "status"],
        )
        active = GaugeMetricFamily(
            "pfo_instance_active", "1 for the proxy's active instance, else 0.", labels=labels
        )
        epoch = GaugeMetricFamily(
            "pfo_proxy_epoch", "Fencing epoch: grows on every change of the active instance.",
            labels=["proxy_id"],
        )  # fmt: skip
        has_active = GaugeMetricFamily(
            "pfo_proxy_has_active_instance", "1 when the proxy has an active instance.",
            labels=["proxy_id"],
        )  # fmt: skip
        healthy = GaugeMetricFamily(
            "pfo_proxy_healthy_instances", "Healthy instances per proxy.", labels=["proxy_id"]
        )
        total = GaugeMetricFamily(
            "pfo_proxy_instances", "Registered instances per proxy.", labels=["proxy_id"]
        )
        degraded = GaugeMetricFamily(
            "pfo_proxy_degraded", "1 when the proxy runs degraded (SPEC §3).", labels=["proxy_id"]
        )
        backlog = GaugeMetricFamily(
            "pfo_webhook_backlog", "Webhook deliveries waiting to be delivered.",
            labels=["proxy_id"],
        )  # fmt: skip
        active_of: dict[str, str | None] = {}
        for proxy in self.proxies:
            pid = proxy.proxy_id
            active_of[pid] = proxy.active_instance_id
            epoch.add_metric([pid], proxy.epoch)
            has_active.add_metric([pid], 1.0 if proxy.active_instance_id else 0.0)
            healthy.add_metric([pid], proxy.healthy_instances)
            total.add_metric([pid], proxy.total_instances)
            degraded.add_metric([pid], 1.0 if proxy.is_degraded else 0.0)
        for inst in self.instances:
            values = [inst.proxy_id, inst.instance_id, inst.instance_name]
            for status in HealthStatus:
                health.add_metric(
                    [*values, status.value], 1.0 if inst.health_status == status.value else 0.0
                )
            is_active = active_of.get(inst.proxy_id) == inst.instance_id
            active.add_metric(values, 1.0 if is_active else 0.0)
        for pid, count in sorted(self.backlog.items()):
            backlog.add_metric([pid], count)
        yield from (health, active, epoch, has_active, healthy, total, degraded, backlog)


class EngineCounters(Protocol):
    """What the engine counts as it works (``engine.EngineStats``); lags in seconds, newest last,
    one per started probe, the most recent ones only."""

    probes_started: int
    probes_completed: int
    probe_failures: int
    evaluations: int
    decisions_applied: int
    inconclusive: int
    early_probes: int
    connection_drops: int

    @property
    def lags(self) -> Sequence[float]: ...


#: (series, help, EngineStats attribute) of the engine's counters.
_ENGINE_COUNTERS = (
    ("pfo_engine_probes_started", "Probes the engine started.", "probes_started"),
    ("pfo_engine_probes_completed", "Probes that finished with a result.", "probes_completed"),
    ("pfo_engine_probe_failures", "Probes that finished with a failure.", "probe_failures"),
    ("pfo_engine_evaluations", "Proxy evaluations (snapshot + decision).", "evaluations"),
    ("pfo_engine_decisions_applied", "Automatic switches the engine committed.",
     "decisions_applied"),
    ("pfo_engine_inconclusive_probes",
     "Timed-out probes not recorded because they started late (the engine was overloaded).",
     "inconclusive"),
    ("pfo_engine_early_probes", "Probes brought forward by a dropped keep-alive connection.",
     "early_probes"),
    ("pfo_engine_connection_drops", "Idle probe connections closed by instances.",
     "connection_drops"),
)  # fmt: skip


class _EngineCollector(Collector):
    """The engine's own counters and schedule lag, read from its stats at scrape time.

    Nothing is added to the probe path: the engine already counts and keeps recent lags, so a
    scrape turns the lags of the probes started since the previous scrape into histogram buckets
    (at most the ones the engine still holds: 200,000).
    """

    def __init__(self, stats: EngineCounters, is_leader: Callable[[], bool]) -> None:
        self._stats = stats
        self._is_leader = is_leader
        self._bounds = list(_FAST_BUCKETS)
        self._counts = [0] * (len(self._bounds) + 1)  # per bucket, the last one is +Inf
        self._sum = 0.0
        self._seen = 0  # probes_started at the previous scrape

    def _absorb(self) -> None:
        started = self._stats.probes_started
        if started < self._seen:  # counters reset (a new stats object): start over
            self._seen = 0
        lags = self._stats.lags
        fresh = min(started - self._seen, len(lags))
        self._seen = started
        for lag in itertools.islice(reversed(lags), fresh):
            self._counts[bisect.bisect_left(self._bounds, lag)] += 1
            self._sum += lag

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "pfo_engine_leader",
            "1 while this process holds the engine lease and runs the engine, else 0.",
            value=1.0 if self._is_leader() else 0.0,
        )
        for name, documentation, attribute in _ENGINE_COUNTERS:
            yield CounterMetricFamily(
                name, documentation, value=float(getattr(self._stats, attribute))
            )
        self._absorb()
        cumulative = list(itertools.accumulate(self._counts))
        bounds = [*map(floatToGoString, self._bounds), "+Inf"]
        buckets = [(bound, float(n)) for bound, n in zip(bounds, cumulative, strict=True)]
        yield HistogramMetricFamily(
            "pfo_engine_schedule_lag_seconds",
            "How late probes started after their due time (the 5 ms batching window included).",
            buckets=buckets,
            sum_value=self._sum,
        )


class StateSource(Protocol):
    """The reads ``refresh`` needs (``store.gauges.Gauges`` provides them)."""

    async def gauges(self) -> tuple[list[ProxyGauge], list[InstanceGauge]]: ...
    async def backlog(self) -> dict[str, int]: ...


class Metrics:
    """Every ``pfo_`` collector of one app, and the hooks that feed them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self._state = _StateCollector()
        reg.register(self._state)
        self.failovers = Counter(
            "pfo_failovers",
            "Failover, failback and switchover events closed, by type and outcome.",
            ["proxy_id", "type", "outcome"],
            registry=reg,
        )
        self.health_transitions = Counter(
            "pfo_health_transitions",
            "Instance health changes, by the status entered.",
            ["proxy_id", "status"],
            registry=reg,
        )
        self.probes = Counter(
            "pfo_probes", "Active health probes, by result.", ["proxy_id", "result"], registry=reg
        )
        self.probe_duration = Histogram(
            "pfo_probe_duration_seconds",
            "Duration of active health probes.",
            ["proxy_id"],
            buckets=_FAST_BUCKETS,
            registry=reg,
        )
        self.detect_seconds = Histogram(
            "pfo_failover_detect_seconds",
            "Time to detect: first failed probe of the active instance to it being unhealthy.",
            ["proxy_id"],
            buckets=_SLOW_BUCKETS,
            registry=reg,
        )
        self.switch_seconds = Histogram(
            "pfo_failover_switch_seconds",
            "Time to switch: detection (or the manual start) to the new active being committed.",
            ["proxy_id"],
            buckets=_SLOW_BUCKETS,
            registry=reg,
        )
        self.last_detect = Gauge(
            "pfo_failover_last_detect_seconds",
            "Time to detect of the proxy's latest failover with a probe-detected failure.",
            ["proxy_id"],
            registry=reg,
        )
        self.last_switch = Gauge(
            "pfo_failover_last_switch_seconds",
            "Time to switch of the proxy's latest completed failover.",
            ["proxy_id"],
            registry=reg,
        )
        self.deliveries = Counter(
            "pfo_webhook_deliveries",
            "Webhook delivery attempts by outcome (delivered, retrying, dead).",
            ["proxy_id", "outcome"],
            registry=reg,
        )
        self.delivery_duration = Histogram(
            "pfo_webhook_delivery_duration_seconds",
            "Duration of webhook POSTs.",
            buckets=_FAST_BUCKETS,
            registry=reg,
        )
        self.http_requests = Counter(
            "pfo_http_requests",
            "HTTP requests served, by method, route template and status.",
            ["method", "route", "status"],
            registry=reg,
        )
        self.http_duration = Histogram(
            "pfo_http_request_duration_seconds",
            "HTTP request latency by method and route template.",
            ["method", "route"],
            buckets=_FAST_BUCKETS,
            registry=reg,
        )
        # instance id -> when its current streak of failed probes began (wall clock)
        self._failing_since: dict[str, datetime] = {}
        # instance id -> detection time of its latest probe-detected failure, until a failover
        self._detected: dict[str, float] = {}

    # --- state (scrape time) -------------------------------------------------------------------

    async def refresh(self, source: StateSource) -> None:
        """Load health, active instances, epochs and the webhook backlog from the database."""
        proxies, instances = await source.gauges()
        backlog = await source.backlog()
        self._state.proxies, self._state.instances, self._state.backlog = (
            proxies,
            instances,
            backlog,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def watch_engine(self, stats: EngineCounters, is_leader: Callable[[], bool]) -> None:
        """Export the engine's counters, schedule lag and leadership (read at scrape time)."""
        self.registry.register(_EngineCollector(stats, is_leader))

    # --- happenings ----------------------------------------------------------------------------

    def observe_notifications(self, proxy_id: str, notifications: Sequence[Notification]) -> None:
        """The service's change listener: count failovers and health changes, time them."""
        for note in notifications:
            data = note.data
            if note.type in (
                NotificationType.INSTANCE_UNHEALTHY,
                NotificationType.INSTANCE_HEALTHY,
            ):
                unhealthy = note.type == NotificationType.INSTANCE_UNHEALTHY
                status = "unhealthy" if unhealthy else "healthy"
                self.health_transitions.labels(proxy_id, status).inc()
                instance_id = data.get("instanceId")
                if unhealthy and isinstance(instance_id, str):
                    since = self._failing_since.get(instance_id)
                    if since is not None:
                        delay = (note.occurred_at - since).total_seconds()
                        self._detected[instance_id] = max(0.0, delay)
            elif note.type in (
                NotificationType.FAILOVER_COMPLETED,
                NotificationType.FAILOVER_FAILED,
            ):
                kind = str(data.get("eventType") or "failover")
                completed = note.type == NotificationType.FAILOVER_COMPLETED
                outcome = "completed" if completed else "failed"
                self.failovers.labels(proxy_id, kind, outcome).inc()
                if outcome != "completed":
                    continue
                source = data.get("sourceInstanceId")
                detected = self._detected.pop(source, None) if isinstance(source, str) else None
                if detected is not None:
                    self.detect_seconds.labels(proxy_id).observe(detected)
                    self.last_detect.labels(proxy_id).set(detected)
                duration_ms = data.get("durationMs")
                if isinstance(duration_ms, int | float):
                    self.switch_seconds.labels(proxy_id).observe(duration_ms / 1000.0)
                    self.last_switch.labels(proxy_id).set(duration_ms / 1000.0)

    def observe_probe(
        self,
        proxy_id: str,
        instance_id: str,
        result: CheckResult,
        seconds: float,
        started_at: datetime,
    ) -> None:
        self.probes.labels(proxy_id, "success" if result.success else "failure").inc()
        self.probe_duration.labels(proxy_id).observe(seconds)
        if result.success:
            self._failing_since.pop(instance_id, None)
        else:
            self._failing_since.setdefault(instance_id, started_at)

    def observe_delivery(self, proxy_id: str, status: DeliveryStatus, seconds: float) -> None:
        """The delivery worker's attempt observer."""
        outcome = {DeliveryStatus.PENDING: "retrying"}.get(status, status.value)
        self.deliveries.labels(proxy_id, outcome).inc()
        self.delivery_duration.observe(seconds)

    def observe_http(self, method: str, route: str, status: int, seconds: float) -> None:
        self.http_requests.labels(method, route, str(status)).inc()
        self.http_duration.labels(method, route).observe(seconds)


class Prober(Protocol):
    """The engine's probe edge (``adapters.probes.Prober``; ``engine.ports.ProbeAdapter``)."""

    on_connection_lost: Callable[[str], None] | None

    def prepare(self, instance: Instance, config: FailoverConfig) -> Any: ...
    def start(self, target: Any, on_result: Callable[[CheckResult], None]) -> bool: ...
    async def probe(self, target: Any) -> CheckResult: ...
    def forget(self, instance_id: str) -> None: ...
    async def request_recovery(
        self, url: str, payload: dict[str, Any], timeout_s: float, *, trusted: bool
    ) -> CheckResult: ...
    async def aclose(self) -> None: ...


class ObservedProber:
    """Wraps a prober so every probe is counted and timed, without the engine knowing."""

    def __init__(self, inner: Prober, metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics

    def prepare(self, instance: Instance, config: FailoverConfig) -> Any:
        return _Tagged(self._inner.prepare(instance, config), instance.proxy_id, instance.id)

    async def probe(self, target: Any) -> CheckResult:
        if not isinstance(target, _Tagged):
            return await self._inner.probe(target)
        started_at = datetime.now(UTC)
        started = time.perf_counter()
        result = await self._inner.probe(target.inner)
        self._metrics.observe_probe(
            target.proxy_id, target.instance_id, result, time.perf_counter() - started, started_at
        )
        return result

    def start(self, target: Any, on_result: Callable[[CheckResult], None]) -> bool:
        """``Prober.start``, observed the same way as ``probe``."""
        start = self._inner.start
        if not isinstance(target, _Tagged):
            return start(target, on_result)
        started_at = datetime.now(UTC)
        started = time.perf_counter()
        metrics = self._metrics

        def observed(result: CheckResult) -> None:
            metrics.observe_probe(
                target.proxy_id,
                target.instance_id,
                result,
                time.perf_counter() - started,
                started_at,
            )
            on_result(result)

        return start(target.inner, observed)

    def forget(self, instance_id: str) -> None:
        self._inner.forget(instance_id)

    async def request_recovery(
        self, url: str, payload: dict[str, Any], timeout_s: float, *, trusted: bool
    ) -> CheckResult:
        return await self._inner.request_recovery(url, payload, timeout_s, trusted=trusted)

    @property
    def on_connection_lost(self) -> Callable[[str], None] | None:
        """Forwarded to the inner prober (the engine sets it to probe a dropped instance early)."""
        return self._inner.on_connection_lost

    @on_connection_lost.setter
    def on_connection_lost(self, listener: Callable[[str], None] | None) -> None:
        self._inner.on_connection_lost = listener

    async def aclose(self) -> None:
        await self._inner.aclose()


@dataclass(frozen=True, slots=True)
class _Tagged:
    """A probe target with the ids the metrics need."""

    inner: Any
    proxy_id: str
    instance_id: str
