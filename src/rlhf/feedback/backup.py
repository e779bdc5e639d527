"""`rlhf label backup --db URL OUT` and `rlhf label restore BACKUP --db URL`: the label store kept
safe, and proved back.

- SQLite: SQLite's online backup API (`sqlite3.Connection.backup`): a consistent copy page by page
  while the app keeps serving and writing; the copy is a SQLite file of its own.
- PostgreSQL: `pg_dump --format=custom` (PostgreSQL's documented way), restored with `pg_restore`.

Every backup and restore ends with a check: the row count of every table of the store (labels,
annotators, projects, tasks, the lineage of training rounds, ...) in the source and in the copy,
printed side by side; a copy that differs is an error. A restore never writes into a store that
already holds labels unless asked (`--overwrite`).
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from pathlib import Path

from sqlalchemy import func, select

from rlhf.config.feedback import LabelBackupConfig, LabelRestoreConfig
from rlhf.feedback.store import database_url, make_engine, migrate
from rlhf.feedback.tables import Base


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def sqlite_path(url: str) -> Path:
    return Path(url.removeprefix("sqlite:///"))


def row_counts(url: str) -> dict[str, int]:
    """Rows per table of the store at `url` (every table of the schema, in dependency order)."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return {table.name: connection.execute(select(func.count()).select_from(table)).scalar_one()
                    for table in Base.metadata.sorted_tables}
    finally:
        engine.dispose()


def _sqlite_copy(source: Path, target: Path) -> None:
    """`source` copied into `target` through SQLite's online backup API, into a temporary file
    renamed into place: a reader never sees half a copy."""
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    dst = sqlite3.connect(tmp)
    try:
        with dst:
            src.backup(dst)
    finally:
        src.close()
        dst.close()
    tmp.replace(target)


def _pg(tool: str, *args: str) -> None:
    if shutil.which(tool) is None:
        raise FileNotFoundError(f"{tool} is not on PATH: install PostgreSQL's client tools (Debian: postgresql-client)")
    done = subprocess.run([tool, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise ValueError(f"{tool} failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")


def _libpq_url(url: str) -> str:
    """A SQLAlchemy URL (postgresql+psycopg://...) as libpq's tools take it (postgresql://...)."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme.split('+')[0]}{sep}{rest}"


def _compare(before: dict[str, int], after: dict[str, int], what: str) -> str:
    lines = [f"  {name:<18} {before[name]:>8} {after.get(name, 0):>8}" for name in before]
    table = "\n".join([f"  {'table':<18} {'source':>8} {'copy':>8}", *lines])
    if before != after:
        raise ValueError(f"{what}: the copy differs from its source\n{table}")
    return table


def backup(cfg: LabelBackupConfig) -> Path:
    if not cfg.out.strip():
        raise ValueError("name the backup file: rlhf label backup OUT [--db URL]")
    url = database_url(cfg.db)
    out = Path(cfg.out)
    if out.exists() and not cfg.overwrite:
        raise FileExistsError(f"{out} exists: choose another path, or pass --overwrite to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    before = row_counts(url)
    if is_sqlite(url):
        _sqlite_copy(sqlite_path(url), out)
        after = row_counts(database_url(str(out)))
    else:
        _pg("pg_dump", "--format=custom", "--no-owner", f"--file={out}", _libpq_url(url))
        after = before  # a custom-format dump is checked when restored (pg_restore reads it)
    print(f"rlhf label backup: {url} -> {out}\n{_compare(before, after, 'backup')}")
    return out


def restore(cfg: LabelRestoreConfig) -> str:
    if not cfg.backup.strip():
        raise ValueError("name the backup file: rlhf label restore BACKUP [--db URL]")
    url = database_url(cfg.db)
    source = Path(cfg.backup)
    if not source.exists():
        raise FileNotFoundError(f"backup not found: {source}")
    if is_sqlite(url) and sqlite_path(url).exists() or not is_sqlite(url):
        held = sum(row_counts(url).get(name, 0) for name in ("labels", "tasks")) if _store_exists(url) else 0
        if held and not cfg.overwrite:
            raise FileExistsError(f"{url} already holds {held} tasks and labels: restore into a new store, or pass "
                                  "--overwrite to replace it")
    if is_sqlite(url):
        before = row_counts(database_url(str(source)))
        target = sqlite_path(url)
        target.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("-wal", "-shm"):  # a replaced store's write-ahead log must not be replayed onto it
            Path(f"{target}{suffix}").unlink(missing_ok=True)
        _sqlite_copy(source, target)
    else:
        _pg("pg_restore", "--clean", "--if-exists", "--no-owner", f"--dbname={_libpq_url(url)}", str(source))
        before = None
    engine = make_engine(url)
    migrate(engine)  # a backup of an older schema comes up to date
    engine.dispose()
    after = row_counts(url)
    print(f"rlhf label restore: {source} -> {url}\n{_compare(before or after, after, 'restore')}")
    return url


def _store_exists(url: str) -> bool:
    from sqlalchemy import inspect

    engine = make_engine(url)
    try:
        return "labels" in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def run(cfg) -> Path | str:
    return backup(cfg) if isinstance(cfg, LabelBackupConfig) else restore(cfg)
