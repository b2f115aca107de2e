"""Liveness and readiness answer HEAD as well as GET (load balancers use HEAD)."""

from __future__ import annotations

from tests.helpers.api import Api


async def test_healthz_and_readyz_answer_head(sqlite_api: Api) -> None:
    for path in ("/healthz", "/readyz"):
        head = await sqlite_api.call("HEAD", path)
        assert head.status_code == 200, path
        assert head.content == b""
        get = await sqlite_api.call("GET", path)
        assert get.status_code == 200
        assert get.json()["status"] in {"ok", "ready"}
