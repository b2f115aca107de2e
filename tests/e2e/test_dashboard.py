"""The dashboard at ``/ui`` in a real browser (Debian's headless Chromium through Playwright).

An admin opens ``/ui#token=…`` on the real ``serve`` command, watches a killed instance's failover
arrive without reloading the page, switches over, maintains, drains and enables; an owner who
pastes a token sees the same proxy on a phone-sized screen without any admin control or
health-check detail.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from playwright.async_api import Page, Request, expect

from tests.helpers.api import Tokens, api_settings
from tests.helpers.browser import PHONE, chromium, page_errors
from tests.helpers.live_app import fail_over, live_api, setup_proxy
from tests.helpers.processes import InstanceProcess, wait_for
from tests.helpers.serve import ServeProcess

pytestmark = pytest.mark.slow

#: Generous: two shared cores, a real engine probing real processes.
SEEN_WITHIN_MS = 20_000


async def _register_probed_proxy(url: str, token: str, procs: list[InstanceProcess]) -> list[str]:
    """Proxy ``edge`` with the three real instances, probed twice a second; their ids.

    Probes get the whole interval to answer and three misses to fall: a live instance must not
    fail over on a loaded machine (with 0.1 s and two misses, three of these tests at once on two
    cores failed over from a live edge-0 before the kill). A killed one refuses at once: about
    1.5 s to fall."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as http:

        async def data(method: str, path: str, **kwargs: Any) -> Any:
            response = await http.request(method, path, **kwargs)
            assert response.status_code < 300, response.text
            return response.json()["data"]

        config = {
            "healthCheckIntervalSeconds": 0.5,
            "healthCheckTimeoutSeconds": 0.5,
            "unhealthyThreshold": 3,
            "healthyThreshold": 2,
        }
        await data("POST", "/proxy/failover/config", json={"proxyId": "edge", "config": config})
        ids = []
        for n, proc in enumerate(procs):
            body = {"instanceName": f"edge-{n}", "endpoint": proc.endpoint, "priority": n + 1}
            instance = await data(
                "POST", "/proxy/instances", json={"proxyId": "edge", "instanceData": body}
            )
            ids.append(str(instance["id"]))

        async def active_is_first() -> bool:
            status = await data("GET", "/proxy/edge/redundancy")
            return bool(status["activeInstanceId"] == ids[0] and status["healthyInstances"] == 3)

        await wait_for(active_is_first, within=20)
        return ids


async def _redundancy(url: str, token: str) -> Any:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        response = await http.get(
            "/proxy/edge/redundancy", headers={"Authorization": f"Bearer {token}"}
        )
        return response.json()["data"]


async def _admin_state(url: str, token: str, instance_id: str) -> str:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        response = await http.get(
            f"/proxy/instances/{instance_id}", headers={"Authorization": f"Bearer {token}"}
        )
        return str(response.json()["data"]["adminState"])


async def test_admin_watches_a_failover_live_and_switches_over(
    serve_process: ServeProcess, tokens: Tokens, instances: list[InstanceProcess]
) -> None:
    ids = await _register_probed_proxy(serve_process.url, tokens.alice, instances)
    requests: list[str] = []
    async with chromium() as browser:
        page = await browser.new_page()
        errors = page_errors(page)
        page.on("request", lambda request: requests.append(_request_line(request)))
        await page.goto(f"{serve_process.url}/ui#token={tokens.admin}")

        # Signed in from the fragment, which is gone from the address bar at once.
        await expect(page.locator("#who-role")).to_have_text("admin")
        assert await page.evaluate("location.hash") == ""
        assert await page.evaluate("sessionStorage.getItem('pfo.token')") == tokens.admin

        row = page.locator("#proxies tr[data-proxy=edge]")
        await expect(row).to_contain_text("multi")
        await expect(row.locator(".healthy-count")).to_have_text("3/3")
        await expect(row.locator(".active-name")).to_have_text("edge-0")
        await row.get_by_role("link", name="edge").click()

        await expect(page.locator("#live")).to_have_attribute("data-state", "live")
        await expect(page.locator("#active-name")).to_have_text("edge-0")
        await _mark_page(page)

        instances[0].kill()
        # The stream brings the failover in: same document, no reload, no click.
        await expect(page.locator("#active-name")).to_have_text("edge-1", timeout=SEEN_WITHIN_MS)
        failover = page.locator("#timeline li[data-type=failover]").first
        await expect(failover).to_contain_text("edge-0 → edge-1")
        await expect(failover).to_contain_text("completed")
        await expect(page.locator("#feed li[data-type='instance.unhealthy']")).to_contain_text(
            "edge-0"
        )
        await expect(page.locator("tr[data-instance=edge-0]")).to_contain_text("unhealthy")
        assert await _page_is_marked(page), "the page reloaded"

        # Switch over to edge-2: a confirmation first; cancelling changes nothing.
        switch = page.locator("tr[data-instance=edge-2] button[data-action=switchover]")
        await switch.click()
        await expect(page.locator("#confirm")).to_be_visible()
        await expect(page.locator("#confirm-text")).to_have_text(
            "Switch edge from edge-1 to edge-2?"
        )
        await page.locator("#confirm-cancel").click()
        await expect(page.locator("#confirm")).to_be_hidden()
        assert (await _redundancy(serve_process.url, tokens.admin))["activeInstanceId"] == ids[1]

        await switch.click()
        await page.locator("#confirm-ok").click()
        await expect(page.locator("#active-name")).to_have_text("edge-2", timeout=SEEN_WITHIN_MS)
        switchover = page.locator("#timeline li[data-type=switchover]").first
        await expect(switchover).to_contain_text("edge-1 → edge-2")
        await expect(switchover).to_have_attribute("data-status", "completed")
        assert (await _redundancy(serve_process.url, tokens.admin))["activeInstanceId"] == ids[2]

        # Maintenance on the dead instance, through the same confirmation.
        await page.locator("tr[data-instance=edge-0] button[data-action=maintenance]").click()
        await page.locator("#confirm-ok").click()
        await expect(page.locator("tr[data-instance=edge-0] .admin-state")).to_have_text(
            "maintenance"
        )
        # Drain a backup and enable the dead one again: every admin state, each confirmed.
        await page.locator("tr[data-instance=edge-1] button[data-action=drain]").click()
        await expect(page.locator("#confirm")).to_be_visible()
        await page.locator("#confirm-ok").click()
        await expect(page.locator("tr[data-instance=edge-1] .admin-state")).to_have_text("drain")
        await page.locator("tr[data-instance=edge-0] button[data-action=enabled]").click()
        await page.locator("#confirm-ok").click()
        await expect(page.locator("tr[data-instance=edge-0] .admin-state")).to_have_text("enabled")
        states = {i: await _admin_state(serve_process.url, tokens.admin, i) for i in ids[:2]}
        assert states == {ids[0]: "enabled", ids[1]: "drain"}
        assert (await _redundancy(serve_process.url, tokens.admin))["activeInstanceId"] == ids[2]
        assert await _page_is_marked(page), "the page reloaded"
        assert errors == []

    # The token travelled only in headers: in no URL the browser asked for, nor in the logs.
    assert requests
    assert not [line for line in requests if tokens.admin in line]
    assert tokens.admin not in serve_process.log.read_text()


async def test_owner_on_a_phone_sees_no_admin_controls_and_no_probe_detail(
    sqlite_url: str, tokens: Tokens
) -> None:
    async with live_api(api_settings(sqlite_url), tokens) as api:
        ids = await setup_proxy(api, "cdn", "cdn-a", "cdn-b")
        await fail_over(api, "cdn", None, ids[0])
        failed_check = {"success": False, "error": "timeout"}  # 1 of the 3 that make it fall
        await api.ok("POST", f"/proxy/instances/{ids[1]}/checks", tokens.alice, json=failed_check)
        url = str(api.http.base_url).rstrip("/")
        async with chromium(PHONE) as browser:
            page = await browser.new_page()
            errors = page_errors(page)
            await page.goto(f"{url}/ui")

            # A pasted token that is not a JWT is refused in the page.
            await page.locator("#token-input").fill("not-a-token")
            await page.get_by_role("button", name="Sign in").click()
            await expect(page.locator("#notice")).to_contain_text("not a JWT")

            await page.locator("#token-input").fill(tokens.alice)
            await page.get_by_role("button", name="Sign in").click()
            await expect(page.locator("#who-name")).to_have_text("alice")
            await expect(page.locator("#who-role")).to_have_text("user")
            await page.locator("#proxies").get_by_role("link", name="cdn").click()

            await expect(page.locator("tr[data-instance=cdn-a]")).to_contain_text("active")
            await expect(page.locator("tr[data-instance=cdn-b]")).to_contain_text("healthy")
            await expect(page.locator("tr[data-instance=cdn-b]")).to_contain_text("failing 1/3")
            await expect(page.locator("tr[data-instance=cdn-a]")).not_to_contain_text("failing")
            await expect(page.locator("#explain")).to_contain_text("cdn-a is active")
            await expect(page.locator("#timeline li[data-type=failover]")).to_have_count(1)
            # No control of any kind, no probe detail, not even hidden in the DOM.
            assert await page.locator("button.admin-action").count() == 0
            assert await page.locator("#instances-head th").all_inner_texts() == [
                "Instance",
                "Health",
                "Priority",
                "Weight",
                "Admin state",
                "Failures",
            ]
            # Phone layout: the table's rows are cards, the page is not wider than the screen.
            await expect(page.locator("#instances thead")).to_be_hidden()
            assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]

            # A live change reaches the owner's page too (the stream works for non-admins).
            await api.ok(
                "PUT",
                f"/proxy/instances/{ids[1]}/health",
                tokens.alice,
                json={"healthStatus": "unhealthy"},
            )
            await expect(page.locator("tr[data-instance=cdn-b]")).to_contain_text("unhealthy")
            await expect(page.locator("#feed li[data-type='instance.unhealthy']")).to_contain_text(
                "cdn-b"
            )

            await page.get_by_role("button", name="Sign out").click()
            await expect(page.locator("#signin")).to_be_visible()
            assert await page.evaluate("sessionStorage.getItem('pfo.token')") is None
            assert errors == []


async def test_markup_in_names_is_text_and_another_owner_sees_nothing(
    sqlite_url: str, tokens: Tokens
) -> None:
    hostile = '<img src=x onerror="window.__pwned = 1">'
    async with live_api(api_settings(sqlite_url), tokens) as api:
        ids = await setup_proxy(api, "cdn", "cdn-a", hostile)
        await fail_over(api, "cdn", None, ids[1])
        url = str(api.http.base_url).rstrip("/")
        async with chromium() as browser:
            page = await browser.new_page()
            errors = page_errors(page)
            await page.goto(f"{url}/ui#token={tokens.admin}&proxy=cdn")
            await expect(page.locator("#active-name")).to_have_text(hostile)
            await expect(page.locator("#instances .name").filter(has_text=hostile)).to_have_count(1)
            await expect(page.locator("#timeline")).to_contain_text(f"→ {hostile}")
            assert await page.locator("#main img").count() == 0
            assert await page.evaluate("window.__pwned") is None

            # bob owns nothing: an empty overview, and alice's proxy is "not found" for him.
            await page.get_by_role("button", name="Sign out").click()
            await page.goto(f"{url}/ui/#token={tokens.bob}")  # a typo'd slash: redirected
            await expect(page.locator("#who-name")).to_have_text("bob")
            assert page.url == f"{url}/ui"
            await expect(page.locator("#overview-empty")).to_be_visible()
            await page.goto(f"{url}/ui#token={tokens.bob}&proxy=cdn")
            await expect(page.locator("#notice")).to_contain_text("PROXY_FAILOVER_002")
            await expect(page.locator("#live")).to_have_text("not found")
            assert await page.locator("#instances tbody tr").count() == 0
            assert errors == []


def _request_line(request: Request) -> str:
    return f"{request.method} {request.url}"


async def _mark_page(page: Page) -> None:
    """Tag the live document; a reload would give a fresh one without the tag."""
    await page.evaluate("window.__pfoSameDocument = true")


async def _page_is_marked(page: Page) -> bool:
    return bool(await page.evaluate("window.__pfoSameDocument === true"))
