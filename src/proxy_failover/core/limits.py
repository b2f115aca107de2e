"""The one table of input limits: ranges, lengths and patterns of every field a client sends.

Core's validation checks input against these values and the API's request schemas are generated
from them (``entrypoints/api/schemas.py``), so the OpenAPI document and the domain cannot disagree;
a test walks every request schema of the app and compares each constraint with ``FIELDS``.

SPEC §3/§7/§8 give most values. Where SPEC is silent (names, ids, free text, priority), the
choice and its reason are in docs/api.md ("Limits").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

#: Counts and durations are stored in 32-bit integer columns (PostgreSQL ``INTEGER``).
INT32_MAX = 2**31 - 1


@dataclass(frozen=True, slots=True)
class Limit:
    """What one field accepts; ``None`` means unbounded.

    ``minimum``/``maximum`` bound numbers (inclusive), ``min_length``/``max_length`` strings,
    ``min_items``/``max_items`` lists (whose elements obey ``items``); ``pattern`` is a regular
    expression anchored with ``^...$`` that the whole string must match, and ``hint`` says it in
    words for error messages.
    """

    minimum: float | None = None
    maximum: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    min_items: int | None = None
    max_items: int | None = None
    items: Limit | None = None
    hint: str | None = None


# --- identities -------------------------------------------------------------------------------

#: SPEC §3: client-chosen proxy ids (the reserved words are checked by core, not a pattern).
PROXY_ID = Limit(
    pattern=r"^[A-Za-z0-9._:-]{1,128}$",
    hint="must be 1-128 characters of A-Z, a-z, 0-9, '.', '_', ':', '-'",
)
#: Server-made ids are UUIDs (36 characters); 64 leaves room without inviting abuse.
ID = Limit(max_length=64)
REQUIRED_ID = Limit(min_length=1, max_length=64)
ID_LIST = Limit(max_items=1000, items=ID)

# --- instances (SPEC §3) ----------------------------------------------------------------------

#: As long as a proxy id: a name is a label, not a document.
INSTANCE_NAME = Limit(min_length=1, max_length=128)
INSTANCE_TYPE = Limit(min_length=1, max_length=64)
URL = Limit(min_length=1, max_length=2048)
#: ``host:port``: a 253-character DNS name (or a bracketed IPv6 address), ':' and 5 digits.
ADDRESS = Limit(min_length=1, max_length=261)
#: Lower is preferred; ±1,000,000 leaves room for any ordering scheme and keeps sums exact.
PRIORITY = Limit(minimum=-1_000_000, maximum=1_000_000)
WEIGHT = Limit(minimum=0, maximum=1000)

# --- configuration (SPEC §3) ------------------------------------------------------------------

INTERVAL_SECONDS = Limit(minimum=0.1, maximum=3600)
TIMEOUT_SECONDS = Limit(minimum=0.05, maximum=300)
THRESHOLD = Limit(minimum=1, maximum=100)
MAX_RECOVERY_ATTEMPTS = Limit(minimum=0, maximum=100)
RECOVERY_BACKOFF_SECONDS = Limit(minimum=0, maximum=3600)
FAILBACK_DELAY_SECONDS = Limit(minimum=0, maximum=86400)
HEALTH_REPORT_TTL_SECONDS = Limit(minimum=1, maximum=86400)
HEALTH_CHECK_PATH = Limit(
    min_length=1,
    max_length=1024,
    pattern=r"^/\S*$",
    hint="must start with '/' and contain no spaces",
)
#: "200", "200-399", "200,204,300-399" (spaces allowed around the parts); 100-599 checked apart.
EXPECTED_STATUS = Limit(
    max_length=200,
    pattern=r"^ *\d{3}(-\d{3})? *(, *\d{3}(-\d{3})? *)*$",
    hint="must be like '200', '200-399' or '200,204,300-399'",
)

# --- health, checks, metrics (SPEC §3, §7) ----------------------------------------------------

NON_NEGATIVE = Limit(minimum=0)
PERCENT = Limit(minimum=0, maximum=100)
FRACTION = Limit(minimum=0, maximum=1)
COUNT = Limit(minimum=0, maximum=INT32_MAX)
#: Free text a client attaches (check errors, reasons, error messages).
TEXT = Limit(max_length=1000)

# --- failover, events, lists ------------------------------------------------------------------

DURATION_MS = Limit(minimum=0, maximum=INT32_MAX)
EPOCH = Limit(minimum=0)
LIST_LIMIT = Limit(minimum=1, maximum=1000)
#: An opaque list cursor (``core.pagination``): base64 of a short array; 200 fits every kind.
CURSOR = Limit(min_length=1, max_length=200)
TIMESTAMP_TEXT = Limit(max_length=64)
#: ``Last-Event-ID`` of the live stream: a sequence number.
STREAM_CURSOR = Limit(max_length=20, pattern=r"^\d+$", hint="must be a sequence number")
#: ...whose value the event log's 32-bit sequence column can hold.
EVENT_SEQUENCE = Limit(minimum=0, maximum=INT32_MAX)

# --- Envoy xDS (SPEC §9): its DiscoveryRequest keeps the .proto's snake_case names ----------

#: EDS names clusters by proxy id.
RESOURCE_NAMES = Limit(max_items=1000, items=PROXY_ID)

# --- webhooks (SPEC §8) -----------------------------------------------------------------------

WEBHOOK_SECRET = Limit(min_length=16, max_length=512)
WEBHOOK_EVENTS = Limit(min_items=1)

#: Every limited field by the name the API gives it (camelCase body keys, query, path and header
#: names). A name means the same thing wherever it appears.
FIELDS: Mapping[str, Limit] = MappingProxyType(
    {
        "proxyId": PROXY_ID,
        "instanceName": INSTANCE_NAME,
        "instanceType": INSTANCE_TYPE,
        "endpoint": URL,
        "trafficAddress": ADDRESS,
        "recoveryUrl": URL,
        "priority": PRIORITY,
        "weight": WEIGHT,
        "healthCheckIntervalSeconds": INTERVAL_SECONDS,
        "fastIntervalSeconds": INTERVAL_SECONDS,
        "downIntervalSeconds": INTERVAL_SECONDS,
        "healthCheckTimeoutSeconds": TIMEOUT_SECONDS,
        "unhealthyThreshold": THRESHOLD,
        "healthyThreshold": THRESHOLD,
        "maxRecoveryAttempts": MAX_RECOVERY_ATTEMPTS,
        "recoveryBackoffSeconds": RECOVERY_BACKOFF_SECONDS,
        "failbackDelaySeconds": FAILBACK_DELAY_SECONDS,
        "healthReportTtlSeconds": HEALTH_REPORT_TTL_SECONDS,
        "path": HEALTH_CHECK_PATH,
        "expectedStatus": EXPECTED_STATUS,
        "cpuPercent": PERCENT,
        "memoryPercent": PERCENT,
        "requestRate": NON_NEGATIVE,
        "averageLatencyMs": NON_NEGATIVE,
        "errorRate": FRACTION,
        "connectionCount": COUNT,
        "throughputMbps": NON_NEGATIVE,
        "latencyMs": NON_NEGATIVE,
        "error": TEXT,
        "sourceInstanceId": ID,
        "targetInstanceId": REQUIRED_ID,
        "reason": TEXT,
        "errorMessage": TEXT,
        "durationMs": DURATION_MS,
        "totalInstances": COUNT,
        "healthyInstances": COUNT,
        "unhealthyInstances": COUNT,
        "activeInstanceId": ID,
        "backupInstanceIds": ID_LIST,
        "lastFailoverReason": TEXT,
        "lastFailoverAt": TIMESTAMP_TEXT,
        "updatedAt": TIMESTAMP_TEXT,
        "epoch": EPOCH,
        "limit": LIST_LIMIT,
        "before": TIMESTAMP_TEXT,
        "cursor": CURSOR,
        "url": URL,
        "secret": WEBHOOK_SECRET,
        "events": WEBHOOK_EVENTS,
        "subscriptionId": ID,
        "deliveryId": ID,
        "Last-Event-ID": STREAM_CURSOR,
        "resource_names": RESOURCE_NAMES,
        "version_info": TEXT,
        "type_url": TEXT,
    }
)
