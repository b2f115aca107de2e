"""QA regression: a signed token whose ``sub`` holds a control character is 401, not a 500."""

from __future__ import annotations

import time

import jwt

from tests.e2e.conftest import SECRET, Api


async def test_sub_with_control_characters_is_refused(api: Api) -> None:
    """A NUL in ``sub`` reached PostgreSQL as a user id and failed there (500/019)."""
    for sub in ["a\x00b", "tab\there", "line\nbreak"]:
        token = jwt.encode({"sub": sub, "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
        for method, path, kw in [
            ("GET", "/proxies", {}),
            ("POST", "/proxy/failover/config", {"json": {"proxyId": "qa-sub"}}),
        ]:
            response = await api.call(method, path, token, **kw)
            assert response.status_code == 401, (sub, path, response.text)
            assert response.json()["error"]["code"] == "PROXY_FAILOVER_015"
    fine = jwt.encode(
        {"sub": "ünïcode user", "exp": int(time.time()) + 60}, SECRET, algorithm="HS256"
    )
    assert (await api.call("GET", "/proxies", fine)).status_code == 200
