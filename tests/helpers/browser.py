"""Debian's Chromium, headless, driven by Playwright for Python: the dashboard's browser tests.

The browser is the system package (``/usr/bin/chromium``, installed by
``scripts/ensure-system-packages``, which ``make test`` runs); Playwright never downloads one.
Every launch gets a new empty profile and no background network traffic of its own. A missing
browser fails the test loudly: a browser test that skips proves nothing.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import (
    BrowserContext,
    ConsoleMessage,
    Page,
    ViewportSize,
    async_playwright,
    expect,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # root in CI containers: the setuid sandbox is unavailable there
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: How long a page action or an ``expect`` waits by default: generous, the suite shares two cores.
PAGE_TIMEOUT_MS = 15_000
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
PHONE: ViewportSize = {"width": 390, "height": 844}


def require_chromium() -> Path:
    """The browser's path; fails the test (never skips) when the system package is missing."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: run `scripts/ensure-system-packages {CHROMIUM}=chromium` "
            "(make test does) to install Debian's chromium",
            pytrace=False,
        )
    return CHROMIUM


@contextlib.asynccontextmanager
async def chromium(viewport: ViewportSize | None = None) -> AsyncIterator[BrowserContext]:
    """A headless Chromium with a fresh profile; closed (and its profile removed) on exit."""
    executable = require_chromium()
    with tempfile.TemporaryDirectory(prefix="pfo-chromium-") as profile:
        async with async_playwright() as playwright:
            context = await playwright.chromium.launch_persistent_context(
                profile,
                executable_path=str(executable),
                headless=True,
                args=CHROMIUM_ARGS,
                viewport=viewport or DESKTOP,
            )
            context.set_default_timeout(PAGE_TIMEOUT_MS)
            expect.set_options(timeout=PAGE_TIMEOUT_MS)
            try:
                yield context
            finally:
                await context.close()


def page_errors(page: Page) -> list[str]:
    """A list that fills with the page's uncaught exceptions and console errors (a refused
    Content-Security-Policy is one), except the browser's note on an HTTP error status, which
    the API answers on purpose (401, 404) and the page handles."""
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            errors.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
    return errors
