"""The API's shapes: camelCase request bodies (unknown fields refused) and response envelopes.

Request models check types and SPEC §3 ranges so the OpenAPI document tells clients the truth;
the service validates again (cross-field rules, reserved names), so nothing relies on this alone.
Response models are built from the core dataclasses (``from_attributes``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel

from proxy_failover.core.model import (
    AdminState,
    EventStatus,
    EventType,
    FailoverStrategy,
    HealthCheckType,
    HealthStatus,
    LoadBalancingAlgorithm,
    ReasonCode,
    RedundancyLevel,
)

#: SPEC §3: client-chosen proxy ids.
PROXY_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def iso_z(value: datetime) -> str:
    """ISO 8601 UTC with milliseconds and ``Z`` (like JavaScript's ``toISOString``)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (
        value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    )


UtcDatetime = Annotated[
    datetime,
    PlainSerializer(iso_z, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}, mode="serialization"),
]
ProxyId = Annotated[str, Field(pattern=PROXY_ID_PATTERN, examples=["proxy-123"])]
ShortText = Annotated[str, Field(max_length=1000)]


def _drop_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def optional(**constraints: Any) -> Any:
    """A field that may be left out (partial updates) but, when given, must not be null."""
    return Field(default=None, json_schema_extra=_drop_default, **constraints)


class RequestModel(BaseModel):
    """camelCase only, unknown fields refused, no silent coercion of strings into numbers."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        extra="forbid",
        strict=True,
        allow_inf_nan=False,
    )

    def to_service(self) -> dict[str, Any]:
        """Only the fields the client sent, under the seed's camelCase keys."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


class ResponseModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        serialize_by_alias=True,
        from_attributes=True,
    )


# --- requests -----------------------------------------------------------------------------------

StrategyName = Literal["priority", "round_robin", "least_connections"]
LbAlgorithmName = Literal["round_robin", "least_connections", "weighted"]
HealthName = Literal["healthy", "unhealthy", "unknown"]
AdminStateName = Literal["enabled", "drain", "maintenance"]


class HealthCheckBody(RequestModel):
    type: Literal["http", "https", "tcp"] = optional()
    path: str = optional(min_length=1, max_length=1024, pattern=r"^/")
    expected_status: str = optional(pattern=r"^\d{3}(-\d{3})?(,\d{3}(-\d{3})?)*$", max_length=200)


class ConfigBody(RequestModel):
    """SPEC §3 fields; on an existing proxy only those given change."""

    failover_strategy: StrategyName = optional()
    health_check_interval_seconds: float = optional(ge=0.1, le=3600)
    health_check_timeout_seconds: float = optional(ge=0.05, le=300)
    fast_interval_seconds: float | None = optional(ge=0.1, le=3600)
    down_interval_seconds: float | None = optional(ge=0.1, le=3600)
    unhealthy_threshold: int = optional(ge=1, le=100)
    healthy_threshold: int = optional(ge=1, le=100)
    enable_auto_failover: bool = optional()
    enable_auto_recovery: bool = optional()
    max_recovery_attempts: int = optional(ge=0, le=100)
    recovery_backoff_seconds: float = optional(ge=0, le=3600)
    enable_auto_failback: bool = optional()
    failback_delay_seconds: float = optional(ge=0, le=86400)
    enable_load_balancing: bool = optional()
    load_balancing_algorithm: LbAlgorithmName = optional()
    health_check: HealthCheckBody = optional()


class ConfigRequest(RequestModel):
    """``POST /proxy/failover/config`` (the seed's body)."""

    proxy_id: ProxyId
    config: ConfigBody = Field(default_factory=ConfigBody)


class InstanceDataBody(RequestModel):
    instance_name: str = Field(min_length=1, max_length=255)
    instance_type: str = optional(min_length=1, max_length=64)
    endpoint: str | None = optional(min_length=1, max_length=2048)
    recovery_url: str | None = optional(min_length=1, max_length=2048)
    priority: int = optional(ge=INT32_MIN, le=INT32_MAX)
    weight: int = optional(ge=0, le=1000)
    admin_state: AdminStateName = optional()
    metadata: dict[str, Any] = optional()


class InstanceRequest(RequestModel):
    """``POST /proxy/instances`` (the seed's body)."""

    proxy_id: ProxyId
    instance_data: InstanceDataBody


class InstancePatch(RequestModel):
    """``PATCH /proxy/instances/{instanceId}``: the operator-editable fields."""

    priority: int = optional(ge=INT32_MIN, le=INT32_MAX)
    weight: int = optional(ge=0, le=1000)
    endpoint: str | None = optional(min_length=1, max_length=2048)
    recovery_url: str | None = optional(min_length=1, max_length=2048)
    admin_state: AdminStateName = optional()
    metadata: dict[str, Any] = optional()


class MetricsBody(RequestModel):
    """One metric sample (SPEC §3): all optional, numbers ≥ 0, percentages ≤ 100, rates ≤ 1."""

    cpu_percent: float = optional(ge=0, le=100)
    memory_percent: float = optional(ge=0, le=100)
    request_rate: float = optional(ge=0)
    average_latency_ms: float = optional(ge=0)
    error_rate: float = optional(ge=0, le=1)
    connection_count: int = optional(ge=0, le=INT32_MAX)
    throughput_mbps: float = optional(ge=0)


class MetricsRequest(MetricsBody):
    """``POST .../metrics``: a sample with at least one value."""

    @model_validator(mode="after")
    def _at_least_one(self) -> MetricsRequest:
        if not self.model_fields_set:
            raise ValueError("give at least one metric")
        return self


class HealthRequest(RequestModel):
    """``PUT /proxy/instances/{instanceId}/health`` (the seed's body)."""

    health_status: HealthName
    metrics: MetricsBody | None = None


class CheckRequest(RequestModel):
    """``POST .../checks``: a raw result from an external checker."""

    success: bool
    latency_ms: float | None = optional(ge=0)
    error: ShortText | None = optional()


class EvaluateRequest(RequestModel):
    proxy_id: ProxyId


class ExecuteRequest(RequestModel):
    proxy_id: ProxyId
    source_instance_id: str | None = Field(default=None, max_length=64)
    target_instance_id: str = Field(min_length=1, max_length=64)
    reason: ShortText | None = None


class CompleteRequest(RequestModel):
    status: Literal["completed", "failed"]
    error_message: ShortText | None = None
    duration_ms: int | None = Field(default=None, ge=0, le=INT32_MAX)


class RedundancyRequest(RequestModel):
    """The seed's ``PUT /proxy/{proxyId}/redundancy`` override (checked by the service: 014)."""

    total_instances: int = optional(ge=0, le=INT32_MAX)
    healthy_instances: int = optional(ge=0, le=INT32_MAX)
    unhealthy_instances: int = optional(ge=0, le=INT32_MAX)
    active_instance_id: str | None = optional(max_length=64)
    backup_instance_ids: list[Annotated[str, Field(max_length=64)]] = optional(max_length=1000)
    redundancy_level: Literal["none", "single", "dual", "multi"] = optional()
    is_degraded: bool = optional()
    last_failover_reason: ShortText | None = optional()


# --- responses ----------------------------------------------------------------------------------


class HealthCheckPublic(ResponseModel):
    type: HealthCheckType
    path: str
    expected_status: str


class ConfigPublic(ResponseModel):
    id: str
    proxy_id: str
    user_id: str
    failover_strategy: FailoverStrategy
    health_check_interval_seconds: float
    health_check_timeout_seconds: float
    fast_interval_seconds: float | None
    down_interval_seconds: float | None
    unhealthy_threshold: int
    healthy_threshold: int
    enable_auto_failover: bool
    enable_auto_recovery: bool
    max_recovery_attempts: int
    recovery_backoff_seconds: float
    enable_auto_failback: bool
    failback_delay_seconds: float
    enable_load_balancing: bool
    load_balancing_algorithm: LoadBalancingAlgorithm
    health_check: HealthCheckPublic
    created_at: UtcDatetime | None
    updated_at: UtcDatetime | None


#: Health-check detail only admins see (the seed's "not exposed to non-admin users").
ADMIN_ONLY_INSTANCE_FIELDS = frozenset({"last_error", "last_latency_ms"})


class InstancePublic(ResponseModel):
    id: str
    proxy_id: str
    user_id: str
    instance_name: str
    instance_type: str
    endpoint: str | None
    recovery_url: str | None
    priority: int
    weight: int
    admin_state: AdminState
    health_status: HealthStatus
    consecutive_failures: int
    consecutive_successes: int
    last_health_check: UtcDatetime | None
    last_error: str | None = Field(default=None, description="admins only")
    last_latency_ms: float | None = Field(default=None, description="admins only")
    active_connections: int | None
    is_active: bool
    total_requests: int
    successful_requests: int
    failed_requests: int
    average_latency_ms: float | None
    error_rate: float | None
    metadata: dict[str, Any]
    created_at: UtcDatetime | None
    updated_at: UtcDatetime | None


class EventPublic(ResponseModel):
    id: str
    proxy_id: str
    user_id: str
    event_type: EventType
    source_instance_id: str | None
    target_instance_id: str | None
    reason: str
    status: EventStatus
    triggered_by: str
    error_message: str | None
    duration_ms: int | None
    epoch: int
    created_at: UtcDatetime
    completed_at: UtcDatetime | None
    start_time: int = Field(
        validation_alias=AliasChoices("start_time_ms", "startTime"),
        description="when the event started, epoch milliseconds",
    )


class RedundancyPublic(ResponseModel):
    proxy_id: str
    total_instances: int
    healthy_instances: int
    unhealthy_instances: int
    active_instance_id: str | None
    backup_instance_ids: list[str]
    last_failover_at: UtcDatetime | None
    last_failover_reason: str | None
    redundancy_level: RedundancyLevel
    is_degraded: bool
    epoch: int
    overridden: bool
    updated_at: UtcDatetime | None


class EvaluationPublic(ResponseModel):
    proxy_id: str
    should_failover: bool
    source_instance_id: str | None
    target_instance_id: str | None
    reason: str
    reason_code: ReasonCode
    strategy: FailoverStrategy
    active_instance_id: str | None
    auto_failover_enabled: bool
    evaluated_at: UtcDatetime
    event_type: EventType


class RoutePublic(ResponseModel):
    proxy_id: str
    instance_id: str
    instance_name: str
    endpoint: str | None
    is_active: bool
    epoch: int
    load_balanced: bool


class InstanceExplanationPublic(ResponseModel):
    instance_id: str
    instance_name: str
    is_active: bool
    is_eligible: bool
    preference_rank: int
    health_status: HealthStatus
    admin_state: AdminState
    consecutive_failures: int
    consecutive_successes: int
    reasons: list[str]


class ExplanationPublic(ResponseModel):
    proxy_id: str
    active_instance_id: str | None
    summary: str
    strategy: FailoverStrategy
    unhealthy_threshold: int
    healthy_threshold: int
    instances: list[InstanceExplanationPublic]
    evaluation: EvaluationPublic


class ProxySummaryPublic(ResponseModel):
    proxy_id: str
    user_id: str
    redundancy: RedundancyPublic


class MetricValues(ResponseModel):
    cpu_percent: float | None = None
    memory_percent: float | None = None
    request_rate: float | None = None
    average_latency_ms: float | None = None
    error_rate: float | None = None
    connection_count: int | None = None
    throughput_mbps: float | None = None


class MetricSamplePublic(ResponseModel):
    id: str
    instance_id: str
    proxy_id: str
    user_id: str
    recorded_at: UtcDatetime
    sample: MetricValues | None = Field(default=None, description="admins only")


class ProbeResult(ResponseModel):
    status: Literal["ok", "ready"]


class ProbeFailure(ResponseModel):
    status: Literal["unavailable"]
    error: str


T = TypeVar("T")


class Envelope(BaseModel, Generic[T]):
    """The original backend's success envelope."""

    data: T
    message: str


class ListEnvelope(BaseModel, Generic[T]):
    """The original backend's list envelope; ``count`` is the number of items returned."""

    data: list[T]
    count: int


class ErrorDetail(BaseModel):
    code: str = Field(examples=["PROXY_FAILOVER_001"])
    message: str
    status_code: int = Field(alias="statusCode", serialization_alias="statusCode")
    details: dict[str, Any]


class ErrorBody(BaseModel):
    """Every error: ``{"error": {"code", "message", "statusCode", "details"}}``."""

    error: ErrorDetail
