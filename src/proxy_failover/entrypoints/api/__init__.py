"""The REST API (SPEC §7): ``create_app`` builds a FastAPI app from settings or a runtime."""

from proxy_failover.entrypoints.api.app import create_app

__all__ = ["create_app"]
