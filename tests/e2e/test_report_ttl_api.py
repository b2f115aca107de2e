"""``healthReportTtlSeconds`` over HTTP on both databases: stored, returned by the config
endpoints, null turns it off, out-of-range values are 400/001 and change nothing."""

from __future__ import annotations

from tests.helpers.api import Api

PROXY = "ttl-proxy"


async def test_the_ttl_is_stored_returned_and_checked(api: Api) -> None:
    alice = api.tokens.alice
    body = {"proxyId": PROXY, "config": {}}
    created = await api.ok("POST", "/proxy/failover/config", alice, 201, json=body)
    assert created["healthReportTtlSeconds"] is None  # off by default

    for bad in (0, 0.5, 86401, "30", True):
        body = {"proxyId": PROXY, "config": {"healthReportTtlSeconds": bad}}
        status, code = await api.error("POST", "/proxy/failover/config", alice, json=body)
        assert (status, code) == (400, "PROXY_FAILOVER_001"), bad
    got = await api.ok("GET", f"/proxy/failover/config/{PROXY}", alice)
    assert got["healthReportTtlSeconds"] is None  # refused input changed nothing

    for good in (1, 45.5, 86400):
        body = {"proxyId": PROXY, "config": {"healthReportTtlSeconds": good}}
        saved = await api.ok("POST", "/proxy/failover/config", alice, 201, json=body)
        assert saved["healthReportTtlSeconds"] == good
        got = await api.ok("GET", f"/proxy/failover/config/{PROXY}", alice)
        assert got["healthReportTtlSeconds"] == good

    body = {"proxyId": PROXY, "config": {"healthReportTtlSeconds": None}}
    saved = await api.ok("POST", "/proxy/failover/config", alice, 201, json=body)
    assert saved["healthReportTtlSeconds"] is None
