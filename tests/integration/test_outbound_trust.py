"""Instances remember whose authority their endpoint and recovery URL carry (``outbound_trusted``,
read by probes and recovery POSTs at connect time, ``core.outbound``), on SQLite and PostgreSQL:
a non-admin's registration is untrusted, an admin's change of both vouches for them, a non-admin
setting either clears it, a change touching neither keeps it, and a restart reads it back."""

from __future__ import annotations

from typing import Any

from proxy_failover.bootstrap import open_service
from proxy_failover.service import ProxyFailoverService


async def test_outbound_trust_is_stored_follows_who_set_the_addresses_and_survives_a_restart(
    service: ProxyFailoverService, database_url: str
) -> None:
    mine = await service.register_proxy_instance(
        "p",
        "alice",
        {"instanceName": "a", "endpoint": "relay.example:1935"},
        outbound_trusted=False,
    )
    theirs = await service.register_proxy_instance("p", "root", {"instanceName": "b"})
    assert (mine.outbound_trusted, theirs.outbound_trusted) == (False, True)

    async def trusted(instance_id: str) -> bool:
        return (await service.get_instance(instance_id)).outbound_trusted

    steps: list[tuple[dict[str, Any], bool, bool]] = [
        ({"metadata": {"k": 1}}, False, False),  # neither address: kept (untrusted)
        ({"endpoint": "relay2.example:1935"}, True, True),  # an admin set the only address
        ({"priority": 5}, False, True),  # neither address: kept (trusted)
        ({"recoveryUrl": "https://ops.example/restart"}, False, False),  # a non-admin's URL
        ({"endpoint": "relay3.example:1935"}, True, False),  # the non-admin's URL is still there
        (
            {"endpoint": "relay4.example:1935", "recoveryUrl": "https://ops.example/r2"},
            True,
            True,
        ),  # an admin set both
    ]
    for changes, by_admin, expected in steps:
        updated = await service.update_instance(
            mine.id, "alice", changes, outbound_trusted=by_admin
        )
        assert updated.outbound_trusted is expected, changes
        assert await trusted(mine.id) is expected, changes

    await service.update_instance(
        theirs.id, "alice", {"endpoint": "x.example:1"}, outbound_trusted=False
    )
    async with open_service(database_url, migrate=False) as restarted:
        assert (await restarted.get_instance(mine.id)).outbound_trusted is True
        assert (await restarted.get_instance(theirs.id)).outbound_trusted is False
        listed = {i.id: i.outbound_trusted for i in await restarted.get_proxy_instances("p")}
    assert listed == {mine.id: True, theirs.id: False}
