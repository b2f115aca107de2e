"""The long-lived streams of ``bench/dataplane.py`` in a process of their own, as real clients
would be: the benchmark's own event loop (the open-loop load, the event client) does not delay
when a stream notices a close or reconnects.

Run by ``_dataplane_scenarios.StreamClients``: ``python bench/_stream_clients.py PORT COUNT
RECONNECT`` prints ``ready`` and the relay of each stream's first line (JSON) once every stream
has its first line, and on ``stop`` (stdin) prints each stream's lines, closes and connects as
one JSON line and exits.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys

from _dataplane_load import Stream


async def main(port: int, count: int, reconnect: bool) -> None:
    gc.collect()
    gc.freeze()  # nothing here may pause the streams for a full collection
    streams = [Stream(port, reconnect=reconnect) for _ in range(count)]
    for stream in streams:
        stream.start()
    for _ in range(1000):  # every stream answered, or 10 s: the scenario says what is missing
        if all(stream.lines for stream in streams):
            break
        await asyncio.sleep(0.01)
    # Which relay each stream's first line came from: the scenario checks they start where it
    # expects (a reloaded nginx's previous worker still accepts for a while).
    print("ready", json.dumps([stream.lines[0][1] if stream.lines else None for stream in streams]))
    sys.stdout.flush()
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await asyncio.gather(*(stream.stop() for stream in streams))
    report = [
        {"lines": stream.lines, "closes": stream.closes, "connects": stream.connects}
        for stream in streams
    ]
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "reconnect"))
