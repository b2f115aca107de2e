"""Reads for clients and operators: where to route a proxy's traffic now, what a data plane should
do with it, and why the engine would (or would not) fail over."""

from __future__ import annotations

from proxy_failover.core import failover as core_failover
from proxy_failover.core import strategies
from proxy_failover.core.dataplane import (
    DesiredState,
    desired_state,
    format_address,
    traffic_address,
)
from proxy_failover.core.errors import Conflict, ErrorCode, config_not_found
from proxy_failover.core.model import Explanation, Route
from proxy_failover.service.configs import get_failover_configuration
from proxy_failover.service.context import ServiceContext
from proxy_failover.service.engine_ops import load_snapshot
from proxy_failover.service.instances import get_proxy_instances
from proxy_failover.service.redundancy import get_redundancy_status


async def get_route(ctx: ServiceContext, proxy_id: str) -> Route:
    """The instance a client should use now: the active one, or a load-balanced pick (008)."""
    config = await get_failover_configuration(ctx, proxy_id)
    if config is None:
        raise config_not_found(proxy_id)
    instances = await get_proxy_instances(ctx, proxy_id)
    status = await get_redundancy_status(ctx, proxy_id)
    active_id = status.active_instance_id if status is not None else None
    epoch = status.epoch if status is not None else 0
    if config.enable_load_balancing:
        cursor = ctx.route_cursors.get(proxy_id, strategies.RouteCursor())
        chosen, cursor = strategies.pick_route(instances, config.load_balancing_algorithm, cursor)
        if chosen is not None:
            ctx.route_cursors[proxy_id] = cursor
    else:
        chosen = next((i for i in instances if i.id == active_id), None)
    if chosen is None:
        raise Conflict(
            f"No eligible instance to route proxy {proxy_id} to",
            ErrorCode.NO_ELIGIBLE_TARGET,
            {"proxyId": proxy_id},
        )
    return Route(
        proxy_id=proxy_id,
        instance_id=chosen.id,
        instance_name=chosen.instance_name,
        endpoint=chosen.endpoint,
        is_active=chosen.id == active_id,
        epoch=epoch,
        load_balanced=config.enable_load_balancing,
        traffic_address=format_address(traffic_address(chosen)),
    )


async def get_desired_state(ctx: ServiceContext, proxy_id: str) -> DesiredState:
    """What a data plane should do with the proxy's traffic (core.dataplane), from the same reads
    an agent makes through the REST API (configuration, instances, redundancy); 404/002 when
    there is no such proxy."""
    config = await get_failover_configuration(ctx, proxy_id)
    if config is None:
        raise config_not_found(proxy_id)
    instances = await get_proxy_instances(ctx, proxy_id)
    status = await get_redundancy_status(ctx, proxy_id)
    return desired_state(
        proxy_id,
        instances,
        status.active_instance_id if status is not None else None,
        status.epoch if status is not None else 0,
        load_balanced=config.enable_load_balancing,
        algorithm=config.load_balancing_algorithm,
    )


async def explain(ctx: ServiceContext, proxy_id: str) -> Explanation:
    """The engine's view of the proxy now: its decision and the sentence behind it."""
    snapshot = await load_snapshot(ctx, proxy_id)
    return core_failover.explain(snapshot, ctx.now())
