"""Probes against real sockets: HTTP status rules, keep-alive reuse, framing, timeouts, TCP."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from proxy_failover.adapters.probes import EndpointError, Prober, ProbeTarget, build_target
from proxy_failover.core.model import (
    FailoverConfig,
    HealthCheckSpec,
    HealthCheckType,
    Instance,
)
from tests.helpers.processes import InstanceProcess
from tests.helpers.raw_server import RawServer, response
from tests.helpers.tls_server import self_signed_certificate


def _config(
    kind: HealthCheckType = HealthCheckType.HTTP,
    path: str = "/health",
    expected: str = "200-399",
    timeout: float = 1.0,
) -> FailoverConfig:
    return FailoverConfig(
        proxy_id="p",
        user_id="u",
        health_check_interval_seconds=max(timeout, 1.0),
        health_check_timeout_seconds=timeout,
        health_check=HealthCheckSpec(kind, path, expected),
    )


def _target(endpoint: str, **kwargs: object) -> ProbeTarget:
    instance = Instance(id="i-1", proxy_id="p", user_id="u", instance_name="a", endpoint=endpoint)
    return build_target(instance, _config(**kwargs))  # type: ignore[arg-type]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def prober() -> AsyncIterator[Prober]:
    p = Prober(max_concurrency=50)
    yield p
    await p.aclose()


def test_host_port_endpoint_takes_scheme_of_check_type() -> None:
    target = _target("10.0.0.5:8443", kind=HealthCheckType.HTTPS, path="/ready")
    assert (target.kind, target.host, target.port, target.path) == (
        HealthCheckType.HTTPS,
        "10.0.0.5",
        8443,
        "/ready",
    )
    assert target.host_header == "10.0.0.5:8443"


def test_url_endpoint_keeps_its_scheme_and_gets_path_appended() -> None:
    target = _target("https://edge.example:9000/api/v1/", path="/health")
    assert (target.kind, target.port, target.path, target.host_header) == (
        HealthCheckType.HTTPS,
        9000,
        "/api/v1/health",
        "edge.example:9000",
    )


def test_tcp_check_uses_host_and_port_of_url_endpoint() -> None:
    target = _target("http://[::1]:1935/live", kind=HealthCheckType.TCP)
    assert (target.kind, target.host, target.port) == (HealthCheckType.TCP, "::1", 1935)


def test_connection_key_is_scheme_host_and_port_also_after_a_replace() -> None:
    # made once per target (the pooled path compares it twice per probe); a retry replaces the
    # timeout, and a target with another host must not reuse the pooled connection
    target = _target("https://edge.example:9000/api/v1/")
    assert target.connection_key == ("https", "edge.example", 9000)
    shorter = dataclasses.replace(target, timeout=0.1)
    assert shorter.connection_key == ("https", "edge.example", 9000)
    moved = dataclasses.replace(target, host="other.example", port=9001)
    assert moved.connection_key == ("https", "other.example", 9001)


@pytest.mark.parametrize("endpoint", ["", "host:notaport", "ftp://x:21", "host:70000"])
def test_unusable_endpoint_is_rejected(endpoint: str) -> None:
    with pytest.raises(EndpointError):
        _target(endpoint)


async def test_http_probe_succeeds_and_reuses_one_connection(prober: Prober) -> None:
    async with RawServer() as server:
        target = _target(f"127.0.0.1:{server.port}")
        results = [await prober.probe(target) for _ in range(3)]
    assert all(r.success for r in results)
    assert all(r.latency_ms is not None and r.latency_ms >= 0 for r in results)
    assert server.connections == 1
    assert server.request_lines == ["GET /health HTTP/1.1"] * 3


async def test_status_outside_expected_is_a_failure_with_reason(prober: Prober) -> None:
    async with RawServer(reply=lambda _l: response(503)) as server:
        result = await prober.probe(_target(f"127.0.0.1:{server.port}"))
    assert not result.success
    assert result.error == "unexpected HTTP status 503"


async def test_expected_status_list_is_honoured(prober: Prober) -> None:
    async with RawServer(reply=lambda _l: response(204, b"")) as server:
        ok = await prober.probe(_target(f"127.0.0.1:{server.port}", expected="200,204"))
        strict = await prober.probe(_target(f"127.0.0.1:{server.port}", expected="200"))
    assert ok.success
    assert not strict.success


async def test_connection_refused_is_a_failed_result_not_an_exception(prober: Prober) -> None:
    result = await prober.probe(_target(f"127.0.0.1:{_free_port()}"))
    assert not result.success
    assert result.error == "connection refused"


async def test_silent_server_times_out_within_the_timeout(prober: Prober) -> None:
    async with RawServer(reply=lambda _l: None) as server:
        result = await prober.probe(_target(f"127.0.0.1:{server.port}", timeout=0.1))
    assert not result.success
    assert result.error == "timeout after 0.1s"


async def test_server_closing_idle_connection_is_retried_on_a_fresh_one(prober: Prober) -> None:
    async with RawServer() as server:
        target = _target(f"127.0.0.1:{server.port}")
        assert (await prober.probe(target)).success
        server.drop_connections()
        await asyncio.sleep(0.05)  # let the FIN reach the client before the next probe
        assert (await prober.probe(target)).success
    assert server.connections == 2


async def test_chunked_and_close_delimited_responses_are_read(prober: Prober) -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    async with RawServer(reply=lambda _l: chunked) as server:
        target = _target(f"127.0.0.1:{server.port}")
        assert (await prober.probe(target)).success
        assert (await prober.probe(target)).success
    assert server.connections == 1
    legacy = b"HTTP/1.0 200 OK\r\n\r\nbody until close"
    async with RawServer(reply=lambda _l: legacy, close_after_reply=True) as server:
        target = _target(f"127.0.0.1:{server.port}")
        assert (await prober.probe(target)).success
        assert (await prober.probe(target)).success
    assert server.connections == 2


async def test_garbage_response_is_a_failure(prober: Prober) -> None:
    async with RawServer(reply=lambda _l: b"SSH-2.0-OpenSSH\r\n\r\n") as server:
        result = await prober.probe(_target(f"127.0.0.1:{server.port}"))
    assert not result.success
    assert result.error is not None
    assert result.error.startswith("invalid HTTP response")


async def test_tcp_probe_against_bare_socket(prober: Prober) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    try:
        up = await prober.probe(_target(f"127.0.0.1:{port}", kind=HealthCheckType.TCP))
    finally:
        listener.close()
    down = await prober.probe(_target(f"127.0.0.1:{port}", kind=HealthCheckType.TCP))
    assert up.success
    assert not down.success
    assert down.error == "connection refused"


async def test_probe_of_killed_instance_process_fails(prober: Prober) -> None:
    with InstanceProcess() as instance:
        target = _target(instance.endpoint)
        assert (await prober.probe(target)).success
        instance.kill()
        result = await prober.probe(target)
    assert not result.success
    assert result.error in {"connection refused", "connection reset"}


async def test_peer_closing_an_idle_pooled_connection_is_reported(prober: Prober) -> None:
    lost: list[str] = []
    prober.on_connection_lost = lost.append
    async with RawServer() as server:
        target = _target(f"127.0.0.1:{server.port}")
        assert (await prober.probe(target)).success
        server.drop_connections()
        for _ in range(100):  # the FIN arrives asynchronously
            if lost:
                break
            await asyncio.sleep(0.01)
    assert lost == [target.instance_id]


def _self_signed(tmp_path: Path) -> ssl.SSLContext:
    """A server TLS context with a fresh self-signed certificate for 127.0.0.1."""
    cert_path, key_path = self_signed_certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return context


async def test_https_probe_verifies_certificates_unless_told_not_to(tmp_path: Path) -> None:
    server_tls = _self_signed(tmp_path)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(response(200))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_tls)
    port = server.sockets[0].getsockname()[1]
    target = _target(f"127.0.0.1:{port}", kind=HealthCheckType.HTTPS)
    verifying, trusting = Prober(), Prober(verify_tls=False)
    try:
        refused = await verifying.probe(target)
        accepted = [await trusting.probe(target) for _ in range(2)]
        pooled = trusting.pooled_connections()
    finally:
        await verifying.aclose()
        await trusting.aclose()
        server.close()
        await server.wait_closed()
    assert not refused.success
    assert refused.error is not None
    assert refused.error.startswith("TLS error")
    assert all(r.success for r in accepted)
    assert pooled == 1  # the TLS connection is kept alive for the next probe


# --- Prober.start: probes on a pooled connection, by callback --------------------------------


async def _started(prober: Prober, target: ProbeTarget) -> tuple[bool, asyncio.Future[object]]:
    """``prober.start`` with a future for its one result."""
    answer: asyncio.Future[object] = asyncio.get_running_loop().create_future()

    def on_result(result: object) -> None:
        assert not answer.done(), "a result was delivered twice"
        answer.set_result(result)

    return prober.start(target, on_result), answer


async def test_start_needs_a_pooled_connection_then_reuses_it(prober: Prober) -> None:
    async with RawServer(reply=lambda line: response(200 if "health" in line else 500)) as server:
        target = _target(f"127.0.0.1:{server.port}")
        began, _ = await _started(prober, target)
        assert not began  # nothing pooled yet: the caller must use probe()
        assert (await prober.probe(target)).success
        results = []
        for _ in range(3):
            began, answer = await _started(prober, target)
            assert began
            results.append(await asyncio.wait_for(answer, 5))
        bad_status = _target(f"127.0.0.1:{server.port}", path="/nope")
        began, answer = await _started(prober, bad_status)
        assert began
        failed = await asyncio.wait_for(answer, 5)
    assert all(getattr(r, "success", False) for r in results)
    assert getattr(failed, "error", None) == "unexpected HTTP status 500"
    assert server.connections == 1
    assert len(server.request_lines) == 5


async def test_start_times_out_and_drops_the_connection(prober: Prober) -> None:
    answers = iter([response(200), None])
    async with RawServer(reply=lambda _l: next(answers)) as server:
        target = _target(f"127.0.0.1:{server.port}", timeout=0.1)
        assert (await prober.probe(target)).success
        began, answer = await _started(prober, target)
        assert began
        result = await asyncio.wait_for(answer, 5)
        assert getattr(result, "error", None) == "timeout after 0.1s"
        assert prober.pooled_connections() == 0  # a late answer must not be read as the next
        began, _ = await _started(prober, target)
        assert not began


async def test_start_retries_on_a_fresh_connection_when_the_pooled_one_closes_unanswered(
    prober: Prober,
) -> None:
    answers = iter([response(200), b"", response(200)])  # b"": closed without an answer
    async with RawServer(reply=lambda _l: next(answers)) as server:
        target = _target(f"127.0.0.1:{server.port}")
        assert (await prober.probe(target)).success
        began, answer = await _started(prober, target)
        assert began
        result = await asyncio.wait_for(answer, 5)
    assert getattr(result, "success", False)
    assert server.connections == 2
    assert len(server.request_lines) == 3


async def test_aclose_ends_started_probes_without_a_result() -> None:
    prober = Prober()
    async with RawServer(reply=lambda line: response(200) if "first" in line else None) as server:
        target = _target(f"127.0.0.1:{server.port}", path="/first")
        assert (await prober.probe(target)).success
        silent = build_target(
            Instance(
                id="i-1",
                proxy_id="p",
                user_id="u",
                instance_name="a",
                endpoint=f"127.0.0.1:{server.port}",
            ),
            _config(path="/silent", timeout=0.2),
        )
        began, answer = await _started(prober, silent)
        assert began
        await prober.aclose()
        await asyncio.sleep(0.3)  # past the timeout: a disarmed probe must stay silent
        assert not answer.done()
