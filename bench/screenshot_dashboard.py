"""Render the dashboard's proxy page to docs/dashboard.png (and docs/dashboard-phone.png).

Not a benchmark and not a test: it stages a real story — the app with its engine on a temporary
SQLite database, three real HTTP instances probed twice a second, the active one stopped, the
failover recorded — and photographs the page with Debian's headless Chromium, as an admin would
see it. Run ``.venv/bin/python bench/screenshot_dashboard.py [--out docs]`` after changing the UI.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from playwright.async_api import ViewportSize, async_playwright

from proxy_failover.config import Settings
from proxy_failover.entrypoints.api import create_app
from proxy_failover.entrypoints.api.auth import mint_token

ROOT = Path(__file__).resolve().parents[1]
SECRET = "screenshot-secret-that-is-long-enough-for-hs256"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        return


def _instance() -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    ).start()
    return server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _until(check: Callable[[], Awaitable[bool]], within: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise RuntimeError("the staged failover did not happen in time")
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def _serve(database: Path) -> AsyncIterator[str]:
    settings = Settings(database_url=f"sqlite+aiosqlite:///{database}", jwt_secret=SECRET)
    port = _free_port()
    config = uvicorn.Config(
        create_app(settings, run_engine=True),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:  # uvicorn offers no event to await
        if task.done():
            task.result()  # it failed to start: say why
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


class _Story:
    """Proxy ``edge-eu`` with three probed relays, told through the API as an admin."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.servers = [_instance() for _ in range(3)]
        self.ids: list[str] = []

    async def data(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.http.request(method, path, **kwargs)
        response.raise_for_status()
        return response.json()["data"]

    async def active_is(self, index: int) -> bool:
        status = await self.data("GET", "/proxy/edge-eu/redundancy")
        return bool(status["activeInstanceId"] == self.ids[index])

    async def set_up(self) -> None:
        """Three relays (priority a < b < c), relay-a active; a second proxy for the overview."""
        config = {"healthCheckIntervalSeconds": 0.5, "unhealthyThreshold": 2}
        for proxy in ("edge-eu", "hls-us"):
            body: dict[str, Any] = {"proxyId": proxy, "config": config}
            await self.data("POST", "/proxy/failover/config", json=body)
        names = ("relay-a", "relay-b", "relay-c")
        for rank, (name, server) in enumerate(zip(names, self.servers, strict=True)):
            instance = {
                "instanceName": name,
                "endpoint": f"127.0.0.1:{server.server_address[1]}",
                "priority": (rank + 1) * 10,
            }
            body = {"proxyId": "edge-eu", "instanceData": instance}
            self.ids.append((await self.data("POST", "/proxy/instances", json=body))["id"])
        await _until(lambda: self.active_is(0))

    async def fail_relay_a(self) -> None:
        """relay-a stops answering; the engine fails over to relay-b; relay-c is drained."""
        self.servers[0].shutdown()
        self.servers[0].server_close()  # refused connections from now on
        await _until(lambda: self.active_is(1))
        await self.data("PATCH", f"/proxy/instances/{self.ids[2]}", json={"adminState": "drain"})


async def main(out: Path) -> None:
    admin = mint_token(SECRET, "ops", admin=True)
    with tempfile.TemporaryDirectory() as tmp:
        async with _serve(Path(tmp) / "pfo.db") as url, async_playwright() as playwright:
            headers = {"Authorization": f"Bearer {admin}"}
            browser = await playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
            shots: list[tuple[str, ViewportSize]] = [
                ("dashboard.png", {"width": 1280, "height": 900}),
                ("dashboard-phone.png", {"width": 390, "height": 844}),
            ]
            async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as http:
                story = _Story(http)
                await story.set_up()
                pages = []
                for _name, viewport in shots:
                    page = await browser.new_page(viewport=viewport, device_scale_factor=1)
                    await page.goto(f"{url}/ui#token={admin}&proxy=edge-eu")
                    await page.locator("#live[data-state=live]").wait_for()
                    pages.append(page)
                await story.fail_relay_a()  # while the pages watch: their live feed fills
            for (name, _viewport), page in zip(shots, pages, strict=True):
                await page.locator("#feed li[data-type='failover.completed']").wait_for()
                await (
                    page.locator("tr[data-instance=relay-c] .admin-state")
                    .get_by_text("drain")
                    .wait_for()
                )
                await page.screenshot(path=str(out / name), full_page=name == "dashboard.png")
                print(json.dumps({"written": str(out / name)}))
            await browser.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    arguments = parser.parse_args()
    if not Path(CHROMIUM).exists():
        sys.exit(f"{CHROMIUM} is missing: scripts/ensure-system-packages {CHROMIUM}=chromium")
    asyncio.run(main(arguments.out))
