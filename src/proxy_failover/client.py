"""A Python client for the REST API (httpx), sync and async, with the library's method names.

Results are the library's own typed values (``FailoverConfig``, ``Instance``...); errors raise
``FailoverError`` with the server's ``PROXY_FAILOVER_0NN`` code, status and details. The caller is
whoever the bearer token names, so the library's ``user_id`` parameters are not repeated here.
"""

from __future__ import annotations

import typing
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from proxy_failover.client_wire import (
    STREAM_READ_TIMEOUT_SECONDS,
    StreamEvent,
    camel,
    error_from_response,
    from_json,
    stream_event,
)
from proxy_failover.core.errors import ErrorCode, FailoverError
from proxy_failover.core.model import (
    CheckResult,
    Evaluation,
    EventStatus,
    EventType,
    Explanation,
    FailoverConfig,
    FailoverEvent,
    Instance,
    ProxySummary,
    RedundancyStatus,
    Route,
    StoredMetricSample,
)

__all__ = ["AsyncFailoverClient", "FailoverClient", "Page", "StreamEvent", "error_from_response"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list that grows; ``next_cursor`` (the server's ``nextCursor``) asks for the
    next, None after the last."""

    items: list[T]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class _Call(Generic[T]):
    """One request and how to read its ``data``."""

    method: str
    path: str
    kind: Any  # the dataclass of the result, list[...] of one, or None for no value
    json: Any = None
    params: Mapping[str, Any] | None = None

    def read(self, response: httpx.Response) -> T:
        if response.status_code >= 400:
            raise error_from_response(response)
        if self.kind is None:
            return None  # type: ignore[return-value]
        body = response.json()
        data = body["data"]
        if typing.get_origin(self.kind) is Page:
            (item,) = typing.get_args(self.kind)
            items = [from_json(item, element) for element in data]
            return Page(items, body.get("nextCursor"))  # type: ignore[return-value]
        if typing.get_origin(self.kind) is list:
            (item,) = typing.get_args(self.kind)
            return [from_json(item, element) for element in data]  # type: ignore[return-value]
        return from_json(self.kind, data)  # type: ignore[no-any-return]


def _body(data: Mapping[str, Any]) -> dict[str, Any]:
    """A library-style mapping as the API's camelCase body: the library takes snake_case keys as
    well as camelCase (SPEC §6), the API only camelCase. Keys of ``healthCheck`` are renamed too;
    ``metadata`` is the caller's free JSON and is sent as given."""
    body: dict[str, Any] = {}
    for key, value in data.items():
        name = camel(key)
        if name == "healthCheck" and isinstance(value, Mapping):
            value = {camel(inner): item for inner, item in value.items()}
        body[name] = value
    return body


def _p(segment: str) -> str:
    return quote(segment, safe="")


class _Calls:
    """The requests behind each method; shared by the sync and async clients."""

    @staticmethod
    def create_config(proxy_id: str, config: Mapping[str, Any]) -> _Call[FailoverConfig]:
        body = {"proxyId": proxy_id, "config": _body(config)}
        return _Call("POST", "/proxy/failover/config", FailoverConfig, body)

    @staticmethod
    def get_config(proxy_id: str) -> _Call[FailoverConfig]:
        return _Call("GET", f"/proxy/failover/config/{_p(proxy_id)}", FailoverConfig)

    @staticmethod
    def delete_config(proxy_id: str) -> _Call[None]:
        return _Call("DELETE", f"/proxy/failover/config/{_p(proxy_id)}", None)

    @staticmethod
    def register(proxy_id: str, instance_data: Mapping[str, Any]) -> _Call[Instance]:
        body = {"proxyId": proxy_id, "instanceData": _body(instance_data)}
        return _Call("POST", "/proxy/instances", Instance, body)

    @staticmethod
    def instances(proxy_id: str) -> _Call[list[Instance]]:
        return _Call("GET", f"/proxy/{_p(proxy_id)}/instances", list[Instance])

    @staticmethod
    def instance(instance_id: str) -> _Call[Instance]:
        return _Call("GET", f"/proxy/instances/{_p(instance_id)}", Instance)

    @staticmethod
    def health(instance_id: str, status: str, metrics: Mapping[str, Any] | None) -> _Call[Instance]:
        body: dict[str, Any] = {"healthStatus": status}
        if metrics is not None:
            body["metrics"] = _body(metrics)
        return _Call("PUT", f"/proxy/instances/{_p(instance_id)}/health", Instance, body)

    @staticmethod
    def update(instance_id: str, changes: Mapping[str, Any]) -> _Call[Instance]:
        return _Call("PATCH", f"/proxy/instances/{_p(instance_id)}", Instance, _body(changes))

    @staticmethod
    def delete(instance_id: str) -> _Call[None]:
        return _Call("DELETE", f"/proxy/instances/{_p(instance_id)}", None)

    @staticmethod
    def check(instance_id: str, result: CheckResult) -> _Call[Instance]:
        body: dict[str, Any] = {"success": result.success}
        if result.latency_ms is not None:
            body["latencyMs"] = result.latency_ms
        if result.error is not None:
            body["error"] = result.error
        return _Call("POST", f"/proxy/instances/{_p(instance_id)}/checks", Instance, body)

    @staticmethod
    def record_metrics(instance_id: str, metrics: Mapping[str, Any]) -> _Call[StoredMetricSample]:
        path = f"/proxy/instances/{_p(instance_id)}/metrics"
        return _Call("POST", path, StoredMetricSample, _body(metrics))

    @staticmethod
    def metrics(instance_id: str, limit: int) -> _Call[list[StoredMetricSample]]:
        path = f"/proxy/instances/{_p(instance_id)}/metrics"
        return _Call("GET", path, list[StoredMetricSample], params={"limit": limit})

    @staticmethod
    def evaluate(proxy_id: str) -> _Call[Evaluation]:
        return _Call("POST", "/proxy/failover/evaluate", Evaluation, {"proxyId": proxy_id})

    @staticmethod
    def execute(
        proxy_id: str, source_id: str | None, target_id: str, reason: str | None
    ) -> _Call[FailoverEvent]:
        body: dict[str, Any] = {
            "proxyId": proxy_id,
            "sourceInstanceId": source_id,
            "targetInstanceId": target_id,
        }
        if reason is not None:
            body["reason"] = reason
        return _Call("POST", "/proxy/failover/execute", FailoverEvent, body)

    @staticmethod
    def complete(
        event_id: str, status: str, error_message: str | None, duration_ms: int | None
    ) -> _Call[FailoverEvent]:
        body: dict[str, Any] = {"status": status}
        if error_message is not None:
            body["errorMessage"] = error_message
        if duration_ms is not None:
            body["durationMs"] = duration_ms
        path = f"/proxy/failover/events/{_p(event_id)}/complete"
        return _Call("PUT", path, FailoverEvent, body)

    @staticmethod
    def redundancy(proxy_id: str) -> _Call[RedundancyStatus]:
        return _Call("GET", f"/proxy/{_p(proxy_id)}/redundancy", RedundancyStatus)

    @staticmethod
    def put_redundancy(proxy_id: str, data: Mapping[str, Any]) -> _Call[RedundancyStatus]:
        return _Call("PUT", f"/proxy/{_p(proxy_id)}/redundancy", RedundancyStatus, _body(data))

    @staticmethod
    def events(
        proxy_id: str,
        limit: int,
        status: EventStatus | str | None,
        event_type: EventType | str | None,
        before: datetime | None,
        cursor: str | None = None,
    ) -> _Call[list[FailoverEvent]]:
        """``cursor``: the ``nextCursor`` of the page before (``failover_events_page``)."""
        params: dict[str, Any] = {"limit": limit, "status": status or "", "type": event_type or ""}
        if before is not None:
            params["before"] = before.isoformat()
        if cursor is not None:
            params["cursor"] = cursor
        path = f"/proxy/{_p(proxy_id)}/failover/events"
        return _Call("GET", path, list[FailoverEvent], params=params)

    @staticmethod
    def events_page(
        proxy_id: str,
        limit: int,
        status: EventStatus | str | None,
        event_type: EventType | str | None,
        cursor: str | None,
    ) -> _Call[Page[FailoverEvent]]:
        listed = _Calls.events(proxy_id, limit, status, event_type, None, cursor)
        return _Call("GET", listed.path, Page[FailoverEvent], params=listed.params)

    @staticmethod
    def proxies() -> _Call[list[ProxySummary]]:
        return _Call("GET", "/proxies", list[ProxySummary])

    @staticmethod
    def route(proxy_id: str) -> _Call[Route]:
        return _Call("GET", f"/proxy/{_p(proxy_id)}/route", Route)

    @staticmethod
    def explain(proxy_id: str) -> _Call[Explanation]:
        return _Call("GET", f"/proxy/{_p(proxy_id)}/explain", Explanation)


def _headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


class FailoverClient:
    """Blocking client: ``FailoverClient("http://127.0.0.1:8080", token=...)``."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url, headers=_headers(token), timeout=timeout, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> FailoverClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, call: _Call[T]) -> T:
        response = self._http.request(call.method, call.path, json=call.json, params=call.params)
        return call.read(response)

    def create_failover_configuration(
        self, proxy_id: str, config: Mapping[str, Any] | None = None
    ) -> FailoverConfig:
        return self._run(_Calls.create_config(proxy_id, config or {}))

    def get_failover_configuration(self, proxy_id: str) -> FailoverConfig | None:
        try:
            return self._run(_Calls.get_config(proxy_id))
        except FailoverError as error:
            if error.code is ErrorCode.CONFIG_NOT_FOUND:
                return None
            raise

    def delete_failover_configuration(self, proxy_id: str) -> None:
        """Delete the proxy with its instances and webhooks (its events and audit rows stay)."""
        self._run(_Calls.delete_config(proxy_id))

    def register_proxy_instance(self, proxy_id: str, instance_data: Mapping[str, Any]) -> Instance:
        return self._run(_Calls.register(proxy_id, instance_data))

    def get_proxy_instances(self, proxy_id: str) -> list[Instance]:
        return self._run(_Calls.instances(proxy_id))

    def get_instance(self, instance_id: str) -> Instance:
        return self._run(_Calls.instance(instance_id))

    def update_instance_health(
        self, instance_id: str, health_status: str, metrics: Mapping[str, Any] | None = None
    ) -> Instance:
        return self._run(_Calls.health(instance_id, health_status, metrics))

    def update_instance(self, instance_id: str, changes: Mapping[str, Any]) -> Instance:
        return self._run(_Calls.update(instance_id, changes))

    def delete_instance(self, instance_id: str) -> None:
        self._run(_Calls.delete(instance_id))

    def record_check_result(self, instance_id: str, result: CheckResult) -> Instance:
        return self._run(_Calls.check(instance_id, result))

    def record_instance_metrics(
        self, instance_id: str, metrics: Mapping[str, Any]
    ) -> StoredMetricSample:
        return self._run(_Calls.record_metrics(instance_id, metrics))

    def get_instance_metrics(self, instance_id: str, limit: int = 100) -> list[StoredMetricSample]:
        return self._run(_Calls.metrics(instance_id, limit))

    def evaluate_failover(self, proxy_id: str) -> Evaluation:
        return self._run(_Calls.evaluate(proxy_id))

    def execute_failover(
        self, proxy_id: str, source_id: str | None, target_id: str, reason: str | None = None
    ) -> FailoverEvent:
        return self._run(_Calls.execute(proxy_id, source_id, target_id, reason))

    def complete_failover_event(
        self,
        event_id: str,
        status: str,
        error_message: str | None = None,
        duration_ms: int | None = None,
    ) -> FailoverEvent:
        return self._run(_Calls.complete(event_id, status, error_message, duration_ms))

    def get_redundancy_status(self, proxy_id: str) -> RedundancyStatus | None:
        try:
            return self._run(_Calls.redundancy(proxy_id))
        except FailoverError as error:
            if error.code is ErrorCode.CONFIG_NOT_FOUND:
                return None
            raise

    def update_redundancy_status(
        self, proxy_id: str, status_data: Mapping[str, Any]
    ) -> RedundancyStatus:
        return self._run(_Calls.put_redundancy(proxy_id, status_data))

    def get_failover_events(
        self,
        proxy_id: str,
        limit: int = 50,
        *,
        status: EventStatus | str | None = None,
        event_type: EventType | str | None = None,
        before: datetime | None = None,
        cursor: str | None = None,
    ) -> list[FailoverEvent]:
        return self._run(_Calls.events(proxy_id, limit, status, event_type, before, cursor))

    def failover_events_page(
        self,
        proxy_id: str,
        limit: int = 50,
        *,
        status: EventStatus | str | None = None,
        event_type: EventType | str | None = None,
        cursor: str | None = None,
    ) -> Page[FailoverEvent]:
        """A page of events, newest first; pass its ``next_cursor`` as ``cursor`` for the next."""
        return self._run(_Calls.events_page(proxy_id, limit, status, event_type, cursor))

    def list_proxies(self) -> list[ProxySummary]:
        return self._run(_Calls.proxies())

    def get_route(self, proxy_id: str) -> Route:
        return self._run(_Calls.route(proxy_id))

    def explain(self, proxy_id: str) -> Explanation:
        return self._run(_Calls.explain(proxy_id))


class AsyncFailoverClient:
    """Asynchronous client: ``async with AsyncFailoverClient(url, token=...) as client``."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url, headers=_headers(token), timeout=timeout, transport=transport
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncFailoverClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _run(self, call: _Call[T]) -> T:
        response = await self._http.request(
            call.method, call.path, json=call.json, params=call.params
        )
        return call.read(response)

    async def create_failover_configuration(
        self, proxy_id: str, config: Mapping[str, Any] | None = None
    ) -> FailoverConfig:
        return await self._run(_Calls.create_config(proxy_id, config or {}))

    async def get_failover_configuration(self, proxy_id: str) -> FailoverConfig | None:
        try:
            return await self._run(_Calls.get_config(proxy_id))
        except FailoverError as error:
            if error.code is ErrorCode.CONFIG_NOT_FOUND:
                return None
            raise

    async def delete_failover_configuration(self, proxy_id: str) -> None:
        """Delete the proxy with its instances and webhooks (its events and audit rows stay)."""
        await self._run(_Calls.delete_config(proxy_id))

    async def register_proxy_instance(
        self, proxy_id: str, instance_data: Mapping[str, Any]
    ) -> Instance:
        return await self._run(_Calls.register(proxy_id, instance_data))

    async def get_proxy_instances(self, proxy_id: str) -> list[Instance]:
        return await self._run(_Calls.instances(proxy_id))

    async def get_instance(self, instance_id: str) -> Instance:
        return await self._run(_Calls.instance(instance_id))

    async def update_instance_health(
        self, instance_id: str, health_status: str, metrics: Mapping[str, Any] | None = None
    ) -> Instance:
        return await self._run(_Calls.health(instance_id, health_status, metrics))

    async def update_instance(self, instance_id: str, changes: Mapping[str, Any]) -> Instance:
        return await self._run(_Calls.update(instance_id, changes))

    async def delete_instance(self, instance_id: str) -> None:
        await self._run(_Calls.delete(instance_id))

    async def record_check_result(self, instance_id: str, result: CheckResult) -> Instance:
        return await self._run(_Calls.check(instance_id, result))

    async def record_instance_metrics(
        self, instance_id: str, metrics: Mapping[str, Any]
    ) -> StoredMetricSample:
        return await self._run(_Calls.record_metrics(instance_id, metrics))

    async def get_instance_metrics(
        self, instance_id: str, limit: int = 100
    ) -> list[StoredMetricSample]:
        return await self._run(_Calls.metrics(instance_id, limit))

    async def evaluate_failover(self, proxy_id: str) -> Evaluation:
        return await self._run(_Calls.evaluate(proxy_id))

    async def execute_failover(
        self, proxy_id: str, source_id: str | None, target_id: str, reason: str | None = None
    ) -> FailoverEvent:
        return await self._run(_Calls.execute(proxy_id, source_id, target_id, reason))

    async def complete_failover_event(
        self,
        event_id: str,
        status: str,
        error_message: str | None = None,
        duration_ms: int | None = None,
    ) -> FailoverEvent:
        return await self._run(_Calls.complete(event_id, status, error_message, duration_ms))

    async def get_redundancy_status(self, proxy_id: str) -> RedundancyStatus | None:
        try:
            return await self._run(_Calls.redundancy(proxy_id))
        except FailoverError as error:
            if error.code is ErrorCode.CONFIG_NOT_FOUND:
                return None
            raise

    async def update_redundancy_status(
        self, proxy_id: str, status_data: Mapping[str, Any]
    ) -> RedundancyStatus:
        return await self._run(_Calls.put_redundancy(proxy_id, status_data))

    async def get_failover_events(
        self,
        proxy_id: str,
        limit: int = 50,
        *,
        status: EventStatus | str | None = None,
        event_type: EventType | str | None = None,
        before: datetime | None = None,
        cursor: str | None = None,
    ) -> list[FailoverEvent]:
        return await self._run(_Calls.events(proxy_id, limit, status, event_type, before, cursor))

    async def failover_events_page(
        self,
        proxy_id: str,
        limit: int = 50,
        *,
        status: EventStatus | str | None = None,
        event_type: EventType | str | None = None,
        cursor: str | None = None,
    ) -> Page[FailoverEvent]:
        """A page of events, newest first; pass its ``next_cursor`` as ``cursor`` for the next."""
        return await self._run(_Calls.events_page(proxy_id, limit, status, event_type, cursor))

    async def list_proxies(self) -> list[ProxySummary]:
        return await self._run(_Calls.proxies())

    async def get_route(self, proxy_id: str) -> Route:
        return await self._run(_Calls.route(proxy_id))

    async def explain(self, proxy_id: str) -> Explanation:
        return await self._run(_Calls.explain(proxy_id))

    async def stream_events(
        self,
        proxy_id: str,
        last_event_id: int | None = None,
        *,
        on_open: Callable[[], None] | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """Follow ``GET /proxy/:id/stream`` from after ``last_event_id`` (None: from now).

        Yields each event as it arrives; ends when the server closes the stream, raises
        ``FailoverError`` for an error answer and ``httpx.TransportError`` when the connection
        fails or stays silent past ``STREAM_READ_TIMEOUT_SECONDS``. Resuming is the caller's:
        pass the ``id`` of the last event it handled. ``on_open`` is called once the server has
        accepted the stream (before any event): the moment to re-read the full state.
        """
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        timeout = httpx.Timeout(10.0, read=STREAM_READ_TIMEOUT_SECONDS)
        path = f"/proxy/{_p(proxy_id)}/stream"
        async with self._http.stream("GET", path, headers=headers, timeout=timeout) as response:
            if response.status_code >= 400:
                await response.aread()
                raise error_from_response(response)
            if on_open is not None:
                on_open()
            fields: dict[str, str] = {}
            async for line in response.aiter_lines():
                if line:
                    name, _, value = line.partition(":")
                    if name:  # a line starting with ':' is a comment (keepalive)
                        fields[name] = value.removeprefix(" ")
                    continue
                event = stream_event(fields)
                fields = {}
                if event is not None:
                    yield event
