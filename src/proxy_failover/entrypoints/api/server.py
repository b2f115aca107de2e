"""The HTTP/1.1 connection guard under the app: limits a slow or greedy client cannot get around.

uvicorn's httptools protocol buffers a request head of any size, waits for ever on a connection
that sends nothing (or one byte a second), and answers a malformed request with plain text. This
subclass bounds each request head (431), times out idle, slow-header and slow-body connections
(408, or a silent close when nothing was sent), and answers every refusal in the error envelope.
The same limits as HAProxy's ``timeout http-request`` and ``tune.bufsize``, or nginx's
``client_header_timeout`` and ``large_client_header_buffers``.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from proxy_failover.core.errors import HTTP_STATUS, ErrorCode


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """Per-connection limits; seconds and bytes."""

    max_head_bytes: int = 16 * 1024
    head_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 10.0


_METHOD_TOKEN = re.compile(rb"[A-Z][A-Z-]{0,31} ")


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing a head over the limit."""


def _envelope(status: int, code: ErrorCode, message: str) -> bytes:
    """A whole HTTP/1.1 response carrying the error envelope, closing the connection."""
    body = json.dumps(
        {"error": {"code": code.value, "message": message, "statusCode": status, "details": {}}},
        separators=(",", ":"),
    ).encode()
    reason = {400: b"Bad Request", 405: b"Method Not Allowed", 408: b"Request Timeout"}.get(
        status, b"Request Header Fields Too Large"
    )
    return b"".join(
        [
            b"HTTP/1.1 %d %s\r\n" % (status, reason),
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
            body,
        ]
    )


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with bounded heads, read deadlines and enveloped refusals."""

    limits: ClassVar[HttpLimits] = HttpLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_done = False
        self._head_bytes = 0  # bytes received since the current request head began
        self._head_too_large = False
        self._deadline: asyncio.TimerHandle | None = None

    # --- deadlines ---------------------------------------------------------------------------

    def _arm(self, seconds: float, expired: Any) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _head_expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self._head_bytes:  # a head begun and never finished: tell the client why
            self.transport.write(
                _envelope(408, ErrorCode.INVALID_INPUT, "request head not received in time")
            )
        self.transport.close()  # an idle connection is just closed, like a keep-alive timeout

    def _body_expired(self) -> None:
        # The app already runs this request: closing makes its receive() see the disconnect.
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    # --- protocol ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.limits.head_timeout_seconds, self._head_expired)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """uvicorn's ``data_received``, with the head counted and the parser's error kept."""
        if not self._head_done:
            self._head_bytes += len(data)
            if self._deadline is None:  # a new request on a kept-alive connection
                self._arm(self.limits.head_timeout_seconds, self._head_expired)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserInvalidMethodError:
            # A word that is no method we serve (FOO) is 405; bytes of another protocol (a TLS
            # hello sent to the plain port) are not HTTP at all: 400.
            self._refuse(method_unknown=_METHOD_TOKEN.match(data) is not None)
            return
        except httptools.HttpParserError:
            self._refuse()
            return
        # Still inside the head after all of it was parsed: every byte since it began is head.
        if not self._head_done and self._head_bytes > self.limits.max_head_bytes:
            self._head_too_large = True
            self._refuse()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's plain-text 400, in the envelope instead (any path that still calls it)."""
        self._refuse()

    def _refuse(self, *, method_unknown: bool = False) -> None:
        """Answer a request the parser refused, in the envelope, and close: 431 for a head over
        the limit, 405 for a method the parser does not know (``FOO /proxies``), else 400."""
        if self._head_too_large:
            limit = self.limits.max_head_bytes
            response = _envelope(
                431, ErrorCode.INVALID_INPUT, f"request head larger than {limit} bytes"
            )
        elif method_unknown:
            response = _envelope(
                HTTP_STATUS[ErrorCode.METHOD_NOT_ALLOWED],
                ErrorCode.METHOD_NOT_ALLOWED,
                "method not allowed",
            )
        else:
            response = _envelope(400, ErrorCode.INVALID_INPUT, "malformed HTTP request")
        self._disarm()
        if not self.transport.is_closing():
            self.transport.write(response)
            self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_done = False

    def on_headers_complete(self) -> None:
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.limits.max_head_bytes:
            self._head_too_large = True
            raise _HeadTooLarge  # stops the parser; uvicorn answers through send_400_response
        self._head_done = True
        self._arm(self.limits.body_timeout_seconds, self._body_expired)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()
        self._head_done = False
        self._head_bytes = 0


def guarded_protocol(limits: HttpLimits) -> type[GuardedHttpToolsProtocol]:
    """The protocol class uvicorn instantiates per connection, carrying ``limits``."""
    return type("GuardedHttp", (GuardedHttpToolsProtocol,), {"limits": limits})
