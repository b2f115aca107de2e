"""When each instance is probed next: one heap of due times, intervals per SPEC §4 with jitter,
paced first probes, and early probes after a dropped connection.

The schedule follows the snapshots the coordinator loads (``sync``); probe results move it on
(``reschedule``). It starts nothing itself: ``recording.ProbeRecorder`` pops what is due.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from proxy_failover.core.model import AdminState, FailoverConfig, HealthStatus, ProxySnapshot
from proxy_failover.engine.ports import ProbeAdapter
from proxy_failover.engine.settings import EngineSettings


@dataclass(slots=True)
class Probed:
    """Schedule of one probed instance, and the health it had when last recorded."""

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


def confirms_transition(
    config: FailoverConfig, status: HealthStatus, failures: int, successes: int
) -> bool:
    """Whether the next probe confirms a pending change of status (SPEC §4's ``fastinter``)."""
    if status is HealthStatus.UNHEALTHY:
        return config.enable_auto_recovery and 0 < successes < config.healthy_threshold
    return 0 < failures < config.unhealthy_threshold


def interval_for(
    config: FailoverConfig, status: HealthStatus, failures: int, successes: int
) -> float:
    """SPEC §4: downinter while unhealthy, fastinter while a transition is pending, else inter."""
    if confirms_transition(config, status, failures, successes):
        return config.effective_fast_interval_seconds
    if status is HealthStatus.UNHEALTHY:
        return config.effective_down_interval_seconds
    return config.health_check_interval_seconds


class ProbingSince(Mapping[str, datetime]):
    """When this engine started probing each instance (``core.failover.decide``'s
    ``probing_since``), read on demand: decide needs it only while an activation waits."""

    def __init__(self, probed: dict[str, Probed]) -> None:
        self._probed = probed

    def __getitem__(self, instance_id: str) -> datetime:
        return datetime.fromtimestamp(self._probed[instance_id].first_scheduled, UTC)

    def __iter__(self) -> Iterator[str]:
        return iter(self._probed)

    def __len__(self) -> int:
        return len(self._probed)


class ProbeSchedule:
    """The probed instances and their next due times (epoch seconds)."""

    def __init__(self, prober: ProbeAdapter, settings: EngineSettings, rng: random.Random) -> None:
        self._prober = prober
        self._settings = settings
        self._rng = rng
        self.probed: dict[str, Probed] = {}
        self._by_proxy: dict[str, set[str]] = {}
        self._heap: list[tuple[float, int, str]] = []  # (due, generation, instance id)
        self._next_first_probe = 0.0
        self.probing_since = ProbingSince(self.probed)

    def sync(self, snapshot: ProxySnapshot, t: float) -> None:
        """Make the schedule match the snapshot: new, changed and removed instances."""
        config = snapshot.config
        wanted: set[str] = set()
        for instance in snapshot.instances:
            if not instance.endpoint or instance.admin_state is AdminState.MAINTENANCE:
                continue
            wanted.add(instance.id)
            probed = self.probed.get(instance.id)
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
            except ValueError:
                if probed is not None:
                    self.unschedule(instance.id)
                continue  # probed by nobody: its health comes from reports only
            if probed is None:
                probed = Probed(
                    instance.id,
                    config.proxy_id,
                    target,
                    instance.endpoint,
                    config,
                    instance.health_status,
                    instance.consecutive_failures,
                    instance.consecutive_successes,
                    self._first_due(config, t),
                    first_scheduled=t,
                )
                self.probed[instance.id] = probed
                self._by_proxy.setdefault(probed.proxy_id, set()).add(instance.id)
                self.push(probed)
            else:
                if probed.endpoint != instance.endpoint:
                    self._prober.forget(instance.id)
                old_interval = probed.config.health_check_interval_seconds
                probed.target, probed.endpoint, probed.config = target, instance.endpoint, config
                if config.health_check_interval_seconds < old_interval and not probed.in_flight:
                    probed.due = min(probed.due, t + self.jittered(probed))
                    self.push(probed)
        for instance_id in self._by_proxy.get(config.proxy_id, set()) - wanted:
            self.unschedule(instance_id)

    def _first_due(self, config: FailoverConfig, t: float) -> float:
        """Spread first probes over the first-probe spread, and at a cold start with thousands of
        instances also pace them: each opens a connection, far dearer than a probe."""
        settings = self._settings
        slot = max(
            t - settings.first_probe_burst / settings.first_probes_per_second,
            self._next_first_probe,
        )
        self._next_first_probe = slot + 1.0 / settings.first_probes_per_second
        spread = min(settings.first_probe_spread, config.health_check_interval_seconds)
        return max(slot, t + self._rng.uniform(0.0, spread))

    def unschedule(self, instance_id: str) -> None:
        probed = self.probed.pop(instance_id, None)
        if probed is not None:
            self._by_proxy.get(probed.proxy_id, set()).discard(instance_id)
            probed.generation += 1
            self._prober.forget(instance_id)

    def drop_proxy(self, proxy_id: str) -> None:
        for instance_id in list(self._by_proxy.get(proxy_id, ())):
            self.unschedule(instance_id)

    def is_scheduled(self, probed: Probed) -> bool:
        """False once the instance was unscheduled (while its probe was in flight, say)."""
        return self.probed.get(probed.instance_id) is probed

    def push(self, probed: Probed) -> None:
        probed.generation += 1
        heapq.heappush(self._heap, (probed.due, probed.generation, probed.instance_id))

    def reschedule(self, probed: Probed, due: float, now: float) -> None:
        """The next probe: the previous due time plus the jittered interval (no drift), never
        before now (probes of one instance never overlap)."""
        probed.due = max(due + self.jittered(probed), now)
        self.push(probed)

    def jittered(self, probed: Probed) -> float:
        """The interval shortened by up to SPEC §4's 10 % jitter, never lengthened: the
        configured interval is the longest an instance goes unprobed, as HAProxy's ``inter`` is.
        Jitter spreads probes either way; a late probe only delays detection (with ±10 %, kill →
        switch ran up to 10 % of the interval behind HAProxy's per probe it waited for)."""
        config, status = probed.config, probed.status
        interval = interval_for(config, status, probed.failures, probed.successes)
        return interval * (1.0 - self._rng.uniform(0.0, self._settings.jitter))

    def _is_stale(self, entry: tuple[float, int, str]) -> bool:
        probed = self.probed.get(entry[2])
        return probed is None or probed.generation != entry[1] or probed.in_flight

    def next_due(self) -> float | None:
        """The earliest due time, or None when nothing is scheduled."""
        heap = self._heap
        while heap and self._is_stale(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def pop_due(self, t: float) -> Iterator[Probed]:
        """The instances due by ``t``, earliest first; the caller marks each in flight."""
        heap = self._heap
        while heap and heap[0][0] <= t:
            entry = heapq.heappop(heap)
            if not self._is_stale(entry):
                yield self.probed[entry[2]]

    def bring_forward(self, instance_id: str, now: float) -> bool:
        """The instance dropped its idle keep-alive probe connection (a killed process does so at
        once): probe it now rather than at its next slot, but never more often than the early
        probe gap of its interval. The thresholds still apply: this only finds out sooner. A
        server that habitually closes idle connections (early probes in a row found it fine)
        gets no more early probes until one finds a failure. True when it was brought forward.
        """
        probed = self.probed.get(instance_id)
        settings = self._settings
        if probed is None or probed.in_flight or probed.benign_drops >= settings.max_benign_drops:
            return False
        gap = settings.early_probe_gap * probed.config.health_check_interval_seconds
        due = max(now, probed.last_started + gap)
        if due >= probed.due:
            return False
        probed.early = True
        probed.due = due
        self.push(probed)
        return True
