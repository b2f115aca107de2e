"""The API's shapes: camelCase request bodies (unknown fields refused) and response envelopes.

Request models check types and ranges so the OpenAPI document tells clients the truth. Every range,
length and pattern comes from ``core.limits`` through ``field``/``optional``/``constraints`` (never
a number written here), and choices are core's enums, so schema and domain cannot drift; the
service validates again (cross-field rules, reserved names), so nothing relies on this alone.
Response models are built from the core dataclasses (``from_attributes``).
"""

from __future__ import annotations

import enum
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from fastapi import Path, Query
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    Strict,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel

from proxy_failover.core import limits
from proxy_failover.core.limits import Limit
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
from proxy_failover.entrypoints.api.openapi_docs import document_schema


def iso_z(value: datetime) -> str:
    """ISO 8601 UTC with milliseconds and ``Z`` (like JavaScript's ``toISOString``).

    Formatted by hand: a quarter of ``strftime``'s cost, and a list renders hundreds. Years are
    four digits (``0001``), as ISO 8601 has them."""
    if value.tzinfo is not UTC:
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (  # noqa: UP031 (the fastest formatting)
        value.year,
        value.month,
        value.day,
        value.hour,
        value.minute,
        value.second,
        value.microsecond // 1000,
    )


UtcDatetime = Annotated[
    datetime,
    PlainSerializer(iso_z, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}, mode="serialization"),
]


def enum_filter_pattern(choices: type[enum.Enum]) -> str:
    """A query filter's pattern: one of the enum's values, or empty for any."""
    return "^(|" + "|".join(re.escape(str(member.value)) for member in choices) + ")$"


def constraints(limit: Limit | None) -> dict[str, Any]:
    """The ``Field``/``Query``/``Path`` keywords of a core limit (lists: item counts)."""
    if limit is None:
        return {}
    keywords = {
        "ge": limit.minimum,
        "le": limit.maximum,
        "min_length": limit.min_length if limit.min_items is None else limit.min_items,
        "max_length": limit.max_length if limit.max_items is None else limit.max_items,
        "pattern": limit.pattern,
    }
    return {key: value for key, value in keywords.items() if value is not None}


def field(limit: Limit | None = None, **extra: Any) -> Any:
    """A field bounded by a core limit; ``extra`` adds ``default``, descriptions, examples..."""
    return Field(**constraints(limit), **extra)


def _drop_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def _date_time(schema: dict[str, Any]) -> None:
    """An optional ISO 8601 time given as text (core parses it, so strict mode stays on)."""
    _drop_default(schema)
    for option in schema.get("anyOf", [schema]):
        if option.get("type") == "string":
            option["format"] = "date-time"


def optional(limit: Limit | None = None, **extra: Any) -> Any:
    """A field that may be left out (partial updates) but, when given, must not be null."""
    extra.setdefault("json_schema_extra", _drop_default)
    return Field(default=None, **constraints(limit), **extra)


ProxyId = Annotated[str, field(limits.PROXY_ID, examples=["proxy-123"])]
ProxyIdPath = Annotated[
    str, Path(alias="proxyId", description="the proxy's id", **constraints(limits.PROXY_ID))
]
ListLimit = Annotated[
    int, Query(description="How many items at most.", **constraints(limits.LIST_LIMIT))
]
PageCursor = Annotated[
    str | None,
    Query(
        description="The `nextCursor` of the previous page: the page after it (keyset, opaque).",
        **constraints(limits.CURSOR),
    ),
]
InstanceId = Annotated[str, field(limits.ID)]
Text = Annotated[str, field(limits.TEXT)]


class RequestModel(BaseModel):
    """camelCase only, unknown fields refused, no silent coercion of strings into numbers."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        extra="forbid",
        strict=True,
        allow_inf_nan=False,
        json_schema_extra=document_schema,
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
        json_schema_extra=document_schema,
    )


# --- requests -----------------------------------------------------------------------------------

# Choices are core's enums; JSON gives their values as text, which strict mode would refuse.
StrategyName = Annotated[FailoverStrategy, Strict(False)]
LbAlgorithmName = Annotated[LoadBalancingAlgorithm, Strict(False)]
HealthName = Annotated[HealthStatus, Strict(False)]
AdminStateName = Annotated[AdminState, Strict(False)]
CheckTypeName = Annotated[HealthCheckType, Strict(False)]
RedundancyLevelName = Annotated[RedundancyLevel, Strict(False)]


class HealthCheckBody(RequestModel):
    type: CheckTypeName = optional()
    path: str = optional(limits.HEALTH_CHECK_PATH)
    expected_status: str = optional(limits.EXPECTED_STATUS)


class ConfigBody(RequestModel):
    """SPEC §3 fields; on an existing proxy only those given change."""

    failover_strategy: StrategyName = optional()
    health_check_interval_seconds: float = optional(limits.INTERVAL_SECONDS)
    health_check_timeout_seconds: float = optional(limits.TIMEOUT_SECONDS)
    fast_interval_seconds: float | None = optional(limits.INTERVAL_SECONDS)
    down_interval_seconds: float | None = optional(limits.INTERVAL_SECONDS)
    unhealthy_threshold: int = optional(limits.THRESHOLD)
    healthy_threshold: int = optional(limits.THRESHOLD)
    enable_auto_failover: bool = optional()
    enable_auto_recovery: bool = optional()
    max_recovery_attempts: int = optional(limits.MAX_RECOVERY_ATTEMPTS)
    recovery_backoff_seconds: float = optional(limits.RECOVERY_BACKOFF_SECONDS)
    enable_auto_failback: bool = optional()
    failback_delay_seconds: float = optional(limits.FAILBACK_DELAY_SECONDS)
    enable_load_balancing: bool = optional()
    load_balancing_algorithm: LbAlgorithmName = optional()
    health_report_ttl_seconds: float | None = optional(limits.HEALTH_REPORT_TTL_SECONDS)
    health_check: HealthCheckBody = optional()


class ConfigRequest(RequestModel):
    """``POST /proxy/failover/config`` (the seed's body)."""

    proxy_id: ProxyId
    config: ConfigBody = Field(default_factory=ConfigBody)


class InstanceDataBody(RequestModel):
    instance_name: str = field(limits.INSTANCE_NAME)
    instance_type: str = optional(limits.INSTANCE_TYPE)
    endpoint: str | None = optional(limits.URL)
    traffic_address: str | None = optional(limits.ADDRESS)
    recovery_url: str | None = optional(limits.URL)
    priority: int = optional(limits.PRIORITY)
    weight: int = optional(limits.WEIGHT)
    admin_state: AdminStateName = optional()
    metadata: dict[str, Any] = optional()


class InstanceRequest(RequestModel):
    """``POST /proxy/instances`` (the seed's body)."""

    proxy_id: ProxyId
    instance_data: InstanceDataBody


class InstancePatch(RequestModel):
    """``PATCH /proxy/instances/{instanceId}``: the operator-editable fields."""

    priority: int = optional(limits.PRIORITY)
    weight: int = optional(limits.WEIGHT)
    endpoint: str | None = optional(limits.URL)
    traffic_address: str | None = optional(limits.ADDRESS)
    recovery_url: str | None = optional(limits.URL)
    admin_state: AdminStateName = optional()
    metadata: dict[str, Any] = optional()


class MetricsBody(RequestModel):
    """One metric sample (SPEC §3): all optional, numbers ≥ 0, percentages ≤ 100, rates ≤ 1."""

    cpu_percent: float = optional(limits.PERCENT)
    memory_percent: float = optional(limits.PERCENT)
    request_rate: float = optional(limits.NON_NEGATIVE)
    average_latency_ms: float = optional(limits.NON_NEGATIVE)
    error_rate: float = optional(limits.FRACTION)
    connection_count: int = optional(limits.COUNT)
    throughput_mbps: float = optional(limits.NON_NEGATIVE)


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
    latency_ms: float | None = optional(limits.NON_NEGATIVE)
    error: Text | None = optional()


class EvaluateRequest(RequestModel):
    proxy_id: ProxyId


class ExecuteRequest(RequestModel):
    proxy_id: ProxyId
    source_instance_id: str | None = field(limits.ID, default=None)
    target_instance_id: str = field(limits.REQUIRED_ID)
    reason: Text | None = None


class CompleteRequest(RequestModel):
    status: Literal["completed", "failed"]
    error_message: Text | None = None
    duration_ms: int | None = field(limits.DURATION_MS, default=None)


class RedundancyRequest(RequestModel):
    """The seed's ``PUT /proxy/{proxyId}/redundancy`` override (checked by core: 014).

    Every field GET returns is accepted so a client can GET, change one count and PUT it back;
    ``proxyId``, ``activeInstanceId`` and ``epoch`` must equal the current values, and
    ``lastFailoverAt``, ``overridden`` and ``updatedAt`` are the server's and ignored.
    """

    proxy_id: ProxyId = optional()
    total_instances: int = optional(limits.COUNT)
    healthy_instances: int = optional(limits.COUNT)
    unhealthy_instances: int = optional(limits.COUNT)
    active_instance_id: InstanceId | None = optional()
    backup_instance_ids: list[InstanceId] = optional(limits.ID_LIST)
    last_failover_at: str | None = optional(limits.TIMESTAMP_TEXT, json_schema_extra=_date_time)
    last_failover_reason: Text | None = optional()
    redundancy_level: RedundancyLevelName = optional()
    is_degraded: bool = optional()
    epoch: int = optional(limits.EPOCH)
    overridden: bool = optional()
    updated_at: str | None = optional(limits.TIMESTAMP_TEXT, json_schema_extra=_date_time)


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
    health_report_ttl_seconds: float | None
    health_check: HealthCheckPublic
    created_at: UtcDatetime | None
    updated_at: UtcDatetime | None


class InstancePublic(ResponseModel):
    id: str
    proxy_id: str
    user_id: str
    instance_name: str
    instance_type: str
    endpoint: str | None
    traffic_address: str | None = None
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
    traffic_address: str | None = None


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

    model_config = ConfigDict(json_schema_extra=document_schema)

    data: T
    message: str


class ListEnvelope(BaseModel, Generic[T]):
    """The original backend's list envelope; ``count`` is the number of items returned."""

    model_config = ConfigDict(json_schema_extra=document_schema)

    data: list[T]
    count: int


class PageEnvelope(ListEnvelope[T], Generic[T]):
    """A list that pages: ``nextCursor`` (pass it as ``cursor``) while the page was full."""

    next_cursor: str | None = Field(
        alias="nextCursor",
        description="Pass as `cursor` for the next (older) page; null when this one was not full.",
    )


class ErrorDetail(BaseModel):
    model_config = ConfigDict(json_schema_extra=document_schema)

    code: str = Field(examples=["PROXY_FAILOVER_001"])
    message: str
    status_code: int = Field(alias="statusCode", serialization_alias="statusCode")
    details: dict[str, Any]


class ErrorBody(BaseModel):
    """Every error: ``{"error": {"code", "message", "statusCode", "details"}}``."""

    model_config = ConfigDict(json_schema_extra=document_schema)

    error: ErrorDetail
