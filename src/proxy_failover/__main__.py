"""``python -m proxy_failover`` runs the CLI."""

from proxy_failover.entrypoints.cli import app

app()
