"""A bulk importer's writer: batch N's writes run in their own transaction while batch N+1 is
read and resolved.

A batch's writes are a list of operations, each a module-level function called as
``func(session, *args)`` with frames and plain values: what a thread can run, and what a process
can be sent (pickled, polars frames as Arrow buffers out of band). Each batch is one transaction
and batches commit in order, so a killed import leaves whole batches as before.

- PostgreSQL: threads, two batches in flight on two connections. The server does the work while
  a thread waits on its socket, without the GIL, and one server backend was the import's critical
  path (the importer waited for it half the time). Batch N+1's first operations, the inserts of
  its own new rows, run while batch N commits; at :data:`AFTER_PREVIOUS_BATCH` it waits for that
  commit, because what follows reads or locks rows batch N may have written (rows its transaction
  cannot see until then), and it commits after it.
- SQLite: a process (``python -m crmctl.db.batch_writer``). The work is the client's own (rows made
  into parameters, SQLite's B-tree inserts), and a second thread contended for the GIL with the
  importer: a 250k-row insert beside a probe took 5.7-8.2 s on two threads against 5.4 s one after
  the other, and 4.2-4.5 s in two processes. It is started as a plain interpreter, not through
  multiprocessing: spawning re-imports the caller's main script (a script without a
  ``__name__ == "__main__"`` guard would import again in the child), and forking copies a process
  that runs polars' and our own threads. It ignores Ctrl-C (the importer decides, and waits for
  the batch in flight), and the kernel kills it with the importer (Linux), so no batch is written
  after the importer has died.
"""

from __future__ import annotations

import ctypes
import importlib
import io
import os
import pickle
import signal
import socket
import subprocess
import sys
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from multiprocessing.connection import Connection
from typing import Any, Protocol

import polars as pl
from sqlmodel import Session

from crmctl.db.checkpoints import BackgroundCheckpoints, batch_options, batch_session
from crmctl.db.engine import Database, open_database
from crmctl.errors import CrmctlError

WriteOp = tuple[Callable[..., Any], tuple[Any, ...]]

_PR_SET_PDEATHSIG = 1


def after_previous_batch(session: Session) -> None:
    """Does nothing: :data:`AFTER_PREVIOUS_BATCH` marks where a writer waits for the batch before."""


# The operations before this marker may only insert the batch's own new rows: no row another batch
# writes is read, locked or referenced through a foreign key there. Those after it run once the
# batch before has committed. A writer with one batch in flight runs the marker as a no-op.
AFTER_PREVIOUS_BATCH: WriteOp = (after_previous_batch, ())

# With two batches in flight, the second waits for the first in this process, where PostgreSQL's
# deadlock detection cannot see it. Any lock wait of the first on the second then closes a cycle
# that would hang: both inserting the same unique key (a bug: the second is planned with the first
# one's writes laid over its read), or DDL queued behind the second's table locks and in front of
# the first. Overlapped batches therefore wait at most this long for a lock, and fail with one
# sentence (a re-run finishes the job); the lead import's own waits, on an erasure run's batch,
# are short.
OVERLAP_LOCK_TIMEOUT = "60s"
_LOCK_NOT_AVAILABLE = "55P03"


class BatchWriter(Protocol):
    """Writes batches in order, each in one transaction (see the module docstring)."""

    def submit(self, ops: list[WriteOp]) -> None:
        """Start writing a batch: its operations in order, in one transaction that commits after
        the batches submitted before it. Waits first while the writer has no room for it."""

    def wait(self, keep: int = 0) -> None:
        """Wait until at most ``keep`` of the batches submitted are not committed (the newest
        ones); a failed batch's error is raised here."""

    def close(self) -> None:
        """Stop the writer (batches still in flight finish first)."""


class ThreadBatchWriter:
    """Writes batches on threads (PostgreSQL), ``depth`` of them in flight at once."""

    def __init__(self, db: Database, checkpoints: BackgroundCheckpoints | None, depth: int = 1) -> None:
        self._db = db
        self._checkpoints = checkpoints
        self._depth = depth
        self._executor = ThreadPoolExecutor(max_workers=depth, thread_name_prefix="crmctl-batch-writer")
        self._pending: deque[Future[None]] = deque()

    def submit(self, ops: list[WriteOp]) -> None:
        self.wait(keep=self._depth - 1)
        previous = self._pending[-1] if self._pending else None
        self._pending.append(
            self._executor.submit(_write, self._db, ops, self._checkpoints, previous, self._depth > 1)
        )

    def wait(self, keep: int = 0) -> None:
        while len(self._pending) > keep:
            self._pending.popleft().result()

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


class ProcessBatchWriter:
    """Writes one batch at a time in a process of its own (SQLite; see the module docstring)."""

    def __init__(
        self, db: Database, checkpoints: BackgroundCheckpoints | None, preload: tuple[str, ...]
    ) -> None:
        self._db = db
        self._checkpoints = checkpoints
        ours, theirs = socket.socketpair()
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", __name__, str(os.getpid()), str(theirs.fileno()), *preload],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
        finally:
            theirs.close()
        self._channel = Connection(ours.detach())
        self._in_flight = False

    def submit(self, ops: list[WriteOp]) -> None:
        self.wait()  # one batch at a time: SQLite has one writer
        # batch_session's transaction, opened in the writer process: the checkpoint thread's
        # waits and reports (checkpointed) stay here, around the process's commit
        options = batch_options(self._checkpoints, foreign_keys=False)
        if self._checkpoints is not None:
            self._checkpoints.before_write()
        try:
            _send(self._channel, (self._db.url, self._db.tenant, ops, options))
        except OSError as exc:
            raise self._died() from exc
        self._in_flight = True

    def wait(self, keep: int = 0) -> None:
        if not self._in_flight or keep >= 1:
            return
        self._in_flight = False
        try:
            error = self._channel.recv()
        except (EOFError, OSError) as exc:
            raise self._died() from exc
        except Exception as exc:  # an error this side cannot unpickle
            raise RuntimeError("the batch writer process failed; its error could not be read") from exc
        if error is not None:
            raise error
        if self._checkpoints is not None:
            self._checkpoints.committed()

    def close(self) -> None:
        self._channel.close()  # the writer stops at the end of its input
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def _died(self) -> RuntimeError:
        return RuntimeError(f"the batch writer process stopped (exit status {self._process.poll()})")


@contextmanager
def batch_writer(
    db: Database,
    checkpoints: BackgroundCheckpoints | None = None,
    *,
    process: bool = False,
    preload: tuple[str, ...] = (),
) -> Iterator[BatchWriter]:
    """A :class:`ThreadBatchWriter` (two batches in flight on PostgreSQL, one on SQLite, which has
    one writer), or (``process``, SQLite files) a :class:`ProcessBatchWriter`, which imports the
    modules ``preload`` (those of the operations) while the first batch is resolved. On leaving,
    the batches in flight are waited for."""
    writer: BatchWriter = (
        ProcessBatchWriter(db, checkpoints, preload)
        if process
        else ThreadBatchWriter(db, checkpoints, depth=2 if db.is_postgresql else 1)
    )
    try:
        yield writer
        writer.wait()
    finally:
        writer.close()


def _write(
    db: Database,
    ops: list[WriteOp],
    checkpoints: BackgroundCheckpoints | None,
    previous: Future[None] | None,
    overlapped: bool,
) -> None:
    """One batch in its transaction; with ``previous`` (the batch before, maybe still in flight),
    the operations after :data:`AFTER_PREVIOUS_BATCH`, and the commit, wait for it to commit. If it
    failed, this batch is rolled back too: it may name that batch's rows. ``overlapped``: batches
    may be in flight together, so this one waits for locks at most :data:`OVERLAP_LOCK_TIMEOUT`
    (PostgreSQL)."""

    def previous_committed() -> None:
        if previous is not None and previous.exception() is not None:
            raise RuntimeError("the batch before this one was not written, so neither is this one")

    with batch_session(db, checkpoints, foreign_keys=False) as session:
        if overlapped:
            session.connection().exec_driver_sql(f"SET LOCAL lock_timeout = '{OVERLAP_LOCK_TIMEOUT}'")
        try:
            _run(session, ops, previous_committed)
        except Exception as exc:
            # wrapped by SQLAlchemy, or raw from psycopg (bulk inserts use the driver's cursor)
            orig = getattr(exc, "orig", exc)
            if getattr(orig, "sqlstate", None) != _LOCK_NOT_AVAILABLE:
                raise
            raise CrmctlError(
                "A batch of this import waited too long for a lock another transaction holds; "
                "the batch was not written.",
                hint="Run the same import again: it skips what is imported and finishes the rest.",
            ) from exc
        previous_committed()


def _run(session: Session, ops: list[WriteOp], previous_committed: Callable[[], None] | None = None) -> None:
    for func, args in ops:
        if func is after_previous_batch and previous_committed is not None:
            previous_committed()
        func(session, *args)


class _FramePickler(pickle.Pickler):
    """Polars frames as Arrow tables, whose buffers travel out of band (pickle protocol 5): the
    batch's frames are not copied into the message (1M rows: ~925 MB of frames, pickled whole in
    2.2 s, against 0.4 s as Arrow buffers)."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, pl.DataFrame):
            return pl.from_arrow, (obj.to_arrow(),)
        return NotImplemented


def _send(channel: Connection, message: Any) -> None:
    buffers: list[pickle.PickleBuffer] = []
    out = io.BytesIO()
    _FramePickler(out, protocol=5, buffer_callback=buffers.append).dump(message)
    channel.send(len(buffers))
    channel.send_bytes(out.getbuffer())
    for buffer in buffers:
        channel.send_bytes(buffer.raw())


def _receive(channel: Connection) -> Any:
    count = channel.recv()
    message = channel.recv_bytes()
    return pickle.loads(message, buffers=[channel.recv_bytes() for _ in range(count)])


def _serve(parent: int, channel: Connection) -> None:
    """The writer process: one batch per message, in its own transaction; replies None or the error."""
    databases: dict[tuple[str, str], Database] = {}
    while True:
        try:
            message = _receive(channel)
        except (EOFError, OSError):  # the importer is done (or gone)
            return
        reply = _write_message(databases, message, parent)
        del message
        try:
            try:
                channel.send(reply)
            except (pickle.PicklingError, TypeError, AttributeError):  # an error that cannot be pickled
                channel.send(RuntimeError(f"{type(reply).__name__} in the batch writer process"))
        except OSError:  # the importer has gone (interrupted or failed): its batch is committed
            return


def _write_message(
    databases: dict[tuple[str, str], Database], message: Any, parent: int
) -> BaseException | None:
    """One batch; its frames are freed on return, before the next batch arrives."""
    if os.getppid() != parent:  # the importer has gone: write nothing
        sys.exit(0)
    url, tenant, ops, options = message
    try:
        db = databases.get((url, tenant))
        if db is None:
            db = databases[(url, tenant)] = open_database(url, tenant)
        with db.session(write=True) as session:
            session.connection(execution_options=options)
            _run(session, ops)
    except Exception as exc:  # sent back whole, raised by the importer (--verbose shows where)
        exc.add_note("".join(traceback.format_exception(exc)).rstrip())
        return exc
    return None


def _main(argv: list[str]) -> None:
    parent, fd, *preload = argv
    # Ctrl-C is the importer's to handle; the kernel kills this process when the importer dies
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != int(parent):  # the importer died before the kernel was told to follow it
        return
    for name in preload:
        importlib.import_module(name)
    _serve(int(parent), Connection(int(fd)))


if __name__ == "__main__":
    _main(sys.argv[1:])
