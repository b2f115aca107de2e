"""Alembic environment: runs on the connection handed over by ``store.database.upgrade``.

There is no alembic.ini: ``store.database.alembic_config`` points Alembic here. Used offline
(``alembic upgrade --sql``) it renders SQL for the URL in ``sqlalchemy.url``.
"""

from __future__ import annotations

import importlib
import pkgutil

from alembic import context

import proxy_failover.store
from proxy_failover.store.tables import metadata

# Every store module that defines tables adds them to the one ``metadata``: load them all, so
# autogenerate (``alembic revision --autogenerate``) sees the whole schema.
for _module in pkgutil.iter_modules(proxy_failover.store.__path__):
    if _module.name != "migrations":
        importlib.import_module(f"proxy_failover.store.{_module.name}")

config = context.config
connection = config.attributes.get("connection")

if connection is None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()
