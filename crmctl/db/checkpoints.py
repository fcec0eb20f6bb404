"""SQLite bulk writes: WAL checkpoints on a helper thread instead of inside each batch's commit.

In WAL mode a commit that takes the log past ``wal_autocheckpoint`` pages copies the log into the
database file and syncs it before it returns. For an import that commits a large batch after
another, that copy was a third of the time in commits (2M narrow rows: 3.4 s of 8.8 s). Here the
importer's connection stops checkpointing and a thread with its own connection runs a PASSIVE
checkpoint after each commit, while the importer reads and prepares the next batch (SQLite and
polars release the GIL while they work). Two rules keep the log bounded:

- a writer restarts the log from its start only when every frame was copied: before a batch
  begins, once the log has grown past ``restart_bytes``, the importer waits for the thread;
- if the thread fails, the importer's connection checkpoints by itself again.

A killed process leaves a longer log, which the next connection replays as usual: nothing changes
for crash safety.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlmodel import Session

from crmctl.db.engine import AUTOCHECKPOINT_OPTION, SQLITE_BUSY_TIMEOUT_MS, Database

# When the log has grown past this, the next batch waits for the copy so that it can restart the log.
RESTART_BYTES = 256 << 20
# Commits the thread may be behind before the writer waits for it.
MAX_LAG_COMMITS = 3


class BackgroundCheckpoints:
    """A thread that checkpoints one SQLite database's WAL whenever a batch was committed."""

    def __init__(self, path: Path, *, restart_bytes: int = RESTART_BYTES) -> None:
        self._path = path
        self._log_bytes = 0
        self._commits = 0  # batches committed
        self._copied = 0  # of which a finished checkpoint covered
        self._restart_bytes = restart_bytes
        self._changed = threading.Condition()
        self._pending = False
        self._busy = False
        self._stopping = False
        self.failed = False
        self._thread = threading.Thread(target=self._run, name="crmctl-wal-checkpoints", daemon=True)
        self._thread.start()

    @property
    def execution_options(self) -> dict[str, Any]:
        """For the writer's batch transactions: no checkpoints of its own while the thread runs."""
        return {AUTOCHECKPOINT_OPTION: self.failed}

    def before_write(self) -> None:
        """Call before a batch begins: waits for the copy when the log should restart.

        The log's length is what the last checkpoint reported (frames since the log last restarted),
        not the file's size: a restarted log reuses the file from its start, at the same size. A
        thread that falls behind (a busy machine) also makes the writer wait, so the log cannot
        grow unseen between two reports."""
        if self._log_bytes > self._restart_bytes or self._commits - self._copied >= MAX_LAG_COMMITS:
            self._wait_idle()

    def committed(self) -> None:
        """Call after a batch committed: its frames are copied in the background."""
        with self._changed:
            self._commits += 1
            self._pending = True
            self._changed.notify_all()

    def close(self) -> None:
        """Copy what is left and stop the thread."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        self._thread.join()

    def _wait_idle(self) -> None:
        with self._changed:
            while (self._pending or self._busy) and not self.failed:
                self._changed.wait()

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self._path, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        except sqlite3.Error:
            self._fail()
            return
        try:
            conn.execute("PRAGMA synchronous=NORMAL")
            page_bytes = int(conn.execute("PRAGMA page_size").fetchone()[0])
            while True:
                with self._changed:
                    while not self._pending and not self._stopping:
                        self._changed.wait()
                    if self._stopping and not self._pending:
                        return
                    self._pending, self._busy = False, True
                    covered = self._commits
                    self._changed.notify_all()
                # PASSIVE never waits for readers or the writer: it copies what it can now.
                _busy, log_frames, _copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                with self._changed:
                    self._log_bytes = max(0, log_frames) * page_bytes
                    self._copied = covered
                    self._busy = False
                    self._changed.notify_all()
        except sqlite3.Error:
            self._fail()
        finally:
            conn.close()

    def _fail(self) -> None:
        with self._changed:
            self.failed = True
            self._busy = self._pending = False
            self._changed.notify_all()


@contextmanager
def background_checkpoints(db: Database, *, enabled: bool = True) -> Iterator[BackgroundCheckpoints | None]:
    """A :class:`BackgroundCheckpoints` for ``db`` when it is a SQLite file, else None."""
    database = db.engine.url.database
    in_memory = not database or database == ":memory:" or database.startswith("file:")
    if not enabled or db.is_postgresql or in_memory:
        yield None
        return
    checkpoints = BackgroundCheckpoints(Path(os.path.abspath(database)))
    try:
        yield checkpoints
    finally:
        checkpoints.close()


@contextmanager
def checkpointed(checkpoints: BackgroundCheckpoints | None) -> Iterator[None]:
    """Around one write transaction of a bulk writer (the block must commit it): wait first when
    the log should restart, report the commit after. No thread (None): nothing to do."""
    if checkpoints is None:
        yield
        return
    checkpoints.before_write()
    yield
    checkpoints.committed()


def batch_options(checkpoints: BackgroundCheckpoints | None, *, foreign_keys: bool = True) -> dict[str, Any]:
    """The execution options of one batch's write transaction: with ``foreign_keys=False``, no
    per-row foreign key probes on SQLite (the caller says why that is safe; PostgreSQL keeps them),
    and no checkpoints of its own while ``checkpoints``' thread copies the WAL."""
    options: dict[str, Any] = {} if foreign_keys else {"crmctl_foreign_keys": False}
    if checkpoints is not None:
        options |= checkpoints.execution_options
    return options


@contextmanager
def batch_session(
    db: Database, checkpoints: BackgroundCheckpoints | None, *, foreign_keys: bool = True
) -> Iterator[Session]:
    """One batch's write transaction in a bulk writer, with :func:`batch_options`: its WAL copy
    left to ``checkpoints``' thread (see :func:`checkpointed`)."""
    options = batch_options(checkpoints, foreign_keys=foreign_keys)
    with checkpointed(checkpoints), db.session(write=True) as session:
        if options:
            session.connection(execution_options=options)
        yield session
