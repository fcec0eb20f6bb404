"""WAL checkpoints on a helper thread during SQLite bulk writes (crmctl.db.checkpoints).

Every multi-batch import test (tests/importers/test_graph_crash.py: killed and re-run imports
among them) runs with them too."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from sqlalchemy import text

from crmctl.db import bulk
from crmctl.db.checkpoints import BackgroundCheckpoints, background_checkpoints
from crmctl.db.engine import Database

NOW = datetime(2026, 1, 2, tzinfo=UTC)


def _autocheckpoint(db: Database, **options: object) -> int:
    with db.engine.execution_options(**options).connect() as conn, conn.begin():
        return int(conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one())


def _write_batches(db: Database, checkpoints: BackgroundCheckpoints, batches: int, rows: int) -> int:
    """Insert accounts batch by batch as an importer does; returns the largest log seen."""
    wal = Path(f"{db.engine.url.database}-wal")
    largest = 0
    for b in range(batches):
        checkpoints.before_write()
        with db.session(write=True) as session:
            session.connection(execution_options=checkpoints.execution_options)
            frame = pl.DataFrame(
                {
                    "tenant_id": [db.tenant] * rows,
                    "name": [f"account {b}-{i} " + "x" * 200 for i in range(rows)],
                    "external_source": ["test"] * rows,
                    "external_id": [f"A{b}-{i}" for i in range(rows)],
                    "created_at": [NOW] * rows,
                    "updated_at": [NOW] * rows,
                }
            )
            bulk.insert_frame(session, "account", frame)
        checkpoints.committed()
        largest = max(largest, wal.stat().st_size)
    return largest


def test_log_restarts_and_every_row_lands(db: Database) -> None:
    if db.is_postgresql:
        with background_checkpoints(db) as checkpoints:
            assert checkpoints is None  # PostgreSQL has no WAL file of ours to copy
        return
    path = Path(str(db.engine.url.database))
    checkpoints = BackgroundCheckpoints(path, restart_bytes=2 << 20)
    try:
        # the batch transactions do not checkpoint themselves; the thread does
        assert _autocheckpoint(db, **checkpoints.execution_options) == 0
        largest = _write_batches(db, checkpoints, batches=30, rows=2_000)  # ~15 MB of rows in all
    finally:
        checkpoints.close()
    assert not checkpoints.failed
    # the log restarted from its start instead of growing with the import (one batch is ~0.6 MB,
    # the thread may be 3 commits behind before the writer waits: ~4 MB; 18 MB were written)
    assert largest < 8 << 20
    with db.engine.connect() as conn:
        # after close every committed frame is in the database file
        busy, frames, copied = conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
        assert busy == 0 and frames == copied
        count = conn.execute(text("SELECT count(*) FROM account WHERE external_source = 'test'")).scalar_one()
    assert count == 60_000
    # other transactions on the pooled connection checkpoint by themselves again
    assert _autocheckpoint(db) == 1000


def test_a_failed_thread_hands_checkpoints_back(db: Database, tmp_path: Path) -> None:
    if db.is_postgresql:
        pytest.skip("SQLite only: PostgreSQL has no WAL file of ours to copy")
    checkpoints = BackgroundCheckpoints(tmp_path / "missing-folder" / "nothing.db")
    checkpoints.committed()
    checkpoints.before_write()  # does not wait for a thread that is gone
    checkpoints.close()
    assert checkpoints.failed
    assert _autocheckpoint(db, **checkpoints.execution_options) == 1000
