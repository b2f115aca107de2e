"""Input at the edge: what a client can send must never break later reads."""

from __future__ import annotations

from starlette.responses import JSONResponse

from tests.helpers.api import Api

PROXY = "qa-input"


async def test_lone_surrogates_are_refused_and_never_stored(sqlite_api: Api) -> None:
    """A ``\\ud800`` escape parses to a string UTF-8 cannot encode: once stored, every listing of
    the proxy answered 500. It is refused with 400/001 wherever it appears; real pairs pass."""
    api = sqlite_api
    admin = api.tokens.admin
    await api.ok("POST", "/proxy/failover/config", admin, 201, json={"proxyId": PROXY})
    headers = {"Content-Type": "application/json"}
    for raw in [
        '{"proxyId":"qa-input","instanceData":{"instanceName":"a","metadata":{"s":"\\ud800"}}}',
        '{"proxyId":"qa-input","instanceData":{"instanceName":"b","metadata":{"\\uDC00":1}}}',
        '{"proxyId":"qa-input","instanceData":{"instanceName":"c\\udfff"}}',
    ]:
        response = await api.call("POST", "/proxy/instances", admin, content=raw, headers=headers)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "PROXY_FAILOVER_001"
    hook = '{"url":"http://127.0.0.1:9/h","secret":"0123456789abcdef\\ud800"}'
    response = await api.call(
        "POST", f"/proxy/{PROXY}/webhooks", admin, content=hook, headers=headers
    )
    assert response.status_code == 400, response.text

    emoji = '{"s":"\\ud83d\\ude00"}'  # a real surrogate pair: one character, valid
    pair = '{"proxyId":"qa-input","instanceData":{"instanceName":"d","metadata":' + emoji + "}}"
    response = await api.call("POST", "/proxy/instances", admin, content=pair, headers=headers)
    assert response.status_code == 201, response.text
    listed = await api.ok("GET", f"/proxy/{PROXY}/instances", admin)
    assert [(i["instanceName"], i["metadata"]) for i in listed] == [("d", {"s": "\U0001f600"})]


async def test_a_trailing_slash_is_an_unknown_route_not_a_redirect(sqlite_api: Api) -> None:
    """Starlette redirected ``/proxies/`` with a bodiless 307; every error has the JSON body."""
    api = sqlite_api
    admin = api.tokens.admin
    for method, path in [
        ("GET", "/proxies/"),
        ("GET", "/proxy/failover/config/"),
        ("POST", "/proxy/instances/"),
        ("GET", f"/proxy/{PROXY}/redundancy/"),
    ]:
        response = await api.call(method, path, admin, json={})
        assert response.status_code == 404, (path, response.status_code)
        assert response.json()["error"]["code"] == "PROXY_FAILOVER_020"
    assert (await api.call("GET", "/proxies", admin)).status_code == 200


async def test_nul_characters_are_refused_on_both_databases(api: Api) -> None:
    """PostgreSQL text cannot hold NUL: a ``\\u0000`` in a reason, an error message, a check's
    error or a webhook secret was a 500 there (and stored on SQLite). Now 400/001 on both."""
    admin = api.tokens.admin
    proxy = "qa-nul"
    await api.ok("POST", "/proxy/failover/config", admin, 201, json={"proxyId": proxy})
    one = await api.ok(
        "POST",
        "/proxy/instances",
        admin,
        201,
        json={"proxyId": proxy, "instanceData": {"instanceName": "one"}},
    )
    headers = {"Content-Type": "application/json"}
    for method, path, raw in [
        ("POST", f"/proxy/instances/{one['id']}/checks", '{"success":false,"error":"x\\u0000"}'),
        (
            "POST",
            "/proxy/failover/execute",
            '{"proxyId":"qa-nul","targetInstanceId":"' + one["id"] + '","reason":"r\\u0000"}',
        ),
        (
            "POST",
            f"/proxy/{proxy}/webhooks",
            '{"url":"http://h/","secret":"%s\\u0000"}' % ("s" * 16),
        ),
        ("PATCH", f"/proxy/instances/{one['id']}", '{"metadata":{"k\\u0000":"v"}}'),
    ]:
        response = await api.call(method, path, admin, content=raw, headers=headers)
        assert response.status_code == 400, (path, response.text)
        assert response.json()["error"]["code"] == "PROXY_FAILOVER_001"
    instances = await api.ok("GET", f"/proxy/{proxy}/instances", admin)
    assert [(i["lastError"], i["metadata"]) for i in instances] == [(None, {})]


async def test_refused_json_is_400_on_bodies_whose_fields_are_all_optional(sqlite_api: Api) -> None:
    """PATCH of an instance and PUT redundancy accepted malformed JSON, NaN or over-deep nesting
    as an empty body (200 no-op, or 400/014 "must not be empty"); 401/403 still come first."""
    api = sqlite_api
    admin, alice = api.tokens.admin, api.tokens.alice
    data = {"proxyId": "qa-refused", "instanceData": {"instanceName": "one"}}
    one = await api.ok("POST", "/proxy/instances", alice, 201, json=data)
    headers = {"Content-Type": "application/json"}
    deep = "[" * 40 + "]" * 40
    for method, path in [
        ("PATCH", f"/proxy/instances/{one['id']}"),
        ("PUT", "/proxy/qa-refused/redundancy"),
    ]:
        for raw in ["{bad", '{"priority":NaN}', deep]:
            response = await api.call(method, path, admin, content=raw, headers=headers)
            assert response.status_code == 400, (path, raw, response.text)
            assert response.json()["error"]["code"] == "PROXY_FAILOVER_001"
            assert response.json()["error"]["message"].startswith("malformed JSON body")
        assert (
            await api.call(method, path, None, content="{bad", headers=headers)
        ).status_code == 401
    refused = await api.call(
        "PUT", "/proxy/qa-refused/redundancy", alice, content="{bad", headers=headers
    )
    assert refused.status_code == 403
    unchanged = await api.ok("GET", f"/proxy/instances/{one['id']}", alice)
    assert unchanged["updatedAt"] == one["updatedAt"]


async def test_webhook_ids_that_are_not_uuids_find_nothing_on_both_databases(api: Api) -> None:
    """A NUL in a subscription or delivery id reached PostgreSQL and failed there (500)."""
    admin = api.tokens.admin
    await api.ok("POST", "/proxy/failover/config", admin, 201, json={"proxyId": "qa-hook-ids"})
    for bad in ["a%00b", "nope"]:
        for method, path in [
            ("DELETE", f"/proxy/qa-hook-ids/webhooks/{bad}"),
            ("POST", f"/proxy/qa-hook-ids/webhooks/deliveries/{bad}/redeliver"),
        ]:
            status, code = await api.error(method, path, admin)
            assert (status, code) == (404, "PROXY_FAILOVER_020"), path


async def test_the_413_body_is_rendered_like_every_other_error(sqlite_api: Api) -> None:
    api = sqlite_api
    big = b'{"proxyId":"' + b"x" * (65 * 1024) + b'"}'
    headers = {"Content-Type": "application/json"}
    response = await api.call(
        "POST", "/proxy/failover/config", api.tokens.admin, content=big, headers=headers
    )
    assert response.status_code == 413
    expected = JSONResponse(response.json()).body
    assert response.content == expected
    assert response.headers["content-type"] == "application/json"


async def test_before_at_the_ends_of_the_calendar_is_400_not_500(sqlite_api: Api) -> None:
    api = sqlite_api
    admin = api.tokens.admin
    await api.ok("POST", "/proxy/failover/config", admin, 201, json={"proxyId": "qa-before"})
    path = "/proxy/qa-before/failover/events"
    for before in ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"]:
        status, code = await api.error("GET", path, admin, params={"before": before})
        assert (status, code) == (400, "PROXY_FAILOVER_001"), before
    assert await api.ok("GET", path, admin, params={"before": "0001-01-01T00:00:00Z"}) == []
