"""Pure ASGI guards around the app: a body size limit, strict JSON, and a last-resort 500.

The size limit checks ``Content-Length`` and counts streamed bytes, so an oversized body is
refused after at most 64 KiB were read, never buffered whole (``larger`` raises it for named
paths: Envoy's discovery requests carry its whole node description).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy_failover.core.errors import ErrorCode
from proxy_failover.core.fields import unstorable_reason
from proxy_failover.entrypoints.api.errors import (
    JSON_ERROR_SCOPE_KEY,
    error_payload,
    internal_error_response,
)

log = logging.getLogger("proxy_failover.api")

MAX_BODY_BYTES = 64 * 1024
MAX_JSON_DEPTH = 32


async def _send_error(send: Send, code: ErrorCode, message: str, status: int) -> None:
    # Rendered as JSONResponse renders every other error body (compact), byte for byte.
    payload = error_payload(code, message)
    body = json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    """413/017 for bodies over ``limit`` bytes, by header or by counting what arrives."""

    def __init__(
        self, app: ASGIApp, limit: int = MAX_BODY_BYTES, larger: dict[str, int] | None = None
    ) -> None:
        self.app = app
        self.default_limit = limit
        self.larger = dict(larger or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.larger.get(scope["path"], self.default_limit)
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > limit:
                    await _send_error(send, ErrorCode.BODY_TOO_LARGE, _too_large(limit), 413)
                    return
                break
        # Read at most limit + 1 bytes up front; replay them to the app as one message.
        chunks: list[bytes] = []
        size = 0
        first: Message = await receive()
        message = first
        while message["type"] == "http.request":
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _send_error(send, ErrorCode.BODY_TOO_LARGE, _too_large(limit), 413)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
            message = await receive()
        if message["type"] != "http.request":  # disconnected while sending the body
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _too_large(limit: int) -> str:
    return f"request body too large (limit {limit // 1024} KiB)"


class CatchAllMiddleware:
    """Any exception no handler mapped is a bug: log it, answer 500/019, keep serving."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started:
                log.error("error after the response started", exc_info=exc)
                return
            response = internal_error_response(Request(scope), exc)
            await response(scope, receive, send)


# --- strict JSON -------------------------------------------------------------------------------


#: Stands in for a refused body so validation fails *after* auth (401/403 come first). A string:
#: FastAPI validates bodies with ``from_attributes=True``, so any plain object passed as a model
#: whose fields are all optional (PATCH, PUT redundancy) and the refused body was accepted as {}.
_REJECTED_JSON = "<refused JSON body>"


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _depth(value: Any) -> int:
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in node.values())
        elif isinstance(node, list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in node)
    return deepest


#: A \\u0000 or \\uD800-\\uDFFF escape: the only ways a NUL or a lone surrogate gets into a
#: parsed string (raw control bytes and invalid UTF-8 are already refused by the decoder).
_UNSTORABLE_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")


def parse_strict_json(body: bytes) -> Any:
    """The JSON value of a UTF-8 body: no NaN/Infinity, no NUL characters or lone surrogates, and
    nesting capped at ``MAX_JSON_DEPTH``.

    Decoded as strict UTF-8 *before* parsing: ``json.loads`` given bytes guesses UTF-16/32 and
    decodes with ``surrogatepass``, which let raw surrogate bytes and UTF-16 bodies reach storage.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"body is not UTF-8 (invalid byte at offset {error.start})") from error
    try:
        value = json.loads(text, parse_constant=_no_constants, parse_float=_finite_float)
    except RecursionError as error:
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels") from error
    except json.JSONDecodeError as error:
        raise ValueError(f"{error.msg} at line {error.lineno} column {error.colno}") from error
    if _depth(value) > MAX_JSON_DEPTH:
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    if _UNSTORABLE_ESCAPE.search(text) and (problem := unstorable_reason(value)) is not None:
        raise ValueError(f"a string {problem}")
    return value


def charset_problem(headers: list[tuple[bytes, bytes]]) -> str | None:
    """Why the declared ``Content-Type`` charset is refused (only UTF-8 is JSON here), or None."""
    for name, value in headers:
        if name == b"content-type":
            for parameter in value.decode("latin-1").split(";")[1:]:
                key, _, charset = parameter.strip().partition("=")
                charset = charset.strip().strip('"').lower()
                if key.strip().lower() == "charset" and charset not in ("utf-8", "utf8"):
                    return f"request bodies must be UTF-8 JSON (charset={charset} given)"
            return None
    return None


class StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            try:
                if (problem := charset_problem(self.scope["headers"])) is not None:
                    raise ValueError(problem)
                self._json = parse_strict_json(await self.body())
            except ValueError as error:
                self.scope[JSON_ERROR_SCOPE_KEY] = str(error)
                self._json = _REJECTED_JSON
        return self._json


class StrictJsonRoute(APIRoute):
    """Routes whose request bodies are parsed by ``parse_strict_json``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return strict_handler
