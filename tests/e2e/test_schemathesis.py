"""Property-based API testing with schemathesis against the app's own OpenAPI document.

The app runs in this process under uvicorn (a thread, a real socket, its lifespan on a SQLite
file); schemathesis generates valid and invalid requests for every operation and checks: no server
error, documented status codes and content types, and bodies that match the documented schemas.
Bounded (few examples per operation) so it stays well under a minute.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from proxy_failover.config import Settings
from proxy_failover.entrypoints.api import create_app
from tests.helpers.api import SECRET, Tokens
from tests.helpers.processes import free_port

MAX_EXAMPLES = 6
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]

# The document is the app's own; building the app touches no database. The live event stream
# (SSE) never ends by design, so it is left to its own tests.
schema = schemathesis.openapi.from_dict(
    create_app(Settings(database_url="sqlite+aiosqlite:///unused.db", jwt_secret=SECRET)).openapi()
).exclude(path_regex=r"/stream$")


@pytest.fixture(scope="module")
def live_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """uvicorn serving the app on a fresh SQLite file, with one owned proxy to find."""
    path: Path = tmp_path_factory.mktemp("schemathesis") / "pfo.db"
    app = create_app(Settings(database_url=f"sqlite+aiosqlite:///{path}", jwt_secret=SECRET))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive(), "uvicorn stopped during start-up"
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    url = f"http://127.0.0.1:{port}"
    tokens = Tokens.signed_with(SECRET)
    headers = {"Authorization": f"Bearer {tokens.alice}"}
    body = {"proxyId": "proxy-123", "instanceData": {"instanceName": "edge-a"}}
    assert httpx.post(f"{url}/proxy/instances", json=body, headers=headers).status_code == 201
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_conforms_to_its_openapi_document(case: Any, live_url: str) -> None:
    token = Tokens.signed_with(SECRET).admin
    case.call_and_validate(
        base_url=live_url,
        headers={"Authorization": f"Bearer {token}"},
        checks=CHECKS,
        timeout=10,
    )
