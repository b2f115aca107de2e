"""The commands that run the service itself: ``serve``, ``token``, ``migrate``, ``version``.

Settings come from ``PFO_*`` variables; invalid ones stop the command with the validator's message
(exit code 2) rather than a traceback.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable
from typing import Annotated

import typer
from pydantic import SecretStr, ValidationError

from proxy_failover import __version__
from proxy_failover.config import Settings

#: Lifetime of the admin token printed in development mode.
DEV_TOKEN_TTL_SECONDS = 12 * 3600


def _settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        for problem in error.errors():
            field = ".".join(str(part) for part in problem["loc"]) or "settings"
            message = str(problem["msg"]).removeprefix("Value error, ")
            typer.echo(f"error: invalid configuration ({field}): {message}", err=True)
        raise typer.Exit(code=2) from None


def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to bind, instead of PFO_HOST [default: 127.0.0.1]")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port, instead of PFO_PORT [default: 8080]")
    ] = None,
    access_log: Annotated[bool, typer.Option(help="Log every request")] = False,
) -> None:
    """Serve the REST API, the engine (probes, automatic failover) and the dashboard at /ui.

    The database at PFO_DATABASE_URL is migrated first. Without PFO_JWT_SECRET (nor a public key
    or JWKS) this is development mode: an admin token and the dashboard link are printed."""
    import uvicorn

    from proxy_failover.entrypoints.api import create_app
    from proxy_failover.entrypoints.api.auth import mint_token, random_secret
    from proxy_failover.entrypoints.api.server import HttpLimits, guarded_protocol
    from proxy_failover.entrypoints.logs import configure_logging

    overrides: dict[str, object] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    settings = _settings(**overrides)
    # The database first: a missing one is the one line to read (in development mode, before a
    # secret file is looked for beside it).
    _open_database(settings)
    if not settings.has_jwt_key:
        secret, where = _development_secret(settings, random_secret)
        settings = settings.model_copy(update={"jwt_secret": SecretStr(secret)})
        token = mint_token(
            secret,
            "dev-admin",
            admin=True,
            ttl_seconds=DEV_TOKEN_TTL_SECONDS,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
        )
        typer.echo(
            f"WARNING: PFO_JWT_SECRET is not set: development mode, tokens are signed with {where}."
            " Set PFO_JWT_SECRET in production. Admin token, valid 12 h:",
            err=True,
        )
        typer.echo(token, err=True)
        typer.echo(
            f"  curl -H 'Authorization: Bearer {token}' "
            f"http://{settings.host}:{settings.port}/proxies",
            err=True,
        )
        typer.echo(
            f"  dashboard: http://{settings.host}:{settings.port}/ui#token={token}", err=True
        )
    try:
        application = create_app(settings, run_engine=True)
    except ValueError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=2) from None
    configure_logging(settings.log_level)  # JSON lines, uvicorn's too
    # Everything imported and built so far lives as long as the process: keep it out of the
    # collector's full passes, which otherwise pause the event loop ~80 ms now and then.
    gc.collect()
    gc.freeze()
    uvicorn.run(
        application,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=guarded_protocol(
            HttpLimits(
                max_head_bytes=settings.http_max_head_bytes,
                head_timeout_seconds=settings.http_head_timeout_seconds,
                body_timeout_seconds=settings.http_body_timeout_seconds,
            )
        ),
        timeout_keep_alive=settings.http_keep_alive_seconds,
        log_config=None,
        log_level=settings.log_level,
        access_log=access_log,
        timeout_graceful_shutdown=10,
    )


def token(
    sub: Annotated[str, typer.Option("--sub", help="User id (the token's sub claim)")],
    admin: Annotated[bool, typer.Option("--admin", help="Grant the admin role")] = False,
    ttl: Annotated[int, typer.Option("--ttl", min=1, help="Lifetime in seconds")] = 3600,
) -> None:
    """Print an HS256 token signed with PFO_JWT_SECRET (or development mode's secret file)."""
    from proxy_failover.entrypoints.api.auth import mint_token, random_secret
    from proxy_failover.entrypoints.cli import devmode

    settings = _settings()
    if not sub.strip():
        typer.echo("error: --sub must not be empty", err=True)
        raise typer.Exit(code=2)
    if settings.jwt_secret is not None:
        secret = settings.jwt_secret.get_secret_value()
    elif settings.has_jwt_key:
        typer.echo(
            "error: PFO_JWT_SECRET is not set (tokens are signed with it); with a public key or "
            "JWKS configured, tokens come from your identity provider",
            err=True,
        )
        raise typer.Exit(code=2)
    elif devmode.secret_path(settings) is None:
        typer.echo(
            "error: PFO_JWT_SECRET is not set (tokens are signed with it), and development mode "
            "keeps its secret only beside a SQLite database file",
            err=True,
        )
        raise typer.Exit(code=2)
    else:
        secret, where = _development_secret(settings, random_secret)
        typer.echo(f"development mode: signed with {where}", err=True)
    typer.echo(
        mint_token(
            secret,
            sub,
            admin=admin,
            ttl_seconds=ttl,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
        )
    )


def _development_secret(settings: Settings, make_secret: Callable[[], str]) -> tuple[str, str]:
    """(secret, where it comes from): the file beside the SQLite database, else a random one."""
    from proxy_failover.entrypoints.cli import devmode

    path = devmode.secret_path(settings)
    if path is None:
        return make_secret(), "a random secret for this run (tokens stop working on restart)"
    if not path.parent.is_dir():
        typer.echo(
            f"error: development secret: the database's directory {path.parent} does not exist",
            err=True,
        )
        raise typer.Exit(code=2)
    try:
        secret, created = devmode.load_or_create(path, make_secret)
    except (OSError, ValueError) as error:
        typer.echo(f"error: development secret: {error}", err=True)
        raise typer.Exit(code=2) from None
    return secret, f"the secret in {path}" + (" (new)" if created else "")


def _open_database(settings: Settings) -> None:
    """Migrate (or just check) the database before serving: a missing or unreachable database
    is one line and exit code 1, not a start-up traceback."""
    from sqlalchemy.exc import SQLAlchemyError

    from proxy_failover.core.errors import FailoverError
    from proxy_failover.store.database import migrate as run_migrations

    where = _redacted(settings.database_url)
    try:
        asyncio.run(run_migrations(settings.database_url))
    except FailoverError as error:
        message = error.message
    except (SQLAlchemyError, OSError) as error:
        cause = getattr(error, "orig", None) or error
        message = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    else:
        return
    typer.echo(f"error: cannot open the database at {where}: {message}", err=True)
    raise typer.Exit(code=1)


def migrate() -> None:
    """Bring the database at PFO_DATABASE_URL to the latest schema."""
    settings = _settings()
    _open_database(settings)
    typer.echo(f"database at {_redacted(settings.database_url)} is up to date")


def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # only for display; never repeat what could not be told apart
        return "PFO_DATABASE_URL"


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    for command in (serve, token, migrate, version):
        app.command()(command)
