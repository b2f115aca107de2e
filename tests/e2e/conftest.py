"""API fixtures: the app on a real database (in-process httpx, lifespan run), tokens, live servers.

``api`` runs once on SQLite and once on PostgreSQL (``database_url`` from tests/conftest.py).
``serve_process`` starts the real ``proxy-failover serve`` command on a free port.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from proxy_failover.config import Settings
from proxy_failover.entrypoints.api import create_app
from proxy_failover.entrypoints.api.auth import mint_token

SECRET = "e2e-secret-that-is-long-enough-for-hs256-0123456789"
_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Tokens:
    """Bearer tokens: an admin, two owners (alice, bob)."""

    admin: str
    alice: str
    bob: str

    @classmethod
    def signed_with(cls, secret: str) -> Tokens:
        return cls(
            admin=mint_token(secret, "root", admin=True),
            alice=mint_token(secret, "alice"),
            bob=mint_token(secret, "bob"),
        )


@dataclass
class Api:
    """The app behind an httpx client; ``call`` sends a request as one of the tokens."""

    http: httpx.AsyncClient
    tokens: Tokens
    app: FastAPI | None = None

    async def call(
        self, method: str, path: str, token: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return await self.http.request(method, path, headers=headers, **kwargs)

    async def ok(self, method: str, path: str, token: str, status: int = 200, **kw: Any) -> Any:
        """Send and expect ``status``; return the envelope's ``data``."""
        response = await self.call(method, path, token, **kw)
        assert response.status_code == status, response.text
        return response.json()["data"]

    async def error(self, method: str, path: str, token: str | None, **kw: Any) -> tuple[int, str]:
        """Send and expect an error body; return (HTTP status, code)."""
        response = await self.call(method, path, token, **kw)
        body = response.json()
        assert set(body) == {"error"}, response.text
        assert body["error"]["statusCode"] == response.status_code
        return response.status_code, body["error"]["code"]


def api_settings(database_url: str, **overrides: Any) -> Settings:
    return Settings(database_url=database_url, jwt_secret=SECRET, **overrides)


@pytest.fixture(scope="session")
def tokens() -> Tokens:
    return Tokens.signed_with(SECRET)


@pytest.fixture
async def api(database_url: str, tokens: Tokens) -> AsyncIterator[Api]:
    """The whole app (lifespan included) on a fresh database, called in-process."""
    app = create_app(api_settings(database_url))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as http,
    ):
        yield Api(http, tokens, app)


@pytest.fixture
async def sqlite_api(sqlite_url: str, tokens: Tokens) -> AsyncIterator[Api]:
    """Like ``api``, SQLite only: for behaviour that does not depend on the database."""
    app = create_app(api_settings(sqlite_url))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as http,
    ):
        yield Api(http, tokens, app)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ServeProcess:
    url: str
    proc: subprocess.Popen[str]
    log: Path


def start_serve(database_url: str, log: Path, env: dict[str, str] | None = None) -> ServeProcess:
    """``proxy-failover serve`` on a free port; returns once ``/readyz`` answers 200."""
    port = free_port()
    full_env = {**os.environ, "PFO_DATABASE_URL": database_url, **(env or {})}
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "proxy_failover", "serve", "--port", str(port)],
            cwd=_ROOT,
            env=full_env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return ServeProcess(url, proc, log)
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"serve did not become ready:\n{log.read_text()}")


def stop_serve(server: ServeProcess) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait(timeout=5)


@pytest.fixture
def serve_process(sqlite_url: str, tmp_path: Path) -> Iterator[ServeProcess]:
    """A real ``serve`` subprocess on SQLite, signing tokens with ``SECRET``."""
    server = start_serve(sqlite_url, tmp_path / "serve.log", {"PFO_JWT_SECRET": SECRET})
    try:
        yield server
    finally:
        stop_serve(server)
