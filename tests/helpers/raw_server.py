"""An in-process asyncio server that answers HTTP requests with scripted raw bytes.

For probe tests that need exact control of framing (chunked, close-delimited, silence) and need to
count connections and see request lines. Real sockets, no mocks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field


def response(status: int, body: bytes = b"ok", *, close: bool = False) -> bytes:
    head = f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n"
    if close:
        head += "Connection: close\r\n"
    return head.encode() + b"\r\n" + body


@dataclass
class RawServer:
    """Answers each request with ``reply(request_line)``; ``None`` means never answer, ``b""``
    close the connection without answering."""

    reply: Callable[[str], bytes | None] = lambda _line: response(200)
    close_after_reply: bool = False
    connections: int = 0
    request_lines: list[str] = field(default_factory=list)
    server: asyncio.Server | None = None
    port: int = 0
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.server.wait_closed()

    def drop_connections(self) -> None:
        """Close every open connection from the server side (an idle keep-alive timeout)."""
        for task in list(self._tasks):
            task.cancel()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line = head.split(b"\r\n", 1)[0].decode()
                self.request_lines.append(line)
                data = self.reply(line)
                if data is None:
                    await asyncio.sleep(3600)
                    return
                if not data:  # b"": close without answering (a keep-alive timeout racing it)
                    break
                writer.write(data)
                await writer.drain()
                if self.close_after_reply:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)
