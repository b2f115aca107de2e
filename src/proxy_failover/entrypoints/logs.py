"""Structured JSON logs (structlog over the standard ``logging`` module), one object per line.

Every module keeps using ``logging.getLogger(...)``; this renders all of it, uvicorn's included, as
JSON with a UTC timestamp, the level, the logger name and, inside an HTTP request, the request id
the API bound with ``bound_request_id`` (the same id as the ``X-Request-ID`` header and the audit
row).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import IO, Any

import structlog

#: Fields a log call may attach with ``extra={...}`` (see ``log_fields``); they become top-level
#: keys of the JSON line, so logs can be filtered by proxy, instance, epoch or event.
LOG_FIELDS = ("proxy_id", "instance_id", "epoch", "event_id")

_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.ExtraAdder(allow=LOG_FIELDS),
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def configure_logging(level: str = "info", stream: IO[str] | None = None) -> None:
    """Send every log record, as JSON, to ``stream`` (default stderr) at ``level`` and above."""
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_SHARED,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    structlog.configure(
        processors=[*_SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


@contextlib.contextmanager
def bound_request_id(request_id: str) -> Iterator[None]:
    """Every record logged in this context (this task and those it starts) carries the id."""
    with structlog.contextvars.bound_contextvars(request_id=request_id):
        yield
