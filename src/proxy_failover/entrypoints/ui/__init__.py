"""The operator's dashboard at ``/ui``: static HTML, CSS and vanilla JavaScript, no build step.

Everything the browser needs ships in this package (``static/``, part of the wheel) and is served
by the API's own app; the page then calls the public REST API and the event stream with the
token the operator signed in with, so it can do nothing the token could not do with curl.
Every response under ``/ui`` carries a Content-Security-Policy that allows only this origin's
scripts, styles and connections (no inline script, no CDN). Design notes: docs/dashboard.md.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(__file__).resolve().parent / "static"
UI_PATH = "/ui"
ASSETS_PATH = "/ui/static"

#: Only this origin's files and API; nothing inline, no frames, no plugins, no form posts.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # The page never puts a token in a URL, but no URL of it should travel to another site either.
    "Referrer-Policy": "no-referrer",
}

router = APIRouter(include_in_schema=False)


@router.get(UI_PATH)
async def index() -> FileResponse:
    """The single page; ``no-store`` so an upgraded server's page is never mixed with old JS."""
    return FileResponse(
        STATIC_DIR / "index.html",
        media_type="text/html; charset=utf-8",
        headers={**SECURITY_HEADERS, "Cache-Control": "no-store"},
    )


@router.get(UI_PATH + "/")
async def index_with_slash() -> RedirectResponse:
    """``/ui/`` is a common typo: send it to the page (the browser keeps a ``#token=`` fragment)."""
    return RedirectResponse(UI_PATH, status_code=308, headers=SECURITY_HEADERS)


class _Assets(StaticFiles):
    """The page's scripts and styles, with the same security headers, revalidated on each load."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        response.headers["Cache-Control"] = "no-cache"
        return response


def mount(app: FastAPI) -> None:
    """Serve the dashboard from ``app``: the page at ``/ui``, its files under ``/ui/static``."""
    app.include_router(router)
    app.mount(ASSETS_PATH, _Assets(directory=STATIC_DIR), name="ui-static")
