"""The seed's example flow through the Python library, printing each step.

Run: .venv/bin/python examples/quickstart.py [DATABASE_URL]
(default: its own SQLite file, proxy-failover-quickstart.db in the temporary directory, never the
server's ./proxy-failover.db: the example leaves a redundancy override behind). Safe to run again
on the same database: existing instances are reused, and a second run finds no failover due.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from proxy_failover import open_service
from proxy_failover.core.errors import ErrorCode, FailoverError
from proxy_failover.core.model import Instance
from proxy_failover.service import ProxyFailoverService

PROXY_ID = "proxy-123"
USER_ID = "user-456"
DEFAULT_URL = f"sqlite+aiosqlite:///{Path(tempfile.gettempdir()) / 'proxy-failover-quickstart.db'}"


async def register(
    service: ProxyFailoverService, name: str, priority: int, say: Callable[[str], None]
) -> Instance:
    data = {"instanceName": name, "priority": priority, "weight": 100}
    try:
        instance = await service.register_proxy_instance(PROXY_ID, USER_ID, data)
    except FailoverError as error:
        if error.code is not ErrorCode.DUPLICATE_INSTANCE_NAME:
            raise
        existing = await service.get_proxy_instances(PROXY_ID)
        instance = next(i for i in existing if i.instance_name == name)
        say(f"   {name} is already registered (id {instance.id})")
        return instance
    say(f"   registered {name} (id {instance.id}, priority {instance.priority})")
    return instance


async def main(url: str = DEFAULT_URL, say: Callable[[str], None] = print) -> None:
    async with open_service(url) as service:
        say(f"proxy-failover quickstart on {url}")

        say("1. Create the failover configuration")
        config = await service.create_failover_configuration(
            PROXY_ID,
            USER_ID,
            {"failoverStrategy": "priority", "enableAutoFailover": True, "unhealthyThreshold": 3},
        )
        say(
            f"   {config.proxy_id}: strategy={config.failover_strategy.value}, "
            f"unhealthyThreshold={config.unhealthy_threshold}, "
            f"autoFailover={'on' if config.enable_auto_failover else 'off'}, owner={config.user_id}"
        )

        say("2. Register two instances")
        instance1 = await register(service, "proxy-instance-1", 100, say)
        await register(service, "proxy-instance-2", 200, say)

        say("3. Report proxy-instance-1 healthy, with metrics")
        instance1 = await service.update_instance_health(
            instance1.id, "healthy", {"cpuPercent": 45, "memoryPercent": 60}
        )
        say(f"   proxy-instance-1 is {instance1.health_status.value}")

        say("4. Evaluate failover")
        evaluation = await service.evaluate_failover(PROXY_ID, USER_ID)
        say(
            f"   shouldFailover={evaluation.should_failover} ({evaluation.reason_code.value}): "
            f"{evaluation.reason}"
        )

        if evaluation.should_failover and evaluation.target_instance_id is not None:
            say("5. Execute the failover, then complete it")
            event = await service.execute_failover(
                PROXY_ID,
                USER_ID,
                evaluation.source_instance_id,
                evaluation.target_instance_id,
                evaluation.reason,
            )
            say(
                f"   event {event.id}: {event.event_type.value} {event.status.value} "
                f"(epoch {event.epoch})"
            )
            done = await service.complete_failover_event(event.id, "completed", None, 1500)
            say(f"   event {done.id}: {done.status.value} in {done.duration_ms} ms")
        else:
            say("5. No failover due: nothing to execute")

        status = await service.get_redundancy_status(PROXY_ID)
        assert status is not None
        say("6. Redundancy status (computed)")
        say(
            f"   active={status.active_instance_id}, level={status.redundancy_level.value}, "
            f"healthy={status.healthy_instances}/{status.total_instances}, "
            f"degraded={status.is_degraded}, epoch={status.epoch}"
        )

        say("7. Override the redundancy status (the seed's PUT; kept until the next recompute)")
        override = await service.update_redundancy_status(
            PROXY_ID,
            USER_ID,
            {
                "totalInstances": 2,
                "healthyInstances": 2,
                # must be the current active instance: the pointer only moves by execute
                "activeInstanceId": status.active_instance_id,
                "redundancyLevel": "dual",
                "isDegraded": False,
            },
        )
        say(
            f"   overridden={override.overridden}, healthy={override.healthy_instances}/"
            f"{override.total_instances}, degraded={override.is_degraded}"
        )

        say("8. Failover events, newest first")
        for item in await service.get_failover_events(PROXY_ID, 10):
            when = item.created_at.isoformat().replace("+00:00", "Z")
            say(
                f"   {when} {item.event_type.value} {item.status.value} "
                f"-> {item.target_instance_id} ({item.reason})"
            )
        say("done")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_URL))
