"""What the client commands share: ``--url``/``--token``, the client, errors as one line, names.

Every client command goes through ``proxy_failover.client`` (the REST API), never the database, so
it works against any replica from any host. Errors of the server are printed as
``error: PROXY_FAILOVER_0NN: message`` with exit code 1; an unreachable service is one line too.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, NoReturn

import httpx
import typer
from rich.console import Console

from proxy_failover.client import FailoverClient
from proxy_failover.core.errors import ErrorCode, FailoverError
from proxy_failover.core.model import Instance

DEFAULT_URL = "http://127.0.0.1:8080"

UrlOption = Annotated[
    str,
    typer.Option("--url", envvar="PFO_URL", help="Base URL of the service.", show_default=True),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="PFO_TOKEN",
        help="Bearer token (JWT); mint one with `proxy-failover token`.",
        show_default=False,
    ),
]

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def console() -> Console:
    """Rich console on stdout: tables fit the terminal; piped output (``| grep``) is not wrapped
    at Rich's 80-column default but at 200 (or ``COLUMNS``)."""
    width = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 200
    return Console(highlight=False, width=width)


def fail(message: str, code: int = 1) -> NoReturn:
    """One line on stderr and a non-zero exit."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=code)


@contextmanager
def connect(url: str, token: str | None) -> Iterator[FailoverClient]:
    """A client for ``url``; API errors and connection failures end the command in one line."""
    client = FailoverClient(url.rstrip("/"), token)
    try:
        yield client
    except FailoverError as error:
        hint = ""
        if error.code is ErrorCode.UNAUTHENTICATED and not token:
            hint = " (give --token or set PFO_TOKEN)"
        fail(f"{error.code}: {error.message}{hint}")
    except httpx.TransportError as error:
        fail(f"cannot reach the service at {url}: {error or type(error).__name__}")
    finally:
        client.close()


def resolve_instance(client: FailoverClient, reference: str) -> Instance:
    """An instance by id (a UUID) or by ``PROXY/NAME``.

    Proxy ids cannot contain ``/``, so the first ``/`` separates the proxy from the instance name
    (which may itself contain ``/``).
    """
    if _UUID.fullmatch(reference):
        return client.get_instance(reference)
    proxy_id, slash, name = reference.partition("/")
    if not slash or not proxy_id or not name:
        fail(f"{reference!r} is neither an instance id nor PROXY/NAME", code=2)
    return instance_named(client, proxy_id, name)


def instance_named(client: FailoverClient, proxy_id: str, name: str) -> Instance:
    """The instance of ``proxy_id`` called ``name``; a clear error when there is none."""
    instances = client.get_proxy_instances(proxy_id)
    for instance in instances:
        if instance.instance_name == name:
            return instance
    known = ", ".join(instance.instance_name for instance in instances) or "none"
    fail(f"proxy {proxy_id!r} has no instance named {name!r} (instances: {known})")


def names_by_id(instances: list[Instance]) -> dict[str, str]:
    return {instance.id: instance.instance_name for instance in instances}


def ago(moment: datetime | None, now: datetime | None = None) -> str:
    """``3s ago`` / ``2m ago`` / ``-``: how an operator reads a timestamp in a table."""
    if moment is None:
        return "-"
    seconds = max(0.0, ((now or datetime.now(UTC)) - moment).total_seconds())
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    if seconds < 172800:
        return f"{seconds / 3600:.0f}h ago"
    return moment.strftime("%Y-%m-%d %H:%M")
