"""Chaos: the SQLite database's disk fills up under a running app (a small tmpfs of its own).

Writes the disk refuses answer 503/018 with ``Retry-After`` (never a 500), reads go on, and once
space returns writes succeed again by themselves. Nothing the API acknowledged is lost, and every
audit row is written: those the disk refused wait in the backlog and go in once space returns,
without a new request to push them (before: 19 audit rows were lost when SQLite's disk filled).
"""

from __future__ import annotations

import httpx

from proxy_failover.entrypoints.api import create_app
from tests.helpers.api import Api, Tokens, api_settings, in_process
from tests.helpers.full_disk import fill, small_filesystem
from tests.helpers.processes import wait_for

PROXY = "full"
#: Enough rows that some must land on pages the full disk cannot give.
REFUSED_WRITES = 20


async def _register(api: Api, name: str) -> httpx.Response:
    data = {"instanceName": name, "metadata": {"pad": "x" * 2000}}
    body = {"proxyId": PROXY, "instanceData": data}
    return await api.call("POST", "/proxy/instances", api.tokens.admin, json=body)


async def _audited(api: Api) -> list[tuple[str, int]]:
    rows = await api.ok("GET", "/audit?limit=1000", api.tokens.admin)
    return [(row["target"] or "", row["statusCode"]) for row in rows]


async def test_a_full_sqlite_disk_is_503_reads_go_on_and_nothing_acknowledged_is_lost(
    tokens: Tokens,
) -> None:
    with small_filesystem(8192) as folder:
        app = create_app(api_settings(f"sqlite+aiosqlite:///{folder / 'pfo.db'}"))
        async with in_process(app, tokens) as api:
            await api.ok(
                "POST", "/proxy/failover/config", tokens.admin, 201, json={"proxyId": PROXY}
            )
            acknowledged = []
            for n in range(3):
                created = await _register(api, f"before-{n}")
                assert created.status_code == 201, created.text
                acknowledged.append(created.json()["data"]["id"])

            filler = fill(folder)
            for n in range(REFUSED_WRITES):
                refused = await _register(api, f"refused-{n}")
                assert refused.status_code == 503, refused.text
                assert refused.json()["error"]["code"] == "PROXY_FAILOVER_018"
                assert int(refused.headers["Retry-After"]) >= 1
            listed = await api.ok("GET", f"/proxy/{PROXY}/instances", tokens.admin)
            assert sorted(i["id"] for i in listed) == sorted(acknowledged)  # reads go on

            filler.unlink()  # space returns: writes succeed by themselves
            for n in range(3):
                created = await _register(api, f"after-{n}")
                assert created.status_code == 201, created.text
                acknowledged.append(created.json()["data"]["id"])
            listed = await api.ok("GET", f"/proxy/{PROXY}/instances", tokens.admin)
            assert sorted(i["id"] for i in listed) == sorted(acknowledged)

            # Every call's audit row, the refused ones' too, is written without another request
            # to push the backlog (the list is an admin read: it writes no audit row itself).
            expected = 1 + 3 + REFUSED_WRITES + 3

            async def all_audited() -> bool:
                return len(await _audited(api)) == expected

            assert await wait_for(all_audited, within=10)
            audited = await _audited(api)
            written = [target for target, status in audited if status == 201]
            assert len(written) == 1 + len(acknowledged)  # the configuration and each instance
            assert set(acknowledged) <= set(written)
            assert [status for _, status in audited].count(503) == REFUSED_WRITES
