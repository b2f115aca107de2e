"""The ``proxy-failover`` command: token, migrate, settings refused, serve in development mode."""

from __future__ import annotations

import re
import sqlite3
import stat
import subprocess
import time
from pathlib import Path

import httpx
import jwt
import pytest
from sqlalchemy.engine import make_url
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


def _other_database(postgres_url: str, name: str) -> str:
    return make_url(postgres_url).set(database=name).render_as_string(hide_password=False)


def test_token_without_a_secret_explains_why(
    monkeypatch: pytest.MonkeyPatch, postgres_url: str
) -> None:
    # development mode keeps its secret beside a SQLite file only: with PostgreSQL, nothing to sign
    monkeypatch.setenv("PFO_DATABASE_URL", postgres_url)
    result = runner.invoke(app, ["token", "--sub", "alice"])
    assert result.exit_code == 2
    assert "PFO_JWT_SECRET is not set" in result.output


def test_a_missing_or_unreachable_database_is_one_line(
    monkeypatch: pytest.MonkeyPatch, postgres_url: str, tmp_path: Path
) -> None:
    monkeypatch.setenv("PFO_JWT_SECRET", SECRET)
    for url, why in (
        (_other_database(postgres_url, "no_such_database_here"), '"no_such_database_here"'),
        ("postgresql://postgres@127.0.0.1:9/x", "storage unavailable"),
        (f"sqlite:///{tmp_path}/missing/dir/x.db", "does not exist"),
    ):
        monkeypatch.setenv("PFO_DATABASE_URL", url)
        for command in ("serve", "migrate"):
            result = runner.invoke(app, [command])
            assert result.exit_code == 1, result.output
            lines = result.output.strip().splitlines()
            assert len(lines) == 1, result.output
            assert lines[0].startswith("error: cannot open the database at ")
            assert why in lines[0]


def test_a_missing_database_directory_is_one_line_in_development_mode_too(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # no PFO_JWT_SECRET: serve names the database, not the secret file it would keep beside it
    monkeypatch.setenv("PFO_DATABASE_URL", f"sqlite:///{tmp_path}/missing/dir/x.db")
    result = runner.invoke(app, ["serve"])
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines() == [
        f"error: cannot open the database at sqlite+aiosqlite:///{tmp_path}/missing/dir/x.db: "
        f"storage unavailable: cannot create SQLite database '{tmp_path}/missing/dir/x.db': "
        f"directory '{tmp_path}/missing/dir' does not exist"
    ]
    minted = runner.invoke(app, ["token", "--sub", "a"])
    assert minted.exit_code == 2
    assert minted.output.strip().splitlines() == [
        f"error: development secret: the database's directory {tmp_path}/missing/dir does not exist"
    ]
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize(
    "url", ["not a url", "postgresql://ops:hunter2@db:port/pfo", "sqlite:/relative.db"]
)
def test_an_unparseable_database_url_is_one_line_that_repeats_no_password(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("PFO_DATABASE_URL", url)
    for command in (["serve"], ["migrate"], ["token", "--sub", "a"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2, result.output
        assert result.output.strip().splitlines() == [
            "error: invalid configuration (database_url): the database URL cannot be parsed: "
            "use sqlite+aiosqlite:///file.db or postgresql+asyncpg://user@host/db"
        ]


def test_the_development_secret_file_is_ignored_by_git() -> None:
    """`make run` leaves proxy-failover.db.secret in the checkout: `git add -A` must not take it."""
    from proxy_failover.config import Settings
    from proxy_failover.entrypoints.cli import devmode

    repository = Path(__file__).resolve().parents[2]
    if not (repository / ".git").exists():
        pytest.skip("not a git checkout (an unpacked sdist): no .gitignore to check")
    path = devmode.secret_path(Settings(database_url="sqlite:///./proxy-failover.db"))
    assert path is not None
    ignored = subprocess.run(
        ["git", "-C", str(repository), "check-ignore", "-q", str(path)], check=False
    )
    assert ignored.returncode == 0, f"{path} is not in .gitignore"


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

    # the secret sits beside the database, owner-only; `token` signs with it; a restart keeps it
    database = Path(sqlite_url.split("///", 1)[1])
    secret_file = database.with_name(database.name + ".secret")
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    monkeypatch.setenv("PFO_DATABASE_URL", sqlite_url)
    minted = runner.invoke(app, ["token", "--sub", "carol"])
    assert minted.exit_code == 0, minted.output
    carol = minted.stdout.strip()
    server = start_serve(sqlite_url, tmp_path / "again.log")
    try:
        for bearer in (token.group(1), carol):
            response = httpx.get(
                f"{server.url}/proxies", headers={"Authorization": f"Bearer {bearer}"}
            )
            assert response.status_code == 200, response.text
    finally:
        stop_serve(server)


@pytest.mark.slow
def test_production_mode_never_writes_nor_reads_a_secret_file(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = start_serve(sqlite_url, tmp_path / "serve.log", {"PFO_JWT_SECRET": SECRET})
    stop_serve(server)
    database = Path(sqlite_url.split("///", 1)[1])
    secret_file = database.with_name(database.name + ".secret")
    assert not secret_file.exists()
    assert "development mode" not in (tmp_path / "serve.log").read_text()

    # a file left by an earlier development run signs nothing once PFO_JWT_SECRET is set
    development_secret = "d" * 40
    secret_file.write_text(development_secret + "\n")
    secret_file.chmod(0o600)
    left_over = jwt.encode(
        {"sub": "dev-admin", "role": "admin", "exp": int(time.time()) + 600},
        development_secret,
        "HS256",
    )
    monkeypatch.setenv("PFO_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("PFO_JWT_SECRET", SECRET)
    minted = runner.invoke(app, ["token", "--sub", "carol"])
    assert minted.exit_code == 0, minted.output
    assert jwt.decode(minted.stdout.strip(), SECRET, algorithms=["HS256"])["sub"] == "carol"
    server = start_serve(sqlite_url, tmp_path / "again.log", {"PFO_JWT_SECRET": SECRET})
    try:
        for bearer, status in ((left_over, 401), (minted.stdout.strip(), 200)):
            response = httpx.get(
                f"{server.url}/proxies", headers={"Authorization": f"Bearer {bearer}"}
            )
            assert response.status_code == status, response.text
    finally:
        stop_serve(server)
    assert secret_file.read_text() == development_secret + "\n"
