"""A separate process in the cross-process race: fires concurrent executes when told to go.

Usage: python -m tests.helpers.race_worker DB_URL PROXY_ID SOURCE_ID GO_FILE TARGET_ID...
Prints "ready", waits for GO_FILE to exist, then prints one JSON line: the outcome per target
("ok" or the error code).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from proxy_failover.bootstrap import open_service
from proxy_failover.core.errors import FailoverError


async def race(url: str, proxy_id: str, source: str, go_file: Path, targets: list[str]) -> None:
    async with open_service(url, migrate=False, pool_size=len(targets)) as service:
        await service.get_redundancy_status(proxy_id)  # connect before the start line
        print("ready", flush=True)
        deadline = time.monotonic() + 30
        while not await asyncio.to_thread(go_file.exists):
            if time.monotonic() > deadline:
                raise SystemExit("no go signal")
            await asyncio.sleep(0.005)

        async def one(target: str) -> str:
            try:
                await service.execute_failover(proxy_id, "racer", source, target, "race")
            except FailoverError as error:
                return error.code.value
            return "ok"

        outcomes = await asyncio.gather(*(one(t) for t in targets))
    print(json.dumps(outcomes), flush=True)


if __name__ == "__main__":
    url, proxy_id, source, go, *targets = sys.argv[1:]
    asyncio.run(race(url, proxy_id, source, Path(go), targets))
