"""The bulk importers' batch writer: batches committed in order, one transaction each, on threads
(PostgreSQL, two batches in flight) or a process of its own (SQLite), with errors raised to the
importer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pytest
from sqlmodel import Session

from crmctl.db import batch_writer as batch_writer_module
from crmctl.db import bulk
from crmctl.db.batch_writer import AFTER_PREVIOUS_BATCH, WriteOp, batch_writer
from crmctl.db.checkpoints import background_checkpoints
from crmctl.db.engine import Database
from crmctl.errors import CrmctlError
from tests.conftest import create_scratch_table, owner_engine

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _tests_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer process unpickles this module's operations by name."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))


def _create_seen(db: Database) -> None:
    create_scratch_table(db, "seen", "batch INTEGER, note TEXT")


def _seen(db: Database) -> list[tuple[int, str]]:
    with db.session() as session:
        rows = session.connection().exec_driver_sql("SELECT batch, note FROM seen ORDER BY 1")
        return [(batch, note) for batch, note in rows]


def _note_autocheckpoint(session: Session, batch: int) -> None:
    """Write down the writer's connection's wal_autocheckpoint (SQLite) as this batch saw it."""
    conn = session.connection()
    pages = conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
    conn.exec_driver_sql(f"INSERT INTO seen VALUES ({batch}, 'pages={pages}')")


def _fail(session: Session, message: str) -> None:
    raise CrmctlError(message, hint="a hint travels too")


def test_batches_are_written_in_order_one_transaction_each(db: Database, backend: str) -> None:
    _create_seen(db)
    with batch_writer(db, process=backend == "sqlite", preload=(__name__,)) as writer:
        for batch in range(1, 4):
            frame = pl.DataFrame({"batch": [batch, batch], "note": [f"{batch}a", f"{batch}b"]})
            writer.submit([(bulk.insert_frame, ("seen", frame))])
            writer.wait()
        writer.submit([(bulk.insert_frame, ("seen", pl.DataFrame({"batch": [4], "note": ["4a"]})))])
    # the last batch was waited for on leaving
    assert _seen(db) == [(1, "1a"), (1, "1b"), (2, "2a"), (2, "2b"), (3, "3a"), (3, "3b"), (4, "4a")]


def test_a_failed_batch_writes_nothing_and_its_error_reaches_the_importer(db: Database, backend: str) -> None:
    _create_seen(db)
    with (
        pytest.raises(CrmctlError, match="batch two failed") as raised,
        batch_writer(db, process=backend == "sqlite") as writer,
    ):
        writer.submit([(bulk.insert_frame, ("seen", pl.DataFrame({"batch": [1], "note": ["kept"]})))])
        writer.wait()
        writer.submit(
            [
                (bulk.insert_frame, ("seen", pl.DataFrame({"batch": [2], "note": ["rolled back"]}))),
                (_fail, ("batch two failed",)),
            ]
        )
        writer.wait()
    assert raised.value.hint == "a hint travels too"
    assert _seen(db) == [(1, "kept")]


def _postgresql_only(backend: str) -> None:
    if backend != "postgresql":
        pytest.skip("PostgreSQL only: SQLite has one writer, one batch at a time")


def _insert(batch: int, note: str) -> WriteOp:
    return (bulk.insert_frame, ("seen", pl.DataFrame({"batch": [batch], "note": [note]})))


def test_postgresql_starts_the_next_batch_while_one_commits_and_commits_in_order(
    db: Database, backend: str
) -> None:
    """Two batches in flight: the second's inserts run while the first is still open, what it does
    after AFTER_PREVIOUS_BATCH sees the first committed, and it commits after it."""
    _postgresql_only(backend)
    _create_seen(db)
    second_started = threading.Event()
    first_overlapped: list[bool] = []
    seen_after_marker: list[list[tuple[int, str]]] = []

    def first_waits_for_second(session: Session) -> None:
        first_overlapped.append(second_started.wait(timeout=20))

    def second_starts(session: Session) -> None:
        second_started.set()

    def second_reads(session: Session) -> None:
        rows = session.connection().exec_driver_sql("SELECT batch, note FROM seen ORDER BY 1, 2")
        seen_after_marker.append([(batch, note) for batch, note in rows])

    with batch_writer(db) as writer:
        writer.submit([_insert(1, "first"), (first_waits_for_second, ())])
        writer.submit([_insert(2, "second"), (second_starts, ()), AFTER_PREVIOUS_BATCH, (second_reads, ())])
        writer.wait(keep=1)  # the first has committed; the second may still be in flight
        assert first_overlapped == [True]
    # after the marker the second batch saw the first's row (committed) and its own
    assert seen_after_marker == [[(1, "first"), (2, "second")]]
    assert _seen(db) == [(1, "first"), (2, "second")]


def test_postgresql_a_batch_after_a_failed_one_is_not_written(db: Database, backend: str) -> None:
    """The batch in flight behind a failed one may name its rows: it is rolled back, and the
    importer sees the first failure."""
    _postgresql_only(backend)
    _create_seen(db)
    first_may_fail = threading.Event()

    def fail_once_second_is_in(session: Session) -> None:
        first_may_fail.wait(timeout=20)
        _fail(session, "batch one failed")

    def second_is_in(session: Session) -> None:
        first_may_fail.set()

    with pytest.raises(CrmctlError, match="batch one failed"), batch_writer(db) as writer:
        writer.submit([_insert(1, "rolled back"), (fail_once_second_is_in, ())])
        writer.submit([_insert(2, "not written either"), (second_is_in, ()), AFTER_PREVIOUS_BATCH])
        writer.wait()
    assert first_may_fail.is_set()
    assert _seen(db) == []


def test_postgresql_two_batches_waiting_on_each_other_end_in_an_error_not_a_hang(
    db: Database, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Were the second batch to insert a key the first one inserts after it (a planning bug), the
    first would wait in the database for the second, which waits here for the first: the
    overlapped batches' lock timeout turns that into one sentence, and neither is written."""
    _postgresql_only(backend)
    create_scratch_table(db, "keyed", "k INTEGER PRIMARY KEY, note TEXT")
    monkeypatch.setattr(batch_writer_module, "OVERLAP_LOCK_TIMEOUT", "1s")
    second_inserted = threading.Event()

    def insert_key(session: Session, note: str) -> None:  # the bulk path: the driver's own cursor
        bulk.insert_frame(session, "keyed", pl.DataFrame({"k": [1], "note": [note]}))

    def first_inserts_after_second(session: Session) -> None:
        second_inserted.wait(timeout=20)
        insert_key(session, "first")

    def second_has_inserted(session: Session) -> None:
        second_inserted.set()

    started = time.monotonic()
    with pytest.raises(CrmctlError, match="waited too long") as raised, batch_writer(db) as writer:
        writer.submit([(first_inserts_after_second, ())])
        writer.submit([(insert_key, ("second",)), (second_has_inserted, ()), AFTER_PREVIOUS_BATCH])
        writer.wait()
    assert raised.value.hint is not None and "again" in raised.value.hint
    assert time.monotonic() - started < 15
    with db.session() as session:
        assert session.connection().exec_driver_sql("SELECT count(*) FROM keyed").scalar() == 0


def test_postgresql_ddl_queued_between_two_batches_ends_in_an_error_not_a_hang(
    db: Database, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ALTER TABLE queued behind the second batch's table lock, and in front of the first
    batch's next statement (after its marker), closes a cycle through the second batch's wait for
    the first: every lock wait of an overlapped batch is bounded, not only those before the marker."""
    _postgresql_only(backend)
    _create_seen(db)
    monkeypatch.setattr(batch_writer_module, "OVERLAP_LOCK_TIMEOUT", "1s")
    second_inserted, ddl_queued = threading.Event(), threading.Event()
    ddl_errors: list[BaseException] = []

    def first_writes_after_the_ddl_queued(session: Session) -> None:
        second_inserted.wait(timeout=20)
        ddl_queued.wait(timeout=20)
        bulk.insert_frame(session, "seen", pl.DataFrame({"batch": [1], "note": ["first"]}))

    def second_has_inserted(session: Session) -> None:
        second_inserted.set()

    owner = owner_engine(db)  # the app role may not alter tables

    def alter_seen() -> None:
        admin = owner.connect()
        try:
            admin.exec_driver_sql("SET lock_timeout = '20s'")  # if the batches hang, this ends it
            admin.exec_driver_sql("ALTER TABLE seen ADD COLUMN extra INTEGER")
            admin.commit()
        except Exception as exc:  # reported below
            ddl_errors.append(exc)
        finally:
            admin.close()

    ddl = threading.Thread(target=alter_seen)
    started = time.monotonic()
    with pytest.raises(CrmctlError, match="waited too long"), batch_writer(db) as writer:
        writer.submit([AFTER_PREVIOUS_BATCH, (first_writes_after_the_ddl_queued, ())])
        writer.submit([_insert(2, "second"), (second_has_inserted, ()), AFTER_PREVIOUS_BATCH])
        assert second_inserted.wait(timeout=20)
        ddl.start()
        time.sleep(0.5)  # the ALTER is queued behind the second batch's lock
        ddl_queued.set()
        writer.wait()
    ddl.join(timeout=30)
    owner.dispose()
    assert time.monotonic() - started < 15
    assert ddl_errors == []  # the ALTER ran once both batches had let go
    assert _seen(db) == []


def test_sqlite_writer_process_leaves_checkpoints_to_the_helper_thread(
    db: Database, backend: str, checkpoint_commits: list[int]
) -> None:
    """Each batch's transaction in the writer process turns its own checkpoint off, and the
    importer reports each commit to the thread of crmctl.db.checkpoints."""
    if backend != "sqlite":
        pytest.skip("SQLite only: PostgreSQL has no WAL file of ours to copy")
    _create_seen(db)
    with (
        background_checkpoints(db) as checkpoints,
        batch_writer(db, checkpoints, process=True) as writer,
    ):
        for batch in range(1, 4):
            writer.submit([(_note_autocheckpoint, (batch,))])
            writer.wait()
    assert _seen(db) == [(1, "pages=0"), (2, "pages=0"), (3, "pages=0")]
    assert len(checkpoint_commits) == 3


def _write_late(session: Session, started: str, seconds: float) -> None:
    Path(started).touch()
    time.sleep(seconds)
    session.connection().exec_driver_sql("INSERT INTO seen VALUES (1, 'written after the importer died')")


KILLED_IMPORTER = """
import sys, time
from crmctl.db.batch_writer import batch_writer
from crmctl.db.engine import open_database
from tests.db.test_batch_writer import _write_late
db = open_database(sys.argv[1], "default")
with batch_writer(db, process=True) as writer:
    writer.submit([(_write_late, (sys.argv[2], 8.0))])
    print(writer._process.pid, flush=True)
    time.sleep(60)
"""


def test_sqlite_writer_process_dies_with_a_killed_importer(
    db: Database, backend: str, tmp_path: Path
) -> None:
    """SIGKILL leaves the importer no chance to stop its writer, busy with a batch: the kernel
    does, so no batch is written after the importer has gone (a re-run would race it)."""
    if backend != "sqlite":
        pytest.skip("SQLite only: PostgreSQL's writer is a thread")
    _create_seen(db)
    started = tmp_path / "batch-started"
    importer = subprocess.Popen(
        [sys.executable, "-c", KILLED_IMPORTER, db.url, str(started)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert importer.stdout is not None
    writer_pid = int(importer.stdout.readline())
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not started.exists():  # the writer is in the batch
        time.sleep(0.05)
    assert _running(writer_pid)
    importer.send_signal(signal.SIGKILL)
    importer.wait(timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _running(writer_pid):
        time.sleep(0.05)
    assert not _running(writer_pid)
    assert _seen(db) == []


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False
