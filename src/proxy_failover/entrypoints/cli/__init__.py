"""The ``proxy-failover`` command, one module per group of commands.

- ``server``: run the service (``serve``, ``token``, ``migrate``, ``version``);
- ``operate``: look and act through the REST API like ``patronictl`` (``status``, ``events``,
  ``explain``, ``switchover``, ``drain``, ``maintain``, ``enable``);
- ``apply``: declarative configuration from a YAML file;
- ``demo``: a failover told from start to end on a throw-away database;
- ``dataplanes``: ``agent haproxy`` and ``forward``, which make traffic follow the decisions.

Each module adds its commands with ``register(app)``; a new group is one more line below.
Help is plain text (``rich_markup_mode=None``): Rich markup would eat the ``[default: ...]`` and
other square brackets of the help texts.
"""

from __future__ import annotations

from typing import Annotated

import typer

from proxy_failover import __version__
from proxy_failover.entrypoints.cli import apply, dataplanes, demo, nginx_agent, operate, server

app = typer.Typer(
    name="proxy-failover",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"max_content_width": 120},
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Failover and redundancy control plane for streaming proxies.

    Client commands talk to a running service: give --url and --token, or set PFO_URL and
    PFO_TOKEN (in development mode: export PFO_TOKEN=$(proxy-failover token --sub me --admin)).
    """


# Command groups: one line each (data-plane agents register theirs here the same way).
server.register(app)
operate.register(app)
apply.register(app)
demo.register(app)
dataplanes.register(app)
nginx_agent.register(app)  # agent nginx

__all__ = ["app"]
