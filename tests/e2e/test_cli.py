"""The ``proxy-failover`` command: token, migrate, settings refused, serve in development mode."""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path

import httpx
import jwt
import pytest
from typer.testing import CliRunner

from proxy_failover.entrypoints.cli import app
from tests.helpers.api import SECRET
from tests.helpers.serve import start_serve, stop_serve

runner = CliRunner()


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PFO_JWT_SECRET", "PFO_JWT_PUBLIC_KEY", "PFO_JWT_JWKS_URL", "PFO_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)


def test_token_mints_a_verifiable_admin_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PFO_JWT_SECRET", SECRET)
    result = runner.invoke(app, ["token", "--sub", "alice", "--admin", "--ttl", "60"])
    assert result.exit_code == 0, result.output
    claims = jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"])
    assert claims["sub"] == "alice"
    assert claims["role"] == "admin"
    assert claims["exp"] - claims["iat"] == 60

    plain = runner.invoke(app, ["token", "--sub", "bob"])
    assert "role" not in jwt.decode(plain.stdout.strip(), SECRET, algorithms=["HS256"])


def test_token_without_a_secret_explains_why() -> None:
    result = runner.invoke(app, ["token", "--sub", "alice"])
    assert result.exit_code == 2
    assert "PFO_JWT_SECRET is not set" in result.output


def test_a_short_secret_is_refused_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PFO_JWT_SECRET", "short")
    for command in (["token", "--sub", "a"], ["serve"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2
        assert "PFO_JWT_SECRET" in result.output
        assert "at least 32" in result.output


def test_migrate_creates_the_schema(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    database = tmp_path / "fresh.db"
    monkeypatch.setenv("PFO_DATABASE_URL", f"sqlite:///{database}")
    result = runner.invoke(app, ["migrate"])
    assert result.exit_code == 0, result.output
    assert "up to date" in result.output
    with sqlite3.connect(database) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert {"proxy_failover_configurations", "proxy_instances", "alembic_version"} <= tables
    again = runner.invoke(app, ["migrate"])  # idempotent
    assert again.exit_code == 0


def test_version() -> None:
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0
    assert re.fullmatch(r"\d+\.\d+\.\d+", result.stdout.strip())


@pytest.mark.slow
def test_serve_without_a_secret_prints_a_working_admin_token(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "serve.log"
    server = start_serve(sqlite_url, log)
    try:
        output = log.read_text()
        assert "WARNING" in output
        assert "development mode" in output
        token = re.search(r"^(eyJ[\w-]+\.[\w-]+\.[\w-]+)$", output, re.MULTILINE)
        assert token is not None, output
        assert f"dashboard: {server.url}/ui#token={token.group(1)}" in output
        headers = {"Authorization": f"Bearer {token.group(1)}"}
        response = httpx.get(f"{server.url}/proxy/instances/x/metrics", headers=headers)
        assert response.status_code == 404  # an admin-only route answered past auth: admin
        forged = jwt.encode({"sub": "x", "exp": int(time.time()) + 60}, SECRET, "HS256")
        response = httpx.get(f"{server.url}/proxies", headers={"Authorization": f"Bearer {forged}"})
        assert response.status_code == 401
    finally:
        stop_serve(server)
