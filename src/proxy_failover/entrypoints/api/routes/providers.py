"""Configuration served to data planes that poll the control plane themselves (SPEC §9).

``GET /providers/traefik``: Traefik's HTTP provider (``providers.http.endpoint``) polls it with the
token in its ``headers`` option and gets the dynamic configuration of the caller's proxies (every
proxy for an admin), or of the ``proxy`` ids named in the query. The body is the bare Traefik
document (no ``data`` envelope: Traefik reads it as is); errors keep the SPEC envelope, and
Traefik keeps its last configuration while it gets them.
"""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Query, Response

from proxy_failover.core.dataplane import DesiredState
from proxy_failover.core.errors import InvalidInput, NotFound
from proxy_failover.core.model import ServerScheme
from proxy_failover.core.traefik import traefik_configuration
from proxy_failover.core.validation import validate_proxy_id
from proxy_failover.entrypoints.api.deps import CallerDep, OwnershipDep, ServiceDep
from proxy_failover.entrypoints.api.schemas import ErrorBody

router = APIRouter(tags=["data planes"])

#: Most ``proxy`` ids one request may name.
MAX_PROXIES = 1000

_ERRORS: dict[int | str, dict[str, object]] = {
    400: {"model": ErrorBody, "description": "Invalid proxy id or scheme (001)"},
    401: {"model": ErrorBody, "description": "No valid token (015)"},
    404: {"model": ErrorBody, "description": "A named proxy is unknown or not the caller's (002)"},
}


@router.get(
    "/providers/traefik",
    summary="Traefik's HTTP provider: one service pfo-<proxyId> per proxy, for HTTP and TCP",
    responses={
        200: {
            "description": "Traefik dynamic configuration (JSON): ``http.services`` and "
            "``tcp.services``",
            "content": {"application/json": {}},
        },
        **_ERRORS,
    },
)
async def traefik_provider(
    caller: CallerDep,
    service: ServiceDep,
    ownership: OwnershipDep,
    proxy: Annotated[
        list[str],
        Query(description="Only these proxies (repeatable); none = every proxy of the caller."),
    ] = [],  # noqa: B006 - FastAPI copies query defaults per request
    scheme: Annotated[
        ServerScheme,
        Query(description="How Traefik speaks HTTP to the instances (server URLs' scheme)."),
    ] = ServerScheme.HTTP,
    standby: Annotated[
        bool,
        Query(
            description="HTTP services as a failover chain over the active instance and its "
            "standbys, so Traefik retries a request the active instance refused on the next one "
            "(request bodies are buffered): false = the active instance alone."
        ),
    ] = True,
) -> Response:
    if len(proxy) > MAX_PROXIES:
        raise InvalidInput(f"at most {MAX_PROXIES} proxy ids per request", details={"proxy": None})
    if proxy:
        proxy_ids = sorted({validate_proxy_id(proxy_id) for proxy_id in proxy})
        for proxy_id in proxy_ids:
            await ownership.check_proxy(caller, proxy_id)
    else:
        summaries = await service.list_proxies(None if caller.is_admin else caller.user_id)
        proxy_ids = sorted(summary.proxy_id for summary in summaries)
    states: list[DesiredState] = []
    for proxy_id in proxy_ids:
        try:
            states.append(await service.get_desired_state(proxy_id))
        except NotFound:
            if proxy:  # named by the caller (an admin): unknown, 404/002
                raise
            # deleted since it was listed: left out
    body = json.dumps(traefik_configuration(states, scheme=scheme, standby=standby), sort_keys=True)
    return Response(body.encode(), media_type="application/json")
