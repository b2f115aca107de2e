"""How ``/ui`` is served: the page and its files, with a strict Content-Security-Policy, from the
wheel, and written so that policy holds (no inline script, no HTML built from data)."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

from proxy_failover.entrypoints.ui import CONTENT_SECURITY_POLICY, STATIC_DIR
from tests.helpers.api import Api

ROOT = Path(__file__).resolve().parents[2]
UI_FILES = ("index.html", "dashboard.js", "dashboard.css", "favicon.svg")


async def test_ui_page_and_files_are_served_with_a_strict_policy(sqlite_api: Api) -> None:
    page = await sqlite_api.call("GET", "/ui")  # no token: the page holds no data
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-store"
    assert 'id="signin"' in page.text
    for path, kind in (
        ("/ui/static/dashboard.js", "javascript"),
        ("/ui/static/dashboard.css", "text/css"),
        ("/ui/static/favicon.svg", "image/svg+xml"),
    ):
        asset = await sqlite_api.call("GET", path)
        assert asset.status_code == 200, path
        assert kind in asset.headers["content-type"]
        assert asset.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    headers = page.headers
    assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "script-src 'self';" in CONTENT_SECURITY_POLICY
    assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
    assert (headers["x-content-type-options"], headers["x-frame-options"]) == ("nosniff", "DENY")
    assert headers["referrer-policy"] == "no-referrer"
    slash = await sqlite_api.call("GET", "/ui/")
    assert (slash.status_code, slash.headers["location"]) == (308, "/ui")
    missing = await sqlite_api.call("GET", "/ui/static/nothing.js")
    assert missing.status_code == 404
    openapi = (await sqlite_api.call("GET", "/openapi.json")).json()
    assert not [path for path in openapi["paths"] if path.startswith("/ui")]


def test_page_has_no_inline_script_style_or_handlers() -> None:
    html = (STATIC_DIR / "index.html").read_text()
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S)
    assert scripts
    assert all('src="/ui/static/' in attrs and not body.strip() for attrs, body in scripts)
    assert not re.search(r"\son[a-z]+\s*=", html)  # inline handlers need 'unsafe-inline'
    assert not re.search(r"\sstyle\s*=", html)
    assert not re.search(r"https?://", html)  # no CDN


def test_script_builds_no_html_from_strings() -> None:
    """Every value is written with textContent or an attribute: no markup parsing at all."""
    script = (STATIC_DIR / "dashboard.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script, sink
    assert "new EventSource" not in script  # it would need the token in the URL


def test_wheel_ships_the_dashboard(tmp_path: Path) -> None:
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*build, "-w", str(tmp_path), str(ROOT)], check=True, timeout=120)
    (wheel,) = tmp_path.glob("proxy_failover-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in UI_FILES:
        assert f"proxy_failover/entrypoints/ui/static/{name}" in names, name
