"""SQLite bulk loads shared by the importers: defer non-unique indexes while a large file loads,
then build them once, sorted (several times cheaper than maintaining them row by row).

PostgreSQL keeps its indexes (its inserts go through COPY and its index upkeep is not the cost).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import filelock
from sqlalchemy import Index
from sqlmodel import Session

from crmctl.db import models
from crmctl.db.checkpoints import background_checkpoints, checkpointed
from crmctl.db.engine import Database, sqlite_index_build
from crmctl.db.locks import database_file_lock
from crmctl.db.migrate import missing_indexes

# From this file size on, an import may defer indexes (a small file is cheaper row by row).
BULK_LOAD_BYTES = 8 * 1024 * 1024
# A low guess at a CSV row's size: a rebuild re-sorts the whole table, so a bulk load is only chosen
# when the files add at least half as many rows as the table already holds.
BULK_LOAD_BYTES_PER_ROW = 100


def several_batches(file_bytes: int, batch_rows: int) -> bool:
    """Whether input of ``file_bytes`` likely holds more than one batch: only then do WAL
    checkpoints on a helper thread pay (``db.checkpoints``). A single small batch stays under
    SQLite's own checkpoint threshold, and the thread's final copy only made it wait (10k rows
    against 144k contacts: 1.8 s with the thread, 1.3 s without)."""
    return file_bytes / BULK_LOAD_BYTES_PER_ROW > batch_rows


def stored_rows(session: Session, table: str) -> int:
    """About how many rows ``table`` holds, from one probe (SQLite: its largest rowid)."""
    return int(
        session.connection().exec_driver_sql(f'SELECT COALESCE(MAX(rowid), 0) FROM "{table}"').scalar() or 0
    )


def worth_deferring(db: Database, table: str, file_bytes: int, *, min_bytes: int = BULK_LOAD_BYTES) -> bool:
    """Whether loading ``file_bytes`` of input into ``table`` should defer its indexes (SQLite)."""
    if db.is_postgresql or file_bytes < min_bytes:
        return False
    with db.session() as session:
        return file_bytes / BULK_LOAD_BYTES_PER_ROW >= stored_rows(session, table) / 2


def bulk_load_indexes(
    tables: Sequence[str], *, keep: Sequence[str] = (), also: Sequence[str] = ()
) -> list[Index]:
    """The indexes a bulk load of ``tables`` defers: their non-unique ones but those in ``keep``
    (ones the import reads through while it loads), and the indexes named in ``also`` (of other
    tables the load updates row by row)."""
    metadata = models.SQLModel.metadata.tables
    return [
        ix
        for table in metadata.values()
        for ix in table.indexes
        if (table.name in tables and not ix.unique and ix.name not in keep) or ix.name in also
    ]


@contextmanager
def deferred_indexes(db: Database, indexes: Sequence[Index], *, enabled: bool) -> Iterator[None]:
    """A SQLite bulk load: drop ``indexes`` (see :func:`bulk_load_indexes`) for the duration and
    build them once at the end. Unique indexes always stay (idempotency keys rely on them).

    Every SQLite import first builds whatever model index is missing (a killed bulk load leaves
    some), except while another process's bulk load has them down: a database-wide file lock
    (the job locks are per tenant, the indexes are not) marks a bulk load from its drop to its
    rebuild. An import that cannot take it loads row by row and leaves the indexes to that load."""
    if db.is_postgresql:
        yield
        return
    lock = database_file_lock(db, "bulk-load")
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        yield
        return
    try:
        _create_missing(db)
        if not enabled:
            lock.release()
            yield
            return
        with db.engine.execution_options(crmctl_write=True).begin() as conn:
            for index in indexes:
                index.drop(conn, checkfirst=True)
        try:
            yield
        finally:
            _create_missing(db)
    finally:
        if lock.is_locked:
            lock.release()


def _create_missing(db: Database) -> None:
    """Build every schema index the database lacks, as sorted builds, one transaction each: the
    copy of one index's pages from the WAL (on the checkpoint thread) overlaps the next build."""
    with db.engine.connect() as conn:
        missing = missing_indexes(conn)
    if not missing:
        return
    writer = db.engine.execution_options(crmctl_write=True)
    with background_checkpoints(db) as checkpoints, sqlite_index_build(writer) as conn:
        if checkpoints is not None:
            conn.execution_options(**checkpoints.execution_options)
        for index in missing:
            with checkpointed(checkpoints), conn.begin():
                index.create(conn, checkfirst=True)
