"""Instance routes: register, list, read, patch, delete, health reports, raw checks, metrics."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Response

from proxy_failover.core.errors import config_not_found
from proxy_failover.core.model import ADMIN_ONLY_INSTANCE_FIELDS, CheckResult, Instance
from proxy_failover.entrypoints.api.auth import Caller
from proxy_failover.entrypoints.api.deps import (
    AdminDep,
    CallerDep,
    OutboundDep,
    OwnershipDep,
    ServiceDep,
    check_outbound,
)
from proxy_failover.entrypoints.api.middleware import StrictJsonRoute
from proxy_failover.entrypoints.api.responses import (
    ADMIN_ERRORS,
    COMMON_ERRORS,
    CONFLICT_ERRORS,
    ok,
    ok_body,
    ok_list,
)
from proxy_failover.entrypoints.api.schemas import (
    CheckRequest,
    Envelope,
    HealthRequest,
    InstancePatch,
    InstancePublic,
    InstanceRequest,
    ListEnvelope,
    ListLimit,
    MetricSamplePublic,
    MetricsRequest,
    ProxyIdPath,
)

router = APIRouter(route_class=StrictJsonRoute, responses=COMMON_ERRORS, tags=["instances"])

InstanceIdPath = Annotated[str, Path(alias="instanceId", description="an instance id (UUID)")]


def _hidden(caller: Caller) -> frozenset[str] | None:
    """Health-check detail (last error, last latency) is for admins only."""
    return None if caller.is_admin else ADMIN_ONLY_INSTANCE_FIELDS


def instance_response(
    instance: Instance, caller: Caller, message: str, status_code: int = 200
) -> Response:
    """The route's answer with one instance."""
    return ok(
        InstancePublic.model_validate(instance),
        message,
        status_code=status_code,
        exclude=_hidden(caller),
    )


def _destinations(data: dict[str, Any]) -> dict[str, object]:
    """The fields of an instance body that make the engine connect somewhere."""
    return {name: data[name] for name in ("endpoint", "recoveryUrl") if name in data}


def instance_body(instance: Instance, caller: Caller, message: str) -> bytes:
    """``instance_response``'s body alone (the health short path sends it without a Response)."""
    return ok_body(InstancePublic.model_validate(instance), message, exclude=_hidden(caller))


@router.post(
    "/proxy/instances",
    status_code=201,
    response_model=Envelope[InstancePublic],
    responses=CONFLICT_ERRORS,
    summary="Register an instance (creates the proxy's default configuration if new)",
)
async def register(
    body: InstanceRequest,
    caller: CallerDep,
    service: ServiceDep,
    ownership: OwnershipDep,
    outbound: OutboundDep,
) -> Response:
    await ownership.may_create(caller, body.proxy_id)
    data = body.instance_data.to_service()
    await check_outbound(outbound, caller, _destinations(data))
    instance = await service.register_proxy_instance(
        body.proxy_id, caller.user_id, data, outbound_trusted=caller.is_admin
    )
    ownership.remember_instance(instance)
    return instance_response(instance, caller, "Proxy instance registered", status_code=201)


@router.get(
    "/proxy/{proxyId}/instances",
    response_model=ListEnvelope[InstancePublic],
    summary="A proxy's instances in preference order",
)
async def list_instances(
    proxy_id: ProxyIdPath, caller: CallerDep, service: ServiceDep, ownership: OwnershipDep
) -> Response:
    await ownership.check_proxy(caller, proxy_id)
    if caller.is_admin and await ownership.owner_of(proxy_id) is None:
        raise config_not_found(proxy_id)
    instances = await service.get_proxy_instances(proxy_id)
    models = (InstancePublic.model_validate(instance) for instance in instances)
    return ok_list(models, exclude=_hidden(caller))


@router.get(
    "/proxy/instances/{instanceId}",
    response_model=Envelope[InstancePublic],
    summary="One instance",
)
async def get_instance(
    instance_id: InstanceIdPath, caller: CallerDep, service: ServiceDep, ownership: OwnershipDep
) -> Response:
    await ownership.check_instance(caller, instance_id)
    instance = await service.get_instance(instance_id)
    return instance_response(instance, caller, "Proxy instance retrieved")


@router.put(
    "/proxy/instances/{instanceId}/health",
    response_model=Envelope[InstancePublic],
    summary="Report an instance's health (authoritative; optional metric sample)",
)
async def report_health(
    instance_id: InstanceIdPath,
    body: HealthRequest,
    caller: CallerDep,
    service: ServiceDep,
    ownership: OwnershipDep,
) -> Response:
    await ownership.check_instance(caller, instance_id)
    metrics = body.metrics.to_service() if body.metrics is not None else None
    instance = await service.update_instance_health(instance_id, body.health_status, metrics)
    return instance_response(instance, caller, "Instance health updated")


@router.patch(
    "/proxy/instances/{instanceId}",
    response_model=Envelope[InstancePublic],
    summary="Change priority, weight, endpoint, trafficAddress, recoveryUrl, adminState, metadata",
)
async def patch_instance(
    instance_id: InstanceIdPath,
    body: InstancePatch,
    caller: CallerDep,
    service: ServiceDep,
    ownership: OwnershipDep,
    outbound: OutboundDep,
) -> Response:
    await ownership.check_instance(caller, instance_id)
    changes = body.to_service()
    await check_outbound(outbound, caller, _destinations(changes))
    instance = await service.update_instance(
        instance_id, caller.user_id, changes, outbound_trusted=caller.is_admin
    )
    return instance_response(instance, caller, "Proxy instance updated")


@router.delete(
    "/proxy/instances/{instanceId}",
    response_model=Envelope[dict[str, str]],
    responses=CONFLICT_ERRORS,
    summary="Remove an instance (the active role moves away first)",
)
async def delete_instance(
    instance_id: InstanceIdPath, caller: CallerDep, service: ServiceDep, ownership: OwnershipDep
) -> Response:
    await ownership.check_instance(caller, instance_id)
    await service.delete_instance(instance_id, caller.user_id)
    ownership.forget_instance(instance_id)
    return ok({"id": instance_id}, "Proxy instance deleted")


@router.post(
    "/proxy/instances/{instanceId}/checks",
    response_model=Envelope[InstancePublic],
    summary="A raw probe result from an external checker (runs the rise/fall state machine)",
)
async def post_check(
    instance_id: InstanceIdPath,
    body: CheckRequest,
    caller: CallerDep,
    service: ServiceDep,
    ownership: OwnershipDep,
) -> Response:
    await ownership.check_instance(caller, instance_id)
    result = CheckResult(success=body.success, latency_ms=body.latency_ms, error=body.error)
    instance = await service.record_check_result(instance_id, result)
    return instance_response(instance, caller, "Check result recorded")


@router.post(
    "/proxy/instances/{instanceId}/metrics",
    response_model=Envelope[MetricSamplePublic],
    summary="Record one metric sample (owner or admin)",
)
async def post_metrics(
    instance_id: InstanceIdPath,
    body: MetricsRequest,
    caller: CallerDep,
    service: ServiceDep,
    ownership: OwnershipDep,
) -> Response:
    proxy_id = await ownership.check_instance(caller, instance_id)
    stored = await service.record_instance_metrics(
        instance_id, proxy_id, caller.user_id, body.to_service()
    )
    exclude = None if caller.is_admin else {"sample"}
    return ok(MetricSamplePublic.model_validate(stored), "Metrics recorded", exclude=exclude)


@router.get(
    "/proxy/instances/{instanceId}/metrics",
    response_model=ListEnvelope[MetricSamplePublic],
    responses=ADMIN_ERRORS,
    summary="An instance's metric samples, newest first (admin)",
)
async def get_metrics(
    instance_id: InstanceIdPath,
    caller: AdminDep,
    service: ServiceDep,
    limit: ListLimit = 100,
) -> Response:
    samples = await service.get_instance_metrics(instance_id, limit)
    return ok_list(MetricSamplePublic.model_validate(sample) for sample in samples)
