"""Named job locks, so two runs of the same job for one tenant never overlap.

PostgreSQL: a session-level advisory lock held on a dedicated connection whose
``application_name`` names the holder. SQLite: an OS file lock beside the database file (released
by the kernel if the process dies, so a killed cron job never leaves a stale lock), with a sidecar
file naming the holder.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import filelock
from sqlalchemy.engine import make_url

from crmctl.db.engine import Database
from crmctl.errors import LockHeldError

POLL_SECONDS = 0.2


def _lock_key(tenant: str, name: str) -> int:
    digest = hashlib.sha256(f"crmctl:{tenant}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _holder_label(actor: str) -> str:
    return f"{actor} (pid {os.getpid()} on {socket.gethostname()})"


@contextmanager
def job_lock(db: Database, name: str, *, actor: str, wait_seconds: float | None = 0) -> Iterator[None]:
    """Hold the lock ``name`` for this tenant for the duration of the block.

    ``wait_seconds``: 0 fails at once if another run holds it; a number waits that long; None waits
    for as long as it takes (imports use this so concurrent imports are serialised)."""
    if db.is_postgresql:
        with _pg_lock(db, name, actor, wait_seconds):
            yield
    else:
        with _file_lock(db, name, actor, wait_seconds):
            yield


def _deadline(wait_seconds: float | None) -> float | None:
    return None if wait_seconds is None else time.monotonic() + wait_seconds


def _expired(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


@contextmanager
def _pg_lock(db: Database, name: str, actor: str, wait_seconds: float | None) -> Iterator[None]:
    key = _lock_key(db.tenant, name)
    label = f"crmctl lock {name}: {_holder_label(actor)}"[:63]
    with db.engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.exec_driver_sql("SELECT set_config('application_name', %s, false)", (label,))
        deadline = _deadline(wait_seconds)
        while not conn.exec_driver_sql("SELECT pg_try_advisory_lock(%s)", (key,)).scalar():
            if _expired(deadline):
                holder = conn.exec_driver_sql(
                    """
                    SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                    WHERE l.locktype = 'advisory' AND l.granted
                      AND ((l.classid::bigint << 32) | l.objid::bigint) = (%s::bigint)
                    LIMIT 1
                    """,
                    (key,),
                ).scalar()
                raise _held(name, (holder or "").removeprefix(f"crmctl lock {name}: ") or None)
            time.sleep(POLL_SECONDS)
        try:
            yield
        finally:
            conn.exec_driver_sql("SELECT pg_advisory_unlock(%s)", (key,))


def _sqlite_lock_path(db: Database, name: str, *, per_tenant: bool = True) -> Path:
    database = make_url(db.url).database or ""
    scope = f"{db.tenant}:{name}" if per_tenant else name
    safe = hashlib.sha256(scope.encode()).hexdigest()[:16]
    if not database or database == ":memory:":
        return Path(os.environ.get("TMPDIR", "/tmp")) / f"crmctl-memory-{os.getpid()}-{safe}.lock"
    return Path(f"{database}.{name}-{safe}.lock")


def database_file_lock(db: Database, name: str) -> filelock.FileLock:
    """A SQLite lock on the whole database file, whatever the tenant (for what all tenants share,
    such as its indexes); the caller acquires it, usually without waiting."""
    return filelock.FileLock(str(_sqlite_lock_path(db, name, per_tenant=False)))


@contextmanager
def _file_lock(db: Database, name: str, actor: str, wait_seconds: float | None) -> Iterator[None]:
    path = _sqlite_lock_path(db, name)
    info = path.with_suffix(".holder")
    lock = filelock.FileLock(str(path), timeout=-1 if wait_seconds is None else wait_seconds)
    try:
        lock.acquire(poll_interval=POLL_SECONDS)
    except filelock.Timeout:
        try:
            holder = json.loads(info.read_text())["holder"]
        except (OSError, ValueError, KeyError):
            holder = None
        raise _held(name, holder) from None
    try:
        info.write_text(json.dumps({"holder": _holder_label(actor), "since": time.time()}))
        yield
    finally:
        info.unlink(missing_ok=True)
        lock.release()


def _held(name: str, holder: str | None) -> LockHeldError:
    who = f" held by {holder}" if holder else ""
    return LockHeldError(
        f"Another '{name}' run is in progress for this tenant{who}.",
        hint="Wait for it to finish; the lock is released automatically if that process dies.",
    )
