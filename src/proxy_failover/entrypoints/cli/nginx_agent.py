"""``proxy-failover agent nginx ...``: upstream blocks rendered into a file nginx includes.

Added to the ``agent`` group of ``dataplanes`` by ``register(app)``; an API client like the other
agents (URL + token), it runs until interrupted.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer

from proxy_failover.core.nginx import NJS_UPSTREAM_NAME, UPSTREAM_NAME
from proxy_failover.entrypoints.cli.common import DEFAULT_URL, TokenOption, UrlOption
from proxy_failover.entrypoints.cli.dataplanes import (
    _LOG_LEVEL,
    _METRICS_PORT,
    _RECONCILE,
    _maps,
    _run_agent,
    agent_app,
)


class Mode(enum.StrEnum):
    RELOAD = "reload"  # one block per upstream, reloaded on every change
    NJS = "njs"  # one block per instance, a state file read by njs: switches without a reload


def _upstreams(maps: list[str], mode: Mode) -> dict[str, str]:
    if mode is Mode.NJS:
        return _maps(
            maps,
            "UPSTREAM",
            lambda upstream: bool(NJS_UPSTREAM_NAME.match(upstream)),
            " (upstream of [A-Za-z0-9_], not starting with a digit, in --mode njs)",
        )
    return _maps(
        maps,
        "UPSTREAM",
        lambda upstream: bool(UPSTREAM_NAME.match(upstream)),
        " (upstream of [A-Za-z0-9_.:-])",
    )


def agent_nginx(
    output: Annotated[
        Path,
        typer.Option(
            "--output", help="The file of upstream blocks nginx includes (written atomically)"
        ),
    ],
    maps: Annotated[list[str], typer.Option("--map", help="PROXY_ID=UPSTREAM (repeatable)")],
    reload: Annotated[
        str | None,
        typer.Option(
            "--reload",
            help='Shell command that reloads nginx, run when the file changed (e.g. "nginx -s '
            'reload" or "kill -HUP $(cat /run/nginx.pid)")',
        ),
    ] = None,
    reload_pid_file: Annotated[
        Path | None,
        typer.Option(
            "--reload-pid-file",
            help="Instead of --reload: send SIGHUP to the pid in this file (nginx's pid "
            "directive, e.g. /run/nginx.pid) when the file changed; no shell, faster",
        ),
    ] = None,
    mode: Annotated[
        Mode,
        typer.Option(
            "--mode",
            help="reload: nginx reloads on every switch (needs nothing but nginx); njs: a switch "
            "rewrites OUTPUT's .state.json, read per request by the njs module OUTPUT's .js "
            "(Debian libnginx-mod-http-js / -stream-js), no reload",
        ),
    ] = Mode.RELOAD,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    reconcile_seconds: _RECONCILE = 5.0,
    metrics_port: _METRICS_PORT = None,
    log_level: _LOG_LEVEL = "info",
) -> None:
    """Render nginx upstream blocks (active instance; the others backup) and reload on a change."""
    from proxy_failover.adapters.dataplanes.nginx import NginxDataPlane, NginxNjsDataPlane

    upstreams = _upstreams(maps, mode)
    if (reload is None) == (reload_pid_file is None):
        raise typer.BadParameter(
            "give one of --reload COMMAND and --reload-pid-file FILE", param_hint="--reload"
        )
    if not output.parent.is_dir():
        raise typer.BadParameter(f"{output.parent} is not a directory", param_hint="--output")
    _run_agent(
        "nginx",
        lambda metrics: (NginxNjsDataPlane if mode is Mode.NJS else NginxDataPlane)(
            output, upstreams, reload, metrics, reload_pid_file=reload_pid_file
        ),
        list(upstreams),
        url=url,
        token=token,
        reconcile_seconds=reconcile_seconds,
        metrics_port=metrics_port,
        log_level=log_level,
    )


def register(app: typer.Typer) -> None:
    """Add ``agent nginx`` to the ``agent`` group (``dataplanes.register`` adds it to ``app``)."""
    del app
    agent_app.command("nginx")(agent_nginx)
