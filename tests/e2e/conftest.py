"""API fixtures: the app on a real database (in-process httpx, lifespan run), tokens, live servers.

``api`` runs once on SQLite and once on PostgreSQL (``database_url`` from tests/conftest.py).
``serve_process`` starts the real ``proxy-failover serve`` command on a free port; ``instances``
three real instance servers (HTTP 200 on ``/``, killed at teardown).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from proxy_failover.entrypoints.api import create_app
from proxy_failover.store.repository import Store
from tests.helpers.api import SECRET, Api, Tokens, api_settings, in_process
from tests.helpers.notifications import Repositories, repositories
from tests.helpers.processes import InstanceProcess
from tests.helpers.serve import ServeProcess, start_serve, stop_serve


@pytest.fixture(scope="session")
def tokens() -> Tokens:
    return Tokens.signed_with(SECRET)


@pytest.fixture
async def api(database_url: str, tokens: Tokens) -> AsyncIterator[Api]:
    """The whole app (lifespan included) on a fresh database, called in-process."""
    app = create_app(api_settings(database_url))
    async with in_process(app, tokens) as api:
        yield api


@pytest.fixture
async def sqlite_api(sqlite_url: str, tokens: Tokens) -> AsyncIterator[Api]:
    """Like ``api``, SQLite only: for behaviour that does not depend on the database."""
    app = create_app(api_settings(sqlite_url))
    async with in_process(app, tokens) as api:
        yield api


@pytest.fixture
def serve_process(sqlite_url: str, tmp_path: Path) -> Iterator[ServeProcess]:
    """A real ``serve`` subprocess on SQLite, signing tokens with ``SECRET``."""
    server = start_serve(sqlite_url, tmp_path / "serve.log", {"PFO_JWT_SECRET": SECRET})
    try:
        yield server
    finally:
        stop_serve(server)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    """A store on an empty, migrated database (SQLite, then PostgreSQL: tests/conftest.py)."""
    store = Store(database_url)
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def repos(store: Store) -> Repositories:
    """``store``'s notification-side repositories (tests/helpers/notifications.py)."""
    return repositories(store)


@pytest.fixture
def instances() -> Iterator[list[InstanceProcess]]:
    started = [InstanceProcess().start() for _ in range(3)]
    yield started
    for proc in started:
        proc.kill()
