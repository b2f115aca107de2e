"""The FastAPI app factory: routers, the exception table, guards, offline docs, a lifespan.

``create_app(settings)`` opens the database in the lifespan and closes it there;
``create_app(runtime)`` serves an already built runtime and leaves closing it to its owner.
No globals: everything per app lives on ``app.state``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.staticfiles import StaticFiles

from proxy_failover import __version__
from proxy_failover.bootstrap import Runtime, build
from proxy_failover.config import Settings
from proxy_failover.core.ratelimit import Slots
from proxy_failover.entrypoints import ui
from proxy_failover.entrypoints.api import observability, streams, webhooks
from proxy_failover.entrypoints.api.auth import TokenVerifier
from proxy_failover.entrypoints.api.deps import Ownership
from proxy_failover.entrypoints.api.errors import EXCEPTION_HANDLERS
from proxy_failover.entrypoints.api.hotpath import ShortPaths
from proxy_failover.entrypoints.api.middleware import BodyLimitMiddleware, CatchAllMiddleware
from proxy_failover.entrypoints.api.openapi_docs import operation_id
from proxy_failover.entrypoints.api.ratelimit import RateLimitMiddleware, RateLimits
from proxy_failover.entrypoints.api.routes import envoy, instances, providers, proxies, system
from proxy_failover.entrypoints.heap import HeapTender

DESCRIPTION = """\
Failover and redundancy control plane for streaming proxies.

Every `/proxy*` route needs `Authorization: Bearer <JWT>` (`sub` = user id; `role: admin` or
`roles: ["admin"]` = admin). Success: `{"data": ..., "message": ...}`; lists:
`{"data": [...], "count": n}`; errors: `{"error": {"code", "message", "statusCode", "details"}}`
with a `PROXY_FAILOVER_0NN` code.
"""


def create_app(source: Settings | Runtime, *, run_engine: bool = False) -> FastAPI:
    """An app over settings (it owns its runtime) or over a runtime (the caller owns that).

    ``run_engine`` runs the health/failover engine in the lifespan (``serve`` sets it; tests of the
    API alone leave it off so no background probe changes the instances they assert on).
    """
    settings = source.settings if isinstance(source, Runtime) else source
    verifier = TokenVerifier.from_settings(settings)  # fail at start-up, not on the first call

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if isinstance(source, Runtime):
            runtime = source
            owned = False
        else:
            runtime = await build(settings)
            owned = True
        app.state.runtime = runtime
        app.state.verifier = verifier
        app.state.ownership = Ownership(runtime.service)
        app.state.streams = hub = None
        if runtime.notifier is not None:
            slots = Slots(settings.stream_max_per_caller, settings.stream_max_total)
            app.state.streams = hub = streams.StreamHub(runtime.notifier, slots)
            runtime.notifier.start()  # webhook delivery worker
        engine_task = heap_task = None
        if run_engine and runtime.engine is not None:
            engine_task = asyncio.create_task(runtime.engine.run(), name="pfo-engine")
            # serve's engine keeps full garbage collections off its probe schedule
            heap_task = asyncio.create_task(HeapTender().run(), name="pfo-heap")
        try:
            yield
        finally:
            if heap_task is not None:
                heap_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await heap_task
            if engine_task is not None:
                runtime.engine.stop()
                await engine_task
            if hub is not None:
                await hub.close()
            if runtime.notifier is not None:
                await runtime.notifier.stop()
            if owned:
                await runtime.aclose()

    app = FastAPI(
        title="proxy-failover",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        exception_handlers=dict(EXCEPTION_HANDLERS),
        # A trailing slash is another path: 404/020 with the error body, not a bodiless 307
        # that clients not following redirects (httpx by default) would see as the answer.
        redirect_slashes=False,
        generate_unique_id_function=operation_id,
    )
    app.include_router(system.router)
    app.include_router(proxies.router)
    app.include_router(instances.router)
    app.include_router(envoy.router)  # Envoy EDS over REST-JSON
    app.include_router(providers.router)  # data planes that poll: Traefik
    app.include_router(webhooks.router)
    app.include_router(observability.router)
    app.include_router(streams.router)
    app.mount(system.STATIC_PATH, StaticFiles(directory=system.STATIC_DIR), name="docs-static")
    ui.mount(app)  # the dashboard at /ui (entrypoints/ui)
    # Added last = outermost: the size limit runs before anything reads the body.
    app.add_middleware(ShortPaths, api=app)  # the hottest calls, past routing (hotpath.py)
    app.add_middleware(CatchAllMiddleware)
    app.add_middleware(
        BodyLimitMiddleware,
        larger={envoy.EDS_PATH: envoy.MAX_DISCOVERY_BODY_BYTES},  # Envoy sends its whole node
    )
    # Before anything else costs CPU (short paths too); inside observability, so 429s are counted
    # but, having no caller on the request, write no audit row.
    app.add_middleware(
        RateLimitMiddleware, limits=RateLimits.from_settings(settings), verifier=verifier
    )
    # Outermost of all, so refused requests (413 too) are counted and audited; it copies at most
    # 64 KiB of a body for the audit row and never buffers it.
    app.add_middleware(observability.ObservabilityMiddleware)  # request id, metrics, audit
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document without its 422 responses: this API answers validation errors 400."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                if isinstance(operation, dict):
                    operation.get("responses", {}).pop("422", None)
        components = schema.get("components", {}).get("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        app.openapi_schema = schema
    return app.openapi_schema
