"""The event loop of the long-running processes: uvloop when installed, else asyncio's own.

uvloop comes with ``uvicorn[standard]`` (a dependency) on the platforms it supports. ``serve``'s
API runs on it through uvicorn, its engine thread and the data-plane commands through this
factory. The forwarder gains the most: uvloop's ``create_connection`` to a numeric address costs
about a quarter of the CPU of asyncio's, and its transports forward in C.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """``uvloop.new_event_loop`` when uvloop is installed, else ``asyncio.new_event_loop``."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        return asyncio.new_event_loop
    return uvloop.new_event_loop
