"""The HTTP/1.1 client side of a health probe, on ``asyncio.Protocol``: one keep-alive connection
running one request at a time, reading only what a probe needs (the status line and the framing
that says where the response ends: Content-Length, chunked, or close).

At 10,000 probes a second a generic client's per-request overhead costs several cores
(docs/engine.md); ``adapters.probes.Prober`` pools these connections per instance.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

#: A response head larger than this is not a health endpoint's answer.
MAX_HEAD_BYTES = 64 * 1024


class ProtocolError(Exception):
    """The peer answered something that is not HTTP/1.x."""


class HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection that runs one request at a time."""

    def __init__(self, on_idle_lost: Callable[[], None] | None = None) -> None:
        self.transport: asyncio.Transport | None = None
        self._on_idle_lost = on_idle_lost
        self._buffer = bytearray()
        #: Called once with (status, reusable) or the exception, when the response is complete.
        self._on_done: Callable[[tuple[int, bool] | BaseException], None] | None = None
        self._status = 0
        self._keep_alive = True
        self._head_end = -1
        self._body_length: int | None = None  # None: read until close
        self._chunked = False
        self.received_any = False
        self.is_closed = False

    # --- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they implement its interface
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        self._buffer += data
        if self._on_done is None:
            return
        try:
            self._advance()
        except ProtocolError as exc:
            self._finish_error(exc)

    def eof_received(self) -> bool | None:
        return None  # let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        closed_by_us = self.is_closed
        self.is_closed = True
        self.transport = None  # no protocol <-> transport cycle left for the collector
        if self._on_done is None:
            if not closed_by_us and self._on_idle_lost is not None:
                self._on_idle_lost()  # the peer dropped an idle pooled connection: maybe it died
            return
        if self._head_end >= 0 and self._body_length is None and not self._chunked:
            self._complete((self._status, False))  # body delimited by close
        else:
            self._complete(exc or ConnectionResetError("connection closed by peer"))

    # --- requests -----------------------------------------------------------------------------
    def send(
        self, payload: bytes, on_done: Callable[[tuple[int, bool] | BaseException], None]
    ) -> None:
        """Send one request; ``on_done`` gets (status, reusable) once the whole response has
        arrived, or the exception that ended it (the hot path: no task, no future)."""
        assert self.transport is not None
        self._buffer.clear()
        self._head_end = -1
        self._body_length = None
        self._chunked = False
        self._keep_alive = True
        self.received_any = False
        self._on_done = on_done
        self.transport.write(payload)

    async def request(self, payload: bytes) -> tuple[int, bool]:
        """``send`` awaited: (status, reusable), or the exception raised."""
        future: asyncio.Future[tuple[int, bool]] = asyncio.get_running_loop().create_future()

        def done(outcome: tuple[int, bool] | BaseException) -> None:
            if future.done():
                return
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

        self.send(payload, done)
        try:
            return await future
        except BaseException:
            self._on_done = None  # cancelled (a timeout): a late answer goes nowhere
            raise

    def abandon(self) -> None:
        """Drop the request in flight without telling anyone, and close (its probe timed out)."""
        self._on_done = None
        self.close()

    def close(self) -> None:
        self.is_closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Close at once, without TLS's close_notify exchange: used when the prober shuts down
        with its loop, which must not be left with a TLS shutdown still running."""
        self.is_closed = True
        if self.transport is not None:
            self.transport.abort()

    def _complete(self, outcome: tuple[int, bool] | BaseException) -> None:
        on_done, self._on_done = self._on_done, None
        if on_done is not None:
            on_done(outcome)

    def _finish_error(self, exc: Exception) -> None:
        self._complete(exc)
        self.close()

    def _advance(self) -> None:
        buf = self._buffer
        if self._head_end < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD_BYTES:
                    raise ProtocolError("response head too large")
                return
            self._parse_head(bytes(buf[:end]))
            self._head_end = end + 4
        body = len(buf) - self._head_end
        if self._chunked:
            if not self._chunks_complete(memoryview(buf)[self._head_end :]):
                return
        elif self._body_length is None:
            return  # wait for connection_lost
        elif body < self._body_length:
            return
        elif body > self._body_length:
            self._keep_alive = False  # unexpected trailing bytes: do not reuse
        self._complete((self._status, self._keep_alive))

    def _parse_head(self, head: bytes) -> None:
        line_end = head.find(b"\r\n")
        parts = (head if line_end < 0 else head[:line_end]).split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise ProtocolError("invalid HTTP status line")
        self._status = int(parts[1])
        self._keep_alive = parts[0] != b"HTTP/1.0"
        # Only three headers matter; finding them in the lowered block beats splitting it.
        fields = head[line_end:].lower() if line_end >= 0 else b""
        length = _header(fields, b"\r\ncontent-length:")
        if length is not None:
            try:
                self._body_length = int(length)
            except ValueError as exc:
                raise ProtocolError("invalid Content-Length") from exc
        encoding = _header(fields, b"\r\ntransfer-encoding:")
        if encoding is not None:
            self._chunked = b"chunked" in encoding
        connection = _header(fields, b"\r\nconnection:")
        if connection == b"close":
            self._keep_alive = False
        elif connection == b"keep-alive":
            self._keep_alive = True
        if 100 <= self._status < 200 or self._status in (204, 304):
            self._body_length = 0
            self._chunked = False
        if self._body_length is None and not self._chunked:
            self._keep_alive = False

    @staticmethod
    def _chunks_complete(body: memoryview) -> bool:
        """True once the chunked body, including its terminating chunk and trailers, is in."""
        data = body.tobytes()
        pos = 0
        while True:
            line_end = data.find(b"\r\n", pos)
            if line_end < 0:
                return False
            size_text = data[pos:line_end].split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError as exc:
                raise ProtocolError("invalid chunk size") from exc
            if size == 0:
                return data.find(b"\r\n\r\n", line_end) >= 0 or data.endswith(b"0\r\n\r\n")
            pos = line_end + 2 + size + 2
            if pos > len(data):
                return False


def _header(fields: bytes, name: bytes) -> bytes | None:
    """The stripped value of header ``name`` (CRLF, the lower-case name, a colon) in ``fields``,
    the lowered header block starting with its CRLF; None when absent."""
    at = fields.find(name)
    if at < 0:
        return None
    start = at + len(name)
    stop = fields.find(b"\r\n", start)
    return (fields[start:] if stop < 0 else fields[start:stop]).strip()
