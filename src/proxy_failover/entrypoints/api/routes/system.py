"""Operational routes: liveness, readiness (the database answers), and offline API docs."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse

from proxy_failover.core.errors import ErrorCode, FailoverError
from proxy_failover.entrypoints.api.deps import RuntimeDep
from proxy_failover.entrypoints.api.errors import error_response
from proxy_failover.entrypoints.api.schemas import ErrorBody, ProbeResult
from proxy_failover.store.database import map_database_error

#: Swagger UI assets vendored from the npm package ``swagger-ui-dist`` (no CDN at run time).
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
STATIC_PATH = "/docs/static"

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=ProbeResult, summary="Liveness: the process answers")
async def healthz() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


@router.get(
    "/readyz",
    response_model=ProbeResult,
    responses={503: {"model": ErrorBody, "description": "Database unavailable (018)"}},
    summary="Readiness: the database answers",
)
async def readyz(runtime: RuntimeDep) -> Response:
    try:
        await runtime.ping()
    except FailoverError as error:
        if error.code is not ErrorCode.STORAGE_UNAVAILABLE:
            raise
        return error_response(error.code, error.message)
    except Exception as error:
        mapped = map_database_error(error)
        if mapped is None:
            raise
        return error_response(ErrorCode.STORAGE_UNAVAILABLE, mapped.message)
    return Response(b'{"status":"ready"}', media_type="application/json")


# HEAD too (load balancers' health checks often use it, e.g. HAProxy ``option httpchk HEAD``);
# kept out of the OpenAPI document, where it would duplicate the GET operations.
@router.head("/healthz", include_in_schema=False)
async def healthz_head() -> Response:
    return await healthz()


@router.head("/readyz", include_in_schema=False)
async def readyz_head(runtime: RuntimeDep) -> Response:
    return await readyz(runtime)


@router.get("/docs", include_in_schema=False)
async def docs() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="proxy-failover API",
        swagger_js_url=f"{STATIC_PATH}/swagger-ui-bundle.js",
        swagger_css_url=f"{STATIC_PATH}/swagger-ui.css",
        swagger_favicon_url=f"{STATIC_PATH}/favicon-32x32.png",
        swagger_ui_parameters={"persistAuthorization": True},
    )
