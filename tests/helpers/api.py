"""Calling the app as a client does: signed tokens for three roles, and an ``Api`` that sends a
request as one of them and unwraps SPEC's envelopes."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI

from proxy_failover.config import Settings
from proxy_failover.entrypoints.api.auth import mint_token

SECRET = "e2e-secret-that-is-long-enough-for-hs256-0123456789"


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
    """Settings for an app on ``database_url`` whose tokens are signed with ``SECRET``."""
    return Settings(database_url=database_url, jwt_secret=SECRET, **overrides)


@contextlib.asynccontextmanager
async def in_process(
    app: FastAPI, tokens: Tokens, base_url: str = "http://testserver"
) -> AsyncIterator[Api]:
    """``app`` with its lifespan run (service, workers), called in-process through httpx."""
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url=base_url) as http,
    ):
        yield Api(http, tokens, app)
