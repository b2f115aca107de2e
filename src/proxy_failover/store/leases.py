"""Named leases in the database: one holder at a time, taken over only once the lease expired.

The engine uses one (``engine``) so that of several ``serve`` replicas on one database only one
probes and decides. Every call is one atomic conditional statement (an upsert or an update with
``RETURNING``), the same SQLAlchemy code on SQLite and PostgreSQL.

**Whose clock.** Expiry is written and compared with the *database's* clock
(``statement_timestamp()`` on PostgreSQL; on SQLite, which runs inside each process, the host's
clock, shared by every process using the file), never with the caller's: replicas whose clocks
disagree still agree on when a lease expired. A holder keeps its own count of the time left on its
monotonic clock, started *before* it sent the statement, so it always believes its lease ends a
little earlier than the database does (``leadership`` stops its work well before that).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy_failover.store import database
from proxy_failover.store.tables import UTCDateTime, leases

#: SQLite's time as SQLAlchemy stores UTC datetimes there (naive text), millisecond precision:
#: every expiry is written and compared in this one format, so text order is time order.
_SQLITE_TIME_FORMAT = "%Y-%m-%d %H:%M:%f"


@dataclass(frozen=True, slots=True)
class Lease:
    """A lease as its holder last saw it; ``expires_at`` is on the database's clock."""

    name: str
    holder: str
    epoch: int
    expires_at: datetime


class Leases:
    """``try_acquire`` / ``renew`` / ``release`` of named leases, on the store's engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._db = database.EngineAccess(engine)
        self._is_postgres = self._db.is_postgres

    def _now(self, plus_seconds: float = 0.0) -> sa.ColumnElement[datetime]:
        """The database's current time (plus some seconds), as the column stores it."""
        if self._is_postgres:
            now: sa.ColumnElement[Any] = sa.func.statement_timestamp()
            if plus_seconds:
                now = now + sa.func.make_interval(0, 0, 0, 0, 0, 0, plus_seconds)
            return sa.type_coerce(now, UTCDateTime())
        modifiers = [f"{plus_seconds:+.3f} seconds"] if plus_seconds else []
        return sa.type_coerce(
            sa.func.strftime(_SQLITE_TIME_FORMAT, "now", *modifiers), UTCDateTime()
        )

    async def try_acquire(self, name: str, holder: str, ttl_seconds: float) -> Lease | None:
        """Take ``name`` for ``ttl_seconds`` unless another holder's lease is still live.

        Re-acquiring one's own live lease extends it in the same term (same epoch); taking a free
        or expired lease starts a new term (epoch + 1). None: someone else holds it.
        """
        insert = postgresql.insert if self._is_postgres else sqlite.insert
        t = leases
        now, until = self._now(), self._now(ttl_seconds)
        fresh = insert(t).values(
            name=name, holder=holder, epoch=1, acquired_at=now, expires_at=until
        )
        own_live = sa.and_(t.c.holder == fresh.excluded.holder, t.c.expires_at > now)
        statement = fresh.on_conflict_do_update(
            index_elements=[t.c.name],
            set_={
                "holder": fresh.excluded.holder,
                "epoch": sa.case((own_live, t.c.epoch), else_=t.c.epoch + 1),
                "acquired_at": sa.case((own_live, t.c.acquired_at), else_=now),
                "expires_at": until,
            },
            where=sa.or_(own_live, t.c.expires_at <= now),
        ).returning(t.c.epoch, t.c.expires_at)
        async with self._db.write() as conn:
            row = (await conn.execute(statement)).one_or_none()
        return None if row is None else Lease(name, holder, row.epoch, row.expires_at)

    async def renew(self, lease: Lease, ttl_seconds: float) -> Lease | None:
        """Extend a live lease of this term by ``ttl_seconds`` from now; None: it was lost
        (expired, released, or taken over), and the holder must stop acting on it."""
        t = leases
        now = self._now()
        statement = (
            sa.update(t)
            .where(_live_term(lease, now))
            .values(expires_at=self._now(ttl_seconds))
            .returning(t.c.expires_at)
        )
        async with self._db.write() as conn:
            row = (await conn.execute(statement)).one_or_none()
        return None if row is None else Lease(lease.name, lease.holder, lease.epoch, row[0])

    async def release(self, lease: Lease) -> bool:
        """End this term now, so another holder can take the lease at once (the row stays, with
        its epoch). False: it was no longer held by this term anyway."""
        t = leases
        now = self._now()
        statement = (
            sa.update(t).where(_live_term(lease, now)).values(expires_at=now).returning(t.c.epoch)
        )
        async with self._db.write() as conn:
            return (await conn.execute(statement)).one_or_none() is not None

    async def holder_of(self, name: str) -> str | None:
        """Who holds ``name`` now (None: nobody, or the lease expired)."""
        t = leases
        async with self._db.read() as conn:
            result = await conn.execute(
                sa.select(t.c.holder).where(t.c.name == name, t.c.expires_at > self._now())
            )
            holder: str | None = result.scalar_one_or_none()
        return holder


def _live_term(lease: Lease, now: Any) -> sa.ColumnElement[bool]:
    """The lease's row while it is still this term's and has not expired."""
    t = leases
    return sa.and_(
        t.c.name == lease.name,
        t.c.holder == lease.holder,
        t.c.epoch == lease.epoch,
        t.c.expires_at > now,
    )
