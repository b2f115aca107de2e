"""A counted load through a data plane: requests on new connections, one after another from a
thread, each answer recorded with the time it started (the relay's name, or None and why: an
error a client would see). ``Load.tcp`` asks on a raw socket (the same call works through an
HTTP and a TCP listener), ``Load.http`` through httpx (a status, a timeout, a reset, named).
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import httpx

from tests.helpers.dataplanes import poll_until

#: One request: the relay's name, or None and the reason.
Ask = Callable[[], tuple[str | None, str]]
T = TypeVar("T")


def ask(port: int, timeout: float = 2.0) -> str | None:
    """``GET /`` on a new TCP connection: the relay's name, or None on any failure (a raw socket,
    so the same call works through an HTTP and a TCP listener)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    except OSError:
        return None
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        return None
    return body.decode(errors="replace").strip() or None


def all_answered_by(ports: Sequence[int], name: str) -> bool:
    """A new request on each port is answered by ``name``."""
    return all(ask(port) == name for port in ports)


class Load:
    """Requests from a thread until stopped (``with`` or ``start``/``stop``), ``pause`` s apart;
    ``answers`` holds (started, name or None), ``errors`` why each None was one."""

    def __init__(
        self, request: Ask, pause: float, close: Callable[[], None] = lambda: None
    ) -> None:
        self.answers: list[tuple[float, str | None]] = []
        self.errors: list[str] = []
        self._request = request
        self._pause = pause
        self._close = close
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @classmethod
    def tcp(cls, port: int) -> Load:
        """``ask(port)`` (2 s timeout) every 5 ms."""

        def request() -> tuple[str | None, str]:
            name = ask(port)
            return name, "" if name is not None else "no 200 answer with a name"

        return cls(request, pause=0.005)

    @classmethod
    def http(cls, url: str) -> Load:
        """``GET url`` through httpx (5 s timeout, no keep-alive) every 2 ms."""
        client = httpx.Client(timeout=5, limits=httpx.Limits(max_keepalive_connections=0))

        def request() -> tuple[str | None, str]:
            try:
                response = client.get(url, headers={"Connection": "close"})
            except httpx.HTTPError as error:
                return None, f"{type(error).__name__}: {error}"
            if response.status_code == 200:
                return response.text.strip(), ""
            return None, f"{response.status_code} {response.text[:80]}"

        return cls(request, pause=0.002, close=client.close)

    def start(self) -> Load:
        self._thread.start()
        return self

    def stop(self) -> Load:
        self._stop.set()
        self._thread.join(timeout=10)
        self._close()
        return self

    def __enter__(self) -> Load:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            name, error = self._request()
            self.answers.append((started, name))
            if name is None:
                self.errors.append(error)
            self._stop.wait(self._pause)

    def counts(self) -> Counter[str | None]:
        return Counter(name for _, name in self.answers)

    def count(self, name: str) -> int:
        return sum(1 for _, answered in self.answers if answered == name)

    def answered_by(self, name: str, count: int = 5) -> bool:
        """The last ``count`` answers all came from ``name``."""
        tail = [n for _, n in self.answers[-count:]]
        return len(tail) == count and set(tail) == {name}


def moved_under_load(ports: Sequence[int], move: Callable[[], T]) -> tuple[list[Load], T]:
    """A ``Load.tcp`` on each port answered by edge-a, then ``move()``, then every load answered
    by edge-b (the last five answers each); the stopped loads and what ``move`` returned."""
    loads = [Load.tcp(port) for port in ports]
    for load in loads:
        load.start()
    try:
        poll_until(lambda: all(load.answered_by("edge-a") for load in loads))
        moved = move()
        poll_until(lambda: all(load.answered_by("edge-b") for load in loads))
    finally:
        for load in loads:
            load.stop()
    return loads, moved
