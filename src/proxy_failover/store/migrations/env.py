"""Alembic environment: runs on the connection handed over by ``store.database.upgrade``.

There is no alembic.ini: ``store.database.alembic_config`` points Alembic here. Used offline
(``alembic upgrade --sql``) it renders SQL for the URL in ``sqlalchemy.url``.
"""

from __future__ import annotations

from alembic import context

from proxy_failover.store.tables import metadata

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
