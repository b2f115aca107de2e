"""The audit log over HTTP: every mutating call (who, what, target, result, when), admins only."""

from __future__ import annotations

import io
import json
import logging
import re

import structlog

from proxy_failover.entrypoints.logs import bound_request_id, configure_logging
from tests.helpers.api import Api
from tests.helpers.live_app import fail_over, setup_proxy

PROXY = "edge-audit"
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


async def test_mutating_calls_are_audited_with_caller_target_and_result(api: Api) -> None:
    alice, admin = api.tokens.alice, api.tokens.admin
    (first,) = await setup_proxy(api, PROXY, "edge-a")
    done = await fail_over(api, PROXY, None, first)
    conflict = await api.call(
        "POST",
        "/proxy/failover/execute",
        admin,
        json={"proxyId": PROXY, "sourceInstanceId": None, "targetInstanceId": first},
        headers={"X-Request-ID": "req-42"},
    )
    assert conflict.status_code == 409
    assert conflict.headers["x-request-id"] == "req-42"
    await api.call("GET", f"/proxy/{PROXY}/instances", alice)  # reads are not audited
    await api.call("DELETE", "/proxy/instances/not-there", None)  # anonymous, refused
    too_big = await api.call("POST", "/proxy/failover/config", alice, content=b"{" * 70_000)
    assert too_big.status_code == 413

    entries = await api.ok("GET", f"/audit?proxyId={PROXY}", admin)
    actions = [(e["actor"], e["action"], e["result"]) for e in reversed(entries)]
    assert actions == [
        ("alice", "POST /proxy/failover/config", "success"),
        ("alice", "POST /proxy/instances", "success"),
        ("alice", "PUT /proxy/instances/{instanceId}/health", "success"),
        ("root", "POST /proxy/failover/execute", "success"),
        ("root", "PUT /proxy/failover/events/{eventId}/complete", "success"),
        ("root", "POST /proxy/failover/execute", "PROXY_FAILOVER_010"),
    ]
    newest = entries[0]
    assert newest["statusCode"] == 409
    assert newest["requestId"] == "req-42"
    assert newest["target"] == first
    assert ISO_Z.match(newest["occurredAt"])
    complete = entries[1]
    assert complete["target"] == done["id"]
    health = entries[3]
    assert health["target"] == first
    assert health["proxyId"] == PROXY  # learnt from the response for instance routes

    everything = await api.ok("GET", "/audit?limit=1000", admin)
    # refused before authentication ran (401, 413): the caller is not known, so no row at all
    assert [e for e in everything if e["actor"] == "anonymous"] == []
    assert len(await api.ok("GET", "/audit?limit=2", admin)) == 2


async def test_unauthenticated_or_foreign_requests_never_write_into_a_proxys_audit_trail(
    api: Api,
) -> None:
    """5,217 anonymous POSTs once wrote 5,217 rows filed under the proxyId their bodies named."""
    admin, bob = api.tokens.admin, api.tokens.bob
    await setup_proxy(api, PROXY, "edge-a")  # alice's
    before = await api.ok("GET", "/audit?limit=1000", admin)
    body = {"proxyId": PROXY, "config": {"unhealthyThreshold": 5}}
    for _ in range(20):
        assert (
            await api.call("POST", "/proxy/failover/config", None, json=body)
        ).status_code == 401
        forged = await api.call("POST", "/proxy/failover/config", "not-a-jwt", json=body)
        assert forged.status_code == 401
    after_anonymous = await api.ok("GET", "/audit?limit=1000", admin)
    assert len(after_anonymous) == len(before)

    # bob may not touch alice's proxy: his refused attempt is audited, but not under her proxy
    assert (await api.call("POST", "/proxy/failover/config", bob, json=body)).status_code == 404
    filed = await api.ok("GET", f"/audit?proxyId={PROXY}", admin)
    assert [e for e in filed if e["actor"] == "bob"] == []
    everything = await api.ok("GET", "/audit?limit=1000", admin)
    (attempt,) = [e for e in everything if e["actor"] == "bob"]
    assert (attempt["proxyId"], attempt["statusCode"]) == (None, 404)


async def test_audit_log_is_for_admins_only(api: Api) -> None:
    assert await api.error("GET", "/audit", None) == (401, "PROXY_FAILOVER_015")
    assert await api.error("GET", "/audit", api.tokens.alice) == (403, "PROXY_FAILOVER_016")
    for bad in ("limit=0", "limit=1001", "limit=x", "proxyId=bad%20id"):
        assert await api.error("GET", f"/audit?{bad}", api.tokens.admin) == (
            400,
            "PROXY_FAILOVER_001",
        )


def test_logs_are_json_lines_carrying_the_request_id() -> None:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    uvicorn_loggers = [logging.getLogger(n) for n in ("uvicorn", "uvicorn.error", "uvicorn.access")]
    saved_uvicorn = [(u.handlers[:], u.propagate) for u in uvicorn_loggers]
    buffer = io.StringIO()
    try:
        configure_logging("info", stream=buffer)
        with bound_request_id("req-7"):
            logging.getLogger("proxy_failover.test").warning("moved %s", "edge-a")
        logging.getLogger("proxy_failover.test").info("outside")
        logging.getLogger("proxy_failover.test").debug("below the level")
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        for logger, (handlers, propagate) in zip(uvicorn_loggers, saved_uvicorn, strict=True):
            logger.handlers[:] = handlers
            logger.propagate = propagate
        structlog.reset_defaults()
    first, second = (json.loads(line) for line in buffer.getvalue().splitlines())
    assert first["event"] == "moved edge-a"
    assert first["request_id"] == "req-7"
    assert (first["level"], first["logger"]) == ("warning", "proxy_failover.test")
    assert first["timestamp"].endswith("Z")
    assert "request_id" not in second
