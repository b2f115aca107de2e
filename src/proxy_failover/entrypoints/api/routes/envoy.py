"""Envoy's REST-JSON EDS (``POST /v3/discovery:endpoints``, and a ``GET`` for people and curl).

A ``DiscoveryRequest`` names clusters by proxy id (``resource_names``); the answer is a
``DiscoveryResponse`` of ``ClusterLoadAssignment``s made by ``core.envoy`` from each proxy's
desired state. Envoy authenticates like any client (``Authorization: Bearer <JWT>``, added to its
xDS cluster's requests by an upstream ``header_mutation`` filter: docs/dataplanes.md). A proxy
that does not exist or is not the caller's answers the whole request 404/002, as every other
route does, so existence never leaks; Envoy keeps what it had and retries at its refresh delay.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from proxy_failover.core import limits
from proxy_failover.core.dataplane import DesiredState
from proxy_failover.core.envoy import EDS_TYPE_URL, discovery_response
from proxy_failover.core.errors import InvalidInput
from proxy_failover.entrypoints.api.auth import Caller
from proxy_failover.entrypoints.api.deps import CallerDep, Ownership, OwnershipDep, ServiceDep
from proxy_failover.entrypoints.api.middleware import (
    StrictJsonRequest,
    charset_problem,
    parse_strict_json,
)
from proxy_failover.entrypoints.api.openapi_docs import document_schema
from proxy_failover.entrypoints.api.responses import COMMON_ERRORS
from proxy_failover.entrypoints.api.schemas import ProxyId, constraints
from proxy_failover.service import ProxyFailoverService

EDS_PATH = "/v3/discovery:endpoints"
#: Envoy sends its whole ``node`` (its extension list: ~80 KB) with every request.
MAX_DISCOVERY_BODY_BYTES = 512 * 1024
_TEXT = constraints(limits.TEXT)
#: The members of a DiscoveryRequest this endpoint reads (both spellings proto3 JSON allows).
_READ = frozenset(
    {"version_info", "versionInfo", "resource_names", "resourceNames", "type_url", "typeUrl"}
)


class _DiscoveryJsonRequest(StrictJsonRequest):
    """Parses once at C speed and keeps only the members read (then checked as strictly as every
    body): walking Envoy's whole node for the strict checks cost ~8 ms per poll. Anything that
    does not parse plainly goes the strict way, for the very same error."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                if charset_problem(self.scope["headers"]) is not None:
                    raise ValueError("charset")
                value = json.loads(body.decode("utf-8"))
            except (ValueError, RecursionError):
                return await super().json()
            if not isinstance(value, dict):
                return await super().json()
            kept = {key: item for key, item in value.items() if key in _READ}
            try:
                self._json = parse_strict_json(json.dumps(kept).encode())
            except ValueError:
                return await super().json()
        return self._json


class _DiscoveryRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def discovery_handler(request: Request) -> Response:
            return await handler(_DiscoveryJsonRequest(request.scope, request.receive))

        return discovery_handler


router = APIRouter(route_class=_DiscoveryRoute, responses=COMMON_ERRORS)


def _either(name: str, camel: str) -> Any:
    """Proto3 JSON: parsers accept the .proto name and its lowerCamelCase form."""
    return AliasChoices(name, camel)


class DiscoveryRequest(BaseModel):
    """The fields of Envoy's ``DiscoveryRequest`` this endpoint reads; the others (``node``,
    ``response_nonce``, ``error_detail``...) are accepted and ignored."""

    model_config = ConfigDict(extra="ignore", strict=True, json_schema_extra=document_schema)

    version_info: str = Field(
        default="",
        validation_alias=_either("version_info", "versionInfo"),
        description="The version Envoy holds (informative: the current state is always sent)",
        **_TEXT,
    )
    resource_names: list[ProxyId] = Field(
        validation_alias=_either("resource_names", "resourceNames"),
        description="Cluster names = proxy ids (EDS names every cluster it wants)",
        **constraints(limits.RESOURCE_NAMES),
    )
    type_url: str = Field(
        default=EDS_TYPE_URL,
        validation_alias=_either("type_url", "typeUrl"),
        description=f"Empty or {EDS_TYPE_URL}",
        **_TEXT,
    )


class DiscoveryResponse(BaseModel):
    """Envoy's ``DiscoveryResponse`` (documentation only; answers are built by core.envoy)."""

    model_config = ConfigDict(json_schema_extra=document_schema)

    version_info: str = Field(
        description="<epochs>-<digest>: the same while nothing changes",
        examples=["7-3f2a9c0e1b2d4c5a"],
    )
    resources: list[dict[str, Any]] = Field(
        description="One ClusterLoadAssignment per proxy named (cluster_name = proxy id)"
    )
    type_url: str = Field(description="The EDS type URL", examples=[EDS_TYPE_URL])
    control_plane: dict[str, str] = Field(description='{"identifier": "proxy-failover"}')


async def _answer(
    request: DiscoveryRequest,
    caller: Caller,
    service: ProxyFailoverService,
    ownership: Ownership,
) -> Response:
    if request.type_url not in ("", EDS_TYPE_URL):
        raise InvalidInput(
            f"this endpoint serves {EDS_TYPE_URL} only",
            details={"type_url": request.type_url[:200]},
        )
    names = list(dict.fromkeys(request.resource_names))  # once each, in the order named
    if not names:
        raise InvalidInput(
            "resource_names must name the clusters (proxy ids): EDS has no wildcard",
            details={"resource_names": []},
        )
    for proxy_id in names:
        await ownership.check_proxy(caller, proxy_id)
    # Every read runs to its end before the answer: with a plain gather, one unknown name
    # answered 404 while the other reads went on, on connections nobody waited for.
    answers = await asyncio.gather(
        *(service.get_desired_state(p) for p in names), return_exceptions=True
    )
    states: list[DesiredState] = []
    for answer in answers:
        if isinstance(answer, BaseException):
            raise answer  # the first failure in the order named
        states.append(answer)
    return JSONResponse(discovery_response(states))


@router.post(
    EDS_PATH,
    response_model=DiscoveryResponse,
    tags=["data planes"],
    summary="Envoy EDS over REST-JSON: ClusterLoadAssignments of the named proxies",
)
async def discover_endpoints(
    body: DiscoveryRequest, caller: CallerDep, service: ServiceDep, ownership: OwnershipDep
) -> Response:
    """Priority 0: the active instance (with load balancing, every serving one); priority 1: the
    other eligible instances in preference order; each at its traffic address and weight."""
    return await _answer(body, caller, service, ownership)


@router.get(
    EDS_PATH,
    response_model=DiscoveryResponse,
    tags=["data planes"],
    summary="The same as the POST, with the request in the query string",
)
async def discover_endpoints_get(
    caller: CallerDep,
    service: ServiceDep,
    ownership: OwnershipDep,
    resource_names: Annotated[
        list[ProxyId],
        Query(description="Proxy ids (repeat the parameter)", **constraints(limits.RESOURCE_NAMES)),
    ],
    version_info: Annotated[
        str, Query(description="The version the caller holds (informative)", **_TEXT)
    ] = "",
    type_url: Annotated[str, Query(description=f"Empty or {EDS_TYPE_URL}", **_TEXT)] = (
        EDS_TYPE_URL
    ),
) -> Response:
    body = DiscoveryRequest.model_validate(
        {"resource_names": resource_names, "version_info": version_info, "type_url": type_url}
    )
    return await _answer(body, caller, service, ownership)
