"""What the OpenAPI document says about the API, in one place: operation ids, field descriptions,
request examples.

Field descriptions are keyed by the JSON (camelCase) name, since a name means the same thing in
every schema it appears in; ``Model.field`` keys say what differs (``DeliveryPublic.status``).
The schema hook ``document_schema`` fills them in for every request and response model, so a new
field without an entry here is caught by ``tests/e2e/test_openapi_document.py``, as is an
operation without a name (FastAPI's generated ``save_config_proxy_failover_config_post``) or a
request body without an example.
"""

from __future__ import annotations

from typing import Any

from fastapi.routing import APIRoute
from fastapi.utils import generate_unique_id

#: (method, path) -> operationId. Routes missing here keep FastAPI's generated id (and fail the
#: OpenAPI test), so every new route gets a deliberate name.
OPERATION_IDS: dict[tuple[str, str], str] = {
    ("GET", "/healthz"): "getLiveness",
    ("GET", "/readyz"): "getReadiness",
    ("GET", "/metrics"): "getPrometheusMetrics",
    ("GET", "/audit"): "listAuditLog",
    ("GET", "/proxies"): "listProxies",
    ("GET", "/providers/traefik"): "getTraefikConfiguration",
    ("POST", "/proxy/failover/config"): "createFailoverConfig",
    ("GET", "/proxy/failover/config/{proxyId}"): "getFailoverConfig",
    ("DELETE", "/proxy/failover/config/{proxyId}"): "deleteFailoverConfig",
    ("POST", "/proxy/failover/evaluate"): "evaluateFailover",
    ("POST", "/proxy/failover/execute"): "executeFailover",
    ("PUT", "/proxy/failover/events/{eventId}/complete"): "completeFailoverEvent",
    ("GET", "/proxy/{proxyId}/redundancy"): "getRedundancyStatus",
    ("PUT", "/proxy/{proxyId}/redundancy"): "updateRedundancyStatus",
    ("GET", "/proxy/{proxyId}/failover/events"): "listFailoverEvents",
    ("GET", "/proxy/{proxyId}/route"): "getRoute",
    ("GET", "/proxy/{proxyId}/explain"): "explainProxy",
    ("GET", "/proxy/{proxyId}/stream"): "streamProxyEvents",
    ("POST", "/proxy/instances"): "registerProxyInstance",
    ("GET", "/proxy/{proxyId}/instances"): "listProxyInstances",
    ("GET", "/proxy/instances/{instanceId}"): "getInstance",
    ("PATCH", "/proxy/instances/{instanceId}"): "updateInstance",
    ("DELETE", "/proxy/instances/{instanceId}"): "deleteInstance",
    ("PUT", "/proxy/instances/{instanceId}/health"): "updateInstanceHealth",
    ("POST", "/proxy/instances/{instanceId}/checks"): "recordCheckResult",
    ("POST", "/proxy/instances/{instanceId}/metrics"): "recordInstanceMetrics",
    ("GET", "/proxy/instances/{instanceId}/metrics"): "listInstanceMetrics",
    ("POST", "/proxy/{proxyId}/webhooks"): "createWebhookSubscription",
    ("GET", "/proxy/{proxyId}/webhooks"): "listWebhookSubscriptions",
    ("GET", "/proxy/{proxyId}/webhooks/deliveries"): "listWebhookDeliveries",
    (
        "POST",
        "/proxy/{proxyId}/webhooks/deliveries/{deliveryId}/redeliver",
    ): "redeliverWebhookDelivery",
    ("DELETE", "/proxy/{proxyId}/webhooks/{subscriptionId}"): "deleteWebhookSubscription",
    ("POST", "/v3/discovery:endpoints"): "envoyDiscoverEndpoints",
    ("GET", "/v3/discovery:endpoints"): "envoyDiscoverEndpointsByQuery",
}


def operation_id(route: APIRoute) -> str:
    """The route's name from ``OPERATION_IDS``; FastAPI's generated id when it has none."""
    for method in sorted(route.methods or ()):
        named = OPERATION_IDS.get((method, route.path_format))
        if named is not None:
            return named
    return generate_unique_id(route)


_TIME = "ISO 8601 UTC timestamp with milliseconds and Z"

#: JSON field name -> description, for every schema the API uses.
FIELD_DOCS: dict[str, str] = {
    # envelopes and errors
    "data": "The result.",
    "count": "Number of items in data.",
    "nextCursor": "Pass as `cursor` for the next (older) page; null when this page was not full.",
    "message": "What happened, in a sentence for people.",
    "code": "Error code PROXY_FAILOVER_0NN (the table in docs/api.md).",
    "details": "Context of the error, e.g. the field at fault.",
    "statusCode": "HTTP status of the response.",
    # ids and owners
    "id": "Server-made UUID of this object.",
    "proxyId": "The logical proxy: 1-128 characters of [A-Za-z0-9._:-], chosen by the client.",
    "userId": "Owner: the user (token sub) who created the proxy's configuration.",
    "instanceId": "UUID of the instance.",
    "sourceInstanceId": "Instance the active role moves away from (null: there was none).",
    "targetInstanceId": "Instance that takes the active role (null: nobody).",
    "activeInstanceId": "The proxy's active instance (null: none).",
    "backupInstanceIds": "Eligible instances other than the active one, in preference order.",
    # configuration
    "config": "Configuration fields to set; on an existing proxy only those given change.",
    "failoverStrategy": "How a failover target is chosen: priority, round_robin or "
    "least_connections.",
    "healthCheckIntervalSeconds": "Seconds between probes of a healthy instance (default 30).",
    "healthCheckTimeoutSeconds": "Seconds a probe may take (default min(5, interval)); at most "
    "the interval.",
    "fastIntervalSeconds": "Probe interval while a state change is pending (HAProxy's fastinter); "
    "null = min(interval, 2 s).",
    "downIntervalSeconds": "Probe interval while unhealthy (HAProxy's downinter); null = the "
    "interval.",
    "unhealthyThreshold": "Consecutive failures that make an instance unhealthy (default 3).",
    "healthyThreshold": "Consecutive successes that make an unhealthy instance healthy "
    "(default 2).",
    "enableAutoFailover": "The engine fails over by itself when the active instance fails.",
    "enableAutoRecovery": "Probe successes return an unhealthy instance to the pool; recovery "
    "actions run.",
    "maxRecoveryAttempts": "Recovery POSTs to an instance's recoveryUrl before giving up.",
    "recoveryBackoffSeconds": "Seconds between recovery attempts.",
    "enableAutoFailback": "Switch back to the first instance in priority order once it has "
    "been healthy for failbackDelaySeconds.",
    "failbackDelaySeconds": "How long the preferred instance must stay healthy before a failback.",
    "healthReportTtlSeconds": "A reported health status not refreshed within this many seconds "
    "expires: the instance turns unhealthy with reason 'report expired' (Consul's TTL checks); "
    "probed instances are unaffected. null = off.",
    "enableLoadBalancing": "GET /route spreads clients over every eligible instance.",
    "loadBalancingAlgorithm": "With load balancing: round_robin, least_connections or weighted.",
    "healthCheck": "How instances are probed.",
    "type": "Probe type: http, https or tcp.",
    "path": "HTTP(S) probe path, appended to the endpoint's path.",
    "expectedStatus": "HTTP statuses that count as healthy, e.g. 200, 200-399 or 200,204,300-399.",
    "createdAt": f"When it was created ({_TIME}).",
    "updatedAt": f"When it last changed ({_TIME}).",
    # instances
    "instanceData": "The instance to register.",
    "instanceName": "Name, unique within the proxy.",
    "instanceType": "Free label of the instance's kind (default standard).",
    "endpoint": "Where probes go: host:port or an http(s) URL; null = health by reports only.",
    "trafficAddress": "host:port where user traffic for the instance goes (data planes use "
    "it); null = the endpoint's host and port.",
    "recoveryUrl": "http(s) URL the engine POSTs to when the instance turns unhealthy.",
    "priority": "Preference: lower is preferred (default 100).",
    "weight": "Share of traffic with weighted load balancing, 0-1000 (default 100).",
    "adminState": "enabled, drain (out of the pool, still probed) or maintenance (out of the "
    "pool, not probed).",
    "healthStatus": "unknown, healthy or unhealthy.",
    "consecutiveFailures": "Failed checks in a row.",
    "consecutiveSuccesses": "Successful checks in a row.",
    "lastHealthCheck": f"When the last check result arrived ({_TIME}).",
    "lastError": "Why the last check failed (admins only).",
    "lastLatencyMs": "Latency of the last probe in milliseconds (admins only).",
    "activeConnections": "Latest reported connection count.",
    "isActive": "This instance is the proxy's active instance.",
    "totalRequests": "Check results counted so far.",
    "successfulRequests": "Successful check results counted so far.",
    "failedRequests": "Failed check results counted so far.",
    "metadata": "Free JSON object of the client's.",
    # health reports, checks, metrics
    "metrics": "An optional metric sample sent with the report.",
    "success": "The check succeeded.",
    "latencyMs": "How long the check took, in milliseconds.",
    "error": "Why the check failed.",
    "cpuPercent": "CPU use, 0-100.",
    "memoryPercent": "Memory use, 0-100.",
    "requestRate": "Requests per second.",
    "averageLatencyMs": "Average latency in milliseconds.",
    "errorRate": "Share of failed requests, 0-1.",
    "connectionCount": "Open connections (also updates the instance's activeConnections).",
    "throughputMbps": "Throughput in megabits per second.",
    "sample": "The metric values (admins only).",
    "recordedAt": f"When the sample was stored ({_TIME}).",
    # events, failover, redundancy
    "eventType": "failover, failback, switchover or recovery.",
    "reason": "Why, in a sentence for people.",
    "status": "pending, in_progress, completed or failed.",
    "triggeredBy": "Who caused it: a user id, or system for the engine.",
    "errorMessage": "Why it failed (status failed).",
    "durationMs": "Milliseconds from start to completion.",
    "epoch": "Fencing token: grows by one at every change of the active instance, never goes back.",
    "completedAt": f"When it completed or failed ({_TIME}).",
    "startTime": "When it started, in epoch milliseconds (the seed's field).",
    "shouldFailover": "A failover is due now.",
    "reasonCode": "Machine-readable reason (SPEC §5), e.g. active_unhealthy or no_healthy_target.",
    "strategy": "The proxy's failover strategy.",
    "autoFailoverEnabled": "The engine would fail over by itself.",
    "evaluatedAt": f"When the evaluation was made ({_TIME}).",
    "totalInstances": "Instances of the proxy.",
    "healthyInstances": "Healthy instances.",
    "unhealthyInstances": "Unhealthy instances.",
    "lastFailoverAt": f"When the active instance last changed ({_TIME}).",
    "lastFailoverReason": "Why the active instance last changed.",
    "redundancyLevel": "none (0 instances), single (1), dual (2) or multi (3 or more).",
    "isDegraded": "Fewer healthy than total instances, or no healthy active instance.",
    "overridden": "Values set by PUT redundancy, kept until the next recompute.",
    "redundancy": "The proxy's redundancy status.",
    "loadBalanced": "Chosen by load balancing rather than being the active instance.",
    "summary": "One paragraph: who is active, why, and any pending health change.",
    "instances": "Every instance in preference order, with why it is or is not eligible.",
    "evaluation": "What evaluate answers now.",
    "isEligible": "Healthy and enabled: may take the active role.",
    "preferenceRank": "1-based place in preference order (priority, weight, registration).",
    "reasons": "Why the instance stands where it does, in short sentences.",
    # webhooks
    "url": "https URL that receives the signed POSTs (http for admins on private networks).",
    "secret": "Signs each delivery (HMAC-SHA256); never returned.",
    "events": "Notification types to deliver, e.g. failover.completed; null = all.",
    "subscriptionId": "The webhook subscription.",
    "eventId": "The notification delivered (the payload's id).",
    "attempts": "Attempts made so far.",
    "attempt": "1-based attempt number.",
    "attemptedAt": f"When the attempt was made ({_TIME}).",
    "attemptLog": "Every attempt, oldest first.",
    "nextAttemptAt": f"When the next attempt is due ({_TIME}); null when finished.",
    "lastAttemptAt": f"When the last attempt was made ({_TIME}).",
    "lastStatusCode": "HTTP status of the last attempt (null: no answer).",
    "deliveredAt": f"When a 2xx answer was received ({_TIME}).",
    "deleted": "The object was deleted.",
    # audit
    "occurredAt": f"When it happened ({_TIME}).",
    "actor": "Who: the caller's user id, or system.",
    "action": "What: the HTTP method and route, or the automatic action.",
    "target": "The object acted on.",
    "result": "ok, or the error code.",
    "requestId": "The request's X-Request-ID.",
}

#: ``Model.field`` -> description where a name means something else in that schema.
MODEL_FIELD_DOCS: dict[str, str] = {
    "AuditPublic.id": "Sequence number of the audit row.",
    "AuditPublic.details": "What the call carried or changed.",
    "AuditPublic.statusCode": "HTTP status answered (null for automatic actions).",
    "AttemptPublic.statusCode": "HTTP status the receiver answered (null: no answer).",
    "AttemptPublic.error": "Why the attempt failed.",
    "CheckRequest.error": "Why the check failed (free text, shown to admins).",
    "CompleteRequest.status": "Final status: completed or failed.",
    "DeliveryPublic.id": "Delivery id (the X-PFO-Delivery header).",
    "DeliveryPublic.status": "pending, delivered, dead (retries spent) or cancelled.",
    "DeliveryPublic.eventType": "Notification type delivered, e.g. failover.completed.",
    "DeliveryPublic.lastError": "Why the last attempt failed.",
    "DeliveryPublic.createdAt": f"When the delivery was queued ({_TIME}).",
    "DeletedPublic.id": "Id of the deleted object.",
    "ErrorBody.error": "The error.",
    "EvaluationPublic.eventType": "What executing now would record: failover, failback or "
    "switchover.",
    "ExecuteRequest.reason": "Why (default: Manual failover).",
    "ExecuteRequest.sourceInstanceId": "The current active instance, null when there is none "
    "(a compare-and-swap: 409/010 if it moved).",
    "ExecuteRequest.targetInstanceId": "The eligible instance to activate.",
    "MetricSamplePublic.id": "Server-made UUID of the sample.",
    "ProbeResult.status": "ok when the check passed.",
    "RedundancyRequest.proxyId": "Must equal the path's proxyId when given.",
    "RedundancyRequest.activeInstanceId": "Must equal the current active instance when given "
    "(the pointer never moves here).",
    "RedundancyRequest.epoch": "Must equal the current epoch when given.",
    "RedundancyRequest.lastFailoverAt": "The server's; ignored.",
    "RedundancyRequest.overridden": "The server's; ignored.",
    "RedundancyRequest.updatedAt": "The server's; ignored.",
    "RoutePublic.endpoint": "The chosen instance's endpoint.",
    "RoutePublic.trafficAddress": "Where to send traffic: the instance's trafficAddress, else "
    "its endpoint's host and port.",
}

_ID = "3f2b8c1e-9d4a-4e7b-8c21-6a5f0e9d1b2c"
_OTHER_ID = "7c9e6679-7425-40de-944b-e07fc1f90ae7"

#: Request model -> one example body (checked against the model by the OpenAPI test).
REQUEST_EXAMPLES: dict[str, dict[str, Any]] = {
    "ConfigRequest": {
        "proxyId": "proxy-123",
        "config": {
            "failoverStrategy": "priority",
            "healthCheckIntervalSeconds": 5,
            "unhealthyThreshold": 3,
            "healthyThreshold": 2,
            "enableAutoFailover": True,
            "healthCheck": {"type": "http", "path": "/health", "expectedStatus": "200-399"},
        },
    },
    "InstanceRequest": {
        "proxyId": "proxy-123",
        "instanceData": {
            "instanceName": "relay-a",
            "endpoint": "10.0.0.11:8080",
            "trafficAddress": "10.0.0.11:1935",
            "priority": 10,
            "weight": 100,
            "metadata": {"region": "eu-west"},
        },
    },
    "InstancePatch": {"priority": 20, "adminState": "drain"},
    "HealthRequest": {
        "healthStatus": "healthy",
        "metrics": {"cpuPercent": 45, "memoryPercent": 60},
    },
    "CheckRequest": {"success": False, "latencyMs": 1200.5, "error": "connection refused"},
    "MetricsRequest": {"cpuPercent": 45, "connectionCount": 120, "errorRate": 0.01},
    "EvaluateRequest": {"proxyId": "proxy-123"},
    "ExecuteRequest": {
        "proxyId": "proxy-123",
        "sourceInstanceId": _ID,
        "targetInstanceId": _OTHER_ID,
        "reason": "Planned maintenance of relay-a",
    },
    "CompleteRequest": {"status": "completed", "durationMs": 1500},
    "RedundancyRequest": {"healthyInstances": 1, "unhealthyInstances": 1, "isDegraded": True},
    "DiscoveryRequest": {
        "version_info": "",
        "node": {"id": "edge-envoy-1", "cluster": "edge"},
        "resource_names": ["proxy-123"],
        "type_url": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
    },
    "WebhookRequest": {
        "url": "https://ops.example/hooks/proxy-failover",
        "secret": "a-long-random-shared-secret",
        "events": ["failover.completed", "redundancy.degraded"],
    },
}


def _model_name(model: type) -> str:
    """``Envelope[ConfigPublic]`` -> ``Envelope``: overrides are written per model family."""
    return model.__name__.split("[", 1)[0]


def document_schema(schema: dict[str, Any], model: type) -> None:
    """Pydantic schema hook: a description on every property, and the example of a request body.

    A property that already has a description (given on the field) keeps it.
    """
    name = _model_name(model)
    for field_name, prop in (schema.get("properties") or {}).items():
        if "description" in prop:
            continue
        text = MODEL_FIELD_DOCS.get(f"{name}.{field_name}") or FIELD_DOCS.get(field_name)
        if text is not None:
            prop["description"] = text
    example = REQUEST_EXAMPLES.get(name)
    if example is not None:
        schema["examples"] = [example]
