"""Another owner's proxy or instance answers exactly like a missing one.

SPEC §7: "another's proxy answers 404 with the code a missing one would get, so existence does not
leak". The code alone is not enough: the message and details must not differ either.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from tests.helpers.api import Api


async def _error_body(api: Api, method: str, path: str, token: str, **kw: Any) -> object:
    response = await api.call(method, path, token, **kw)
    assert response.status_code == 404, response.text
    return response.json()


async def test_other_owners_proxy_and_instance_answer_like_missing_ones(sqlite_api: Api) -> None:
    api = sqlite_api
    alice, bob, admin = api.tokens.alice, api.tokens.bob, api.tokens.admin
    body = {"proxyId": "alices", "instanceData": {"instanceName": "one"}}
    instance = await api.ok("POST", "/proxy/instances", alice, 201, json=body)
    missing_instance = str(uuid.uuid4())

    def as_missing(body: object, real: str, missing: str) -> object:
        return json.loads(json.dumps(body).replace(real, missing))  # the id swapped

    for method, template, kw in [
        ("GET", "/proxy/failover/config/{p}", {}),
        ("GET", "/proxy/{p}/instances", {}),
        ("GET", "/proxy/{p}/redundancy", {}),
        ("GET", "/proxy/{p}/failover/events", {}),
        ("GET", "/proxy/{p}/route", {}),
        ("GET", "/proxy/{p}/explain", {}),
        ("GET", "/proxy/{p}/webhooks", {}),
        ("POST", "/proxy/failover/evaluate", {"json": {"proxyId": "{p}"}}),
    ]:
        kw_for = {k: {"proxyId": "alices"} for k in kw}
        kw_missing = {k: {"proxyId": "nobodys"} for k in kw}
        hidden = await _error_body(api, method, template.format(p="alices"), bob, **kw_for)
        missing = await _error_body(api, method, template.format(p="nobodys"), bob, **kw_missing)
        assert as_missing(hidden, "alices", "nobodys") == missing, template
        # an admin asking about a missing proxy gets the very same body
        by_admin = await _error_body(api, method, template.format(p="nobodys"), admin, **kw_missing)
        assert by_admin == missing, template

    instance_cases: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/proxy/instances/{i}", {}),
        ("PUT", "/proxy/instances/{i}/health", {"json": {"healthStatus": "healthy"}}),
        ("PATCH", "/proxy/instances/{i}", {"json": {"priority": 1}}),
        ("POST", "/proxy/instances/{i}/checks", {"json": {"success": True}}),
        ("POST", "/proxy/instances/{i}/metrics", {"json": {"cpuPercent": 1}}),
        ("DELETE", "/proxy/instances/{i}", {}),
    ]
    for method, template, kw in instance_cases:
        hidden = await _error_body(api, method, template.format(i=instance["id"]), bob, **kw)
        missing = await _error_body(api, method, template.format(i=missing_instance), bob, **kw)
        assert as_missing(hidden, instance["id"], missing_instance) == missing, template
