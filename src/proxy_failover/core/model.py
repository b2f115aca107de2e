"""Plain values of the failover domain: configuration, instances, events, redundancy, snapshots.

Everything here is a frozen dataclass or an enum so the core can reason about state without I/O.
Times are timezone-aware UTC ``datetime`` values; durations are seconds (float) unless named
``_ms``.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class FailoverStrategy(enum.StrEnum):
    PRIORITY = "priority"
    ROUND_ROBIN = "round_robin"
    LEAST_CONNECTIONS = "least_connections"


class LoadBalancingAlgorithm(enum.StrEnum):
    ROUND_ROBIN = "round_robin"
    LEAST_CONNECTIONS = "least_connections"
    WEIGHTED = "weighted"


class HealthCheckType(enum.StrEnum):
    HTTP = "http"
    HTTPS = "https"
    TCP = "tcp"


class HealthStatus(enum.StrEnum):
    UNKNOWN = "unknown"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


class AdminState(enum.StrEnum):
    ENABLED = "enabled"
    DRAIN = "drain"
    MAINTENANCE = "maintenance"


class ServerScheme(enum.StrEnum):
    """How a data plane speaks HTTP to the instances (server URLs of Traefik's provider)."""

    HTTP = "http"
    HTTPS = "https"


class EventType(enum.StrEnum):
    FAILOVER = "failover"
    FAILBACK = "failback"
    SWITCHOVER = "switchover"
    RECOVERY = "recovery"


class EventStatus(enum.StrEnum):
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"

    @property
    def is_open(self) -> bool:
        return self in (EventStatus.PENDING, EventStatus.IN_PROGRESS)


class RedundancyLevel(enum.StrEnum):
    NONE = "none"
    SINGLE = "single"
    DUAL = "dual"
    MULTI = "multi"


class ReasonCode(enum.StrEnum):
    """Why evaluate answered as it did (SPEC §5)."""

    NO_ACTIVE_INSTANCE = "no_active_instance"
    ACTIVE_UNHEALTHY = "active_unhealthy"
    ACTIVE_UNAVAILABLE = "active_unavailable"
    ACTIVE_UNKNOWN = "active_unknown"
    FAILBACK = "failback"
    ACTIVE_HEALTHY = "active_healthy"
    NO_INSTANCES = "no_instances"
    NO_HEALTHY_TARGET = "no_healthy_target"


#: Event types that move the active role; at most one of them may be in progress per proxy.
SWITCHING_EVENT_TYPES = frozenset({EventType.FAILOVER, EventType.FAILBACK, EventType.SWITCHOVER})

#: Transitions (failover events) left open longer than this are closed as failed by the engine.
STALE_EVENT_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class HealthCheckSpec:
    """How the engine probes an instance: protocol, HTTP path and accepted status codes."""

    type: HealthCheckType = HealthCheckType.HTTP
    path: str = "/health"
    expected_status: str = "200-399"


#: ``fastIntervalSeconds`` when a config names none is min(interval, this) (SPEC §3).
DEFAULT_FAST_INTERVAL_CAP_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class FailoverConfig:
    """One proxy's failover configuration with SPEC §3 defaults applied."""

    proxy_id: str
    user_id: str
    id: str = ""
    failover_strategy: FailoverStrategy = FailoverStrategy.PRIORITY
    health_check_interval_seconds: float = 30.0
    health_check_timeout_seconds: float = 5.0
    fast_interval_seconds: float | None = None
    down_interval_seconds: float | None = None
    unhealthy_threshold: int = 3
    healthy_threshold: int = 2
    enable_auto_failover: bool = True
    enable_auto_recovery: bool = True
    max_recovery_attempts: int = 3
    recovery_backoff_seconds: float = 5.0
    enable_auto_failback: bool = False
    failback_delay_seconds: float = 60.0
    enable_load_balancing: bool = False
    load_balancing_algorithm: LoadBalancingAlgorithm = LoadBalancingAlgorithm.ROUND_ROBIN
    health_check: HealthCheckSpec = field(default_factory=HealthCheckSpec)
    #: A reported status not refreshed within this expires (``core.health.is_report_expired``).
    health_report_ttl_seconds: float | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def effective_fast_interval_seconds(self) -> float:
        """Probe interval while a state change is pending (HAProxy's ``fastinter``): as
        configured, else min(interval, ``DEFAULT_FAST_INTERVAL_CAP_SECONDS``), so a failing
        instance is confirmed within seconds even with the 30 s default interval (SPEC §3)."""
        if self.fast_interval_seconds is not None:
            return self.fast_interval_seconds
        return min(self.health_check_interval_seconds, DEFAULT_FAST_INTERVAL_CAP_SECONDS)

    @property
    def effective_down_interval_seconds(self) -> float:
        """Probe interval while unhealthy (``downinter``): as configured, else the interval."""
        if self.down_interval_seconds is not None:
            return self.down_interval_seconds
        return self.health_check_interval_seconds


@dataclass(frozen=True, slots=True)
class HealthRules:
    """The thresholds the rise/fall state machine needs, taken from a config."""

    unhealthy_threshold: int = 3
    healthy_threshold: int = 2
    auto_recovery: bool = True

    @classmethod
    def of(cls, config: FailoverConfig) -> HealthRules:
        return cls(
            config.unhealthy_threshold, config.healthy_threshold, config.enable_auto_recovery
        )


@dataclass(frozen=True, slots=True)
class HealthState:
    """The part of an instance the health state machine reads and writes."""

    status: HealthStatus = HealthStatus.UNKNOWN
    consecutive_failures: int = 0
    consecutive_successes: int = 0


@dataclass(frozen=True, slots=True)
class Instance:
    """A registered proxy instance; ``is_active`` mirrors the redundancy row's active pointer."""

    id: str
    proxy_id: str
    user_id: str
    instance_name: str
    instance_type: str = "standard"
    endpoint: str | None = None
    #: ``host:port`` where user traffic goes; None = the endpoint's (``core.dataplane``).
    traffic_address: str | None = None
    recovery_url: str | None = None
    priority: int = 100
    weight: int = 100
    admin_state: AdminState = AdminState.ENABLED
    health_status: HealthStatus = HealthStatus.UNKNOWN
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    last_health_check: datetime | None = None
    last_error: str | None = None
    last_latency_ms: float | None = None
    active_connections: int | None = None
    is_active: bool = False
    total_requests: int = 0
    successful_requests: int = 0
    failed_requests: int = 0
    average_latency_ms: float | None = None
    error_rate: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    #: When the status last changed to what it is now (drives failback delay); None if never.
    status_changed_at: datetime | None = None
    #: When a health report (``update_instance_health``) last set the status; None if never.
    last_report_at: datetime | None = None
    #: Endpoint and recovery URL set by an admin or the library, so they may be internal
    #: addresses (``core.outbound``); False once a non-admin set either of them.
    outbound_trusted: bool = True
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def health(self) -> HealthState:
        return HealthState(
            self.health_status, self.consecutive_failures, self.consecutive_successes
        )


@dataclass(frozen=True, slots=True)
class FailoverEvent:
    """An auditable record of a failover, failback, switchover or recovery."""

    id: str
    proxy_id: str
    user_id: str
    event_type: EventType
    source_instance_id: str | None
    target_instance_id: str | None
    reason: str
    status: EventStatus
    triggered_by: str
    epoch: int
    created_at: datetime
    error_message: str | None = None
    duration_ms: int | None = None
    completed_at: datetime | None = None

    @property
    def start_time_ms(self) -> int:
        return int(self.created_at.timestamp() * 1000)

    def closed(
        self,
        status: EventStatus,
        now: datetime,
        error_message: str | None = None,
        duration_ms: int | None = None,
    ) -> FailoverEvent:
        """This event closed ``status`` (completed or failed) at ``now``; ``durationMs`` from its
        creation unless given."""
        return dataclasses.replace(
            self,
            status=status,
            error_message=error_message,
            completed_at=now,
            duration_ms=duration_ms
            if duration_ms is not None
            else ms_between(self.created_at, now),
        )

    @property
    def closing_notification(self) -> NotificationType | None:
        """What closing this event announces (SPEC §8): a switching event ``failover.completed``
        or ``failover.failed``, a failed recovery ``instance.recovery_failed``; a completed
        recovery nothing of its own (its instance's ``instance.healthy`` says it)."""
        failed = self.status is EventStatus.FAILED
        if self.event_type in SWITCHING_EVENT_TYPES:
            return (
                NotificationType.FAILOVER_FAILED if failed else NotificationType.FAILOVER_COMPLETED
            )
        return NotificationType.INSTANCE_RECOVERY_FAILED if failed else None


def ms_between(start: datetime, end: datetime) -> int:
    """Whole milliseconds from ``start`` to ``end``, never negative (clocks of replicas differ)."""
    return max(0, int((end - start).total_seconds() * 1000))


@dataclass(frozen=True, slots=True)
class RedundancyStatus:
    """The proxy's current redundancy picture and fencing epoch."""

    proxy_id: str
    total_instances: int = 0
    healthy_instances: int = 0
    unhealthy_instances: int = 0
    active_instance_id: str | None = None
    backup_instance_ids: tuple[str, ...] = ()
    last_failover_at: datetime | None = None
    last_failover_reason: str | None = None
    redundancy_level: RedundancyLevel = RedundancyLevel.NONE
    is_degraded: bool = True
    epoch: int = 0
    overridden: bool = False
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class RedundancyAssessment:
    """What ``core.redundancy.assess`` computes from instances and the active pointer."""

    total_instances: int
    healthy_instances: int
    unhealthy_instances: int
    redundancy_level: RedundancyLevel
    is_degraded: bool
    backup_instance_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One probe or externally posted check: success, latency, why it failed, and when it was
    made (a probe's start; None: now)."""

    success: bool
    latency_ms: float | None = None
    error: str | None = None
    observed_at: datetime | None = None

    def observed(self, at: datetime) -> CheckResult:
        """This result, made at ``at``: ``dataclasses.replace`` without its per-call field
        lookup, which cost as much as the rest of the engine's handling of a probe result
        (the engine stamps every probe's result). A test holds it equal to ``replace``."""
        return CheckResult(self.success, self.latency_ms, self.error, at)


@dataclass(frozen=True, slots=True)
class MetricSample:
    """A metrics sample of one instance (SPEC §3); every field optional."""

    cpu_percent: float | None = None
    memory_percent: float | None = None
    request_rate: float | None = None
    average_latency_ms: float | None = None
    error_rate: float | None = None
    connection_count: int | None = None
    throughput_mbps: float | None = None


@dataclass(frozen=True, slots=True)
class StoredMetricSample:
    """A metric sample as persisted, with who recorded it and when."""

    id: str
    instance_id: str
    proxy_id: str
    user_id: str
    sample: MetricSample
    recorded_at: datetime


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The side-effect-free answer of evaluate (SPEC §5)."""

    proxy_id: str
    should_failover: bool
    source_instance_id: str | None
    target_instance_id: str | None
    reason: str
    reason_code: ReasonCode
    strategy: FailoverStrategy
    active_instance_id: str | None
    auto_failover_enabled: bool
    evaluated_at: datetime
    #: The kind of switch executing this evaluation would record.
    event_type: EventType = EventType.FAILOVER


@dataclass(frozen=True, slots=True)
class ProxySnapshot:
    """One consistent view of a proxy, loaded in one transaction: the input of every decision."""

    config: FailoverConfig
    instances: tuple[Instance, ...]  # preference order
    redundancy: RedundancyStatus
    open_switch_event: FailoverEvent | None = None

    @property
    def active(self) -> Instance | None:
        active_id = self.redundancy.active_instance_id
        return next((i for i in self.instances if i.id == active_id), None)


class DecisionAction(enum.StrEnum):
    NONE = "none"
    ACTIVATE = "activate"
    FAILOVER = "failover"
    FAILBACK = "failback"


@dataclass(frozen=True, slots=True)
class Decision:
    """The engine's one decision for a proxy on a tick, with the sentence that explains it."""

    action: DecisionAction
    reason_code: ReasonCode
    reason: str
    source_instance_id: str | None = None
    target_instance_id: str | None = None

    @property
    def event_type(self) -> EventType:
        return EventType.FAILBACK if self.action is DecisionAction.FAILBACK else EventType.FAILOVER


@dataclass(frozen=True, slots=True)
class Route:
    """The instance a client should use now (``GET /proxy/:id/route``)."""

    proxy_id: str
    instance_id: str
    instance_name: str
    endpoint: str | None
    is_active: bool
    epoch: int
    load_balanced: bool
    #: Where the instance's user traffic goes (its trafficAddress, else its endpoint's host:port).
    traffic_address: str | None = None


@dataclass(frozen=True, slots=True)
class InstanceExplanation:
    """Why one instance is, or is not, eligible to be (or stay) active."""

    instance_id: str
    instance_name: str
    is_active: bool
    is_eligible: bool
    preference_rank: int
    health_status: HealthStatus
    admin_state: AdminState
    consecutive_failures: int
    consecutive_successes: int
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Explanation:
    """``GET /proxy/:id/explain``: the active instance, thresholds and each instance's standing."""

    proxy_id: str
    active_instance_id: str | None
    summary: str
    strategy: FailoverStrategy
    unhealthy_threshold: int
    healthy_threshold: int
    instances: tuple[InstanceExplanation, ...]
    evaluation: Evaluation


@dataclass(frozen=True, slots=True)
class ProxySummary:
    """One entry of ``GET /proxies``."""

    proxy_id: str
    user_id: str
    redundancy: RedundancyStatus


#: Instance fields SPEC §7 shows to admins only (health-check detail): the API's instance views,
#: the live stream and webhook deliveries to non-admins' subscriptions all leave them out.
ADMIN_ONLY_INSTANCE_FIELDS: frozenset[str] = frozenset({"last_error", "last_latency_ms"})


class NotificationType(enum.StrEnum):
    """The notification types of SPEC §8: what webhooks subscribe to and streams carry."""

    FAILOVER_STARTED = "failover.started"
    FAILOVER_COMPLETED = "failover.completed"
    FAILOVER_FAILED = "failover.failed"
    INSTANCE_UNHEALTHY = "instance.unhealthy"
    INSTANCE_HEALTHY = "instance.healthy"
    INSTANCE_RECOVERY_FAILED = "instance.recovery_failed"
    REDUNDANCY_DEGRADED = "redundancy.degraded"
    REDUNDANCY_RESTORED = "redundancy.restored"


@dataclass(frozen=True, slots=True)
class Notification:
    """A domain notification produced by a use case (SPEC §8 types), for webhooks and streams.

    Use cases hand these to the unit of work so they are persisted in the same transaction as the
    change that caused them.
    """

    type: str  # a NotificationType value (plain text once read back from the notification log)
    proxy_id: str
    epoch: int
    occurred_at: datetime
    data: dict[str, Any] = field(default_factory=dict)
