"""Bodies that are not UTF-8 JSON never reach storage, so no stored value can make a read fail.

Each vector was a 500 that saved the row (raw surrogate bytes in metadata: every later read of the
proxy answered 500) or carried ``\\u0000``/``\\ud800`` past the checks as UTF-16/UTF-32.
"""

from __future__ import annotations

import pytest

from proxy_failover.core.errors import ErrorCode, FailoverError
from proxy_failover.service import ProxyFailoverService
from tests.helpers.api import Api

PROXY = "hostile"
JSON = {"Content-Type": "application/json"}


async def _proxy_with_one_instance(api: Api) -> str:
    admin = api.tokens.admin
    await api.ok("POST", "/proxy/failover/config", admin, 201, json={"proxyId": PROXY})
    body = {"proxyId": PROXY, "instanceData": {"instanceName": "one"}}
    created = await api.ok("POST", "/proxy/instances", admin, 201, json=body)
    return str(created["id"])


async def _assert_refused(api: Api, method: str, path: str, raw: bytes, **headers: str) -> None:
    response = await api.call(
        method, path, api.tokens.admin, content=raw, headers={**JSON, **headers}
    )
    assert response.status_code == 400, (path, raw[:40], response.text)
    assert response.json()["error"]["code"] == "PROXY_FAILOVER_001"


async def test_bodies_that_are_not_utf8_json_are_refused_and_nothing_is_stored(api: Api) -> None:
    instance_id = await _proxy_with_one_instance(api)
    surrogate_bytes = b"\xed\xa0\x80"  # a lone surrogate encoded as if it were UTF-8
    register = '{"proxyId":"hostile","instanceData":{"instanceName":"two","metadata":{"s":"%s"}}}'
    vectors: list[tuple[str, str, bytes]] = [
        ("POST", "/proxy/instances", (register % "x").encode()[:-5] + surrogate_bytes + b'"}}}'),
        (
            "PATCH",
            f"/proxy/instances/{instance_id}",
            b'{"metadata":{"k":"' + surrogate_bytes + b'"}}',
        ),
        ("POST", "/proxy/instances", (register % "\\ud800").encode("utf-16")),
        ("POST", "/proxy/instances", (register % "\\ud800").encode("utf-16-le")),
        ("POST", "/proxy/instances", (register % "\\u0000").encode("utf-32")),
        (
            "POST",
            f"/proxy/instances/{instance_id}/checks",
            '{"success":false,"error":"x\\u0000"}'.encode("utf-16-be"),
        ),
        (
            "POST",
            f"/proxy/instances/{instance_id}/checks",
            '{"success":false,"error":"x\\ud800"}'.encode("utf-32-le"),
        ),
    ]
    for method, path, raw in vectors:
        await _assert_refused(api, method, path, raw)

    listed = await api.ok("GET", f"/proxy/{PROXY}/instances", api.tokens.admin)
    assert [(i["instanceName"], i["metadata"], i["lastError"]) for i in listed] == [
        ("one", {}, None)
    ]
    one = await api.ok("GET", f"/proxy/instances/{instance_id}", api.tokens.admin)
    assert one["consecutiveFailures"] == 0


async def test_a_charset_other_than_utf8_is_refused_even_for_plain_ascii(api: Api) -> None:
    instance_id = await _proxy_with_one_instance(api)
    body = b'{"success":false,"error":"plain"}'
    path = f"/proxy/instances/{instance_id}/checks"
    for content_type in ("application/json; charset=utf-16", 'application/json;charset="latin-1"'):
        await _assert_refused(api, "POST", path, body, **{"Content-Type": content_type})
    accepted = await api.call(
        "POST",
        path,
        api.tokens.admin,
        content=body,
        headers={"Content-Type": "application/json; charset=UTF-8"},
    )
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["data"]["consecutiveFailures"] == 1


@pytest.mark.parametrize(
    "metadata",
    [{"s": "\ud800"}, {"\udc00": 1}, {"list": ["ok", "\x00"]}, {"deep": {"er": "a\udfffb"}}],
)
async def test_the_library_refuses_unstorable_strings_before_writing(
    service: ProxyFailoverService, metadata: dict[str, object]
) -> None:
    """The same rule holds for library callers, who never pass through the HTTP parser."""
    with pytest.raises(FailoverError) as refused:
        await service.register_proxy_instance(
            "lib", "owner", {"instanceName": "one", "metadata": metadata}
        )
    assert refused.value.code is ErrorCode.INVALID_INPUT
    assert await service.get_failover_configuration("lib") is None
    with pytest.raises(FailoverError) as refused_name:
        await service.register_proxy_instance("lib", "owner", {"instanceName": "x\ud800"})
    assert refused_name.value.code is ErrorCode.INVALID_INPUT
