"""Development mode's signing secret, kept in a file next to the SQLite database.

With no ``PFO_JWT_SECRET`` (nor public key or JWKS) ``serve`` runs in development mode. Its secret
lives in ``<database>.secret`` (mode 0600), created on first use by ``serve`` or ``token``, so
``proxy-failover token`` works and printed tokens survive restarts. Production mode (a key source
configured) never reads or writes the file. A database that is not a SQLite file (PostgreSQL,
``:memory:``) has no "next to": then the secret is random for the run, as before.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.engine import make_url

from proxy_failover.config import Settings

SUFFIX = ".secret"


def secret_path(settings: Settings) -> Path | None:
    """Where development mode keeps its secret: beside a SQLite file database, else None."""
    url = make_url(settings.database_url)
    database = url.database
    if not url.get_backend_name().startswith("sqlite") or not database or database == ":memory:":
        return None
    if database.startswith("file:"):  # SQLite URI filenames: no plain path to sit next to
        return None
    return Path(database).with_name(Path(database).name + SUFFIX)


def load_or_create(path: Path, make_secret: Callable[[], str]) -> tuple[str, bool]:
    """The secret in ``path``, creating it (0600, exclusive) if missing; (secret, created).

    A file readable by others is refused: the secret signs admin tokens.
    """
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        secret = make_secret()
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first: use theirs
            return load_or_create(path, make_secret)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(secret + "\n")
        return secret, True
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PermissionError(
            f"{path} is accessible by other users (mode {stat.S_IMODE(mode):o}); "
            f"run: chmod 600 {path}"
        )
    secret = path.read_text(encoding="utf-8").strip()
    if len(secret.encode()) < 32:
        raise ValueError(f"{path} holds no usable secret (delete it to make a new one)")
    return secret, False
