"""Opening the feedback store: an engine for a URL, migrations run on start, sessions.

SQLite is the default (a plain path or `sqlite:///path`): write-ahead logging lets annotators
read while one writes, `synchronous=NORMAL` keeps every committed label across a killed
process (only a power cut can lose the last ones), and a busy timeout makes concurrent
writers wait instead of failing. PostgreSQL works by URL (`postgresql+psycopg://...`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from rlhf.logs import quieted

MIGRATIONS = Path(__file__).parent / "migrations"


def database_url(db: str) -> str:
    """A URL from `--db`: URLs pass through, anything else is a SQLite file path."""
    if "://" in db:
        return db
    return f"sqlite:///{Path(db).expanduser().resolve()}"


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(db: str) -> Engine:
    url = database_url(db)
    if url.startswith("sqlite"):
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        # The app's threads share the pool; SQLite's own lock serialises the writes.
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def _quiet_alembic():
    """Alembic's INFO lines ("Context impl SQLiteImpl.", "Will assume non-transactional DDL.",
    "Running upgrade ...") off: under a server's INFO logging they printed on every start and
    told the user nothing. Its warnings and errors still show."""
    return quieted("alembic", logging.WARNING)


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (a no-op when it already is), quietly."""
    with _quiet_alembic():  # imported here: Alembic's plugin set-up logs seven INFO lines at import
        from alembic import command
        from alembic.config import Config
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with _quiet_alembic(), engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")


def open_store(db: str) -> sessionmaker[Session]:
    """A session factory on a migrated database."""
    engine = make_engine(db)
    migrate(engine)
    return sessionmaker(engine, expire_on_commit=False)
