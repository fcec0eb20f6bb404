"""A real ``crmctl export snapshot`` process interrupted (SIGINT) or killed (SIGKILL) mid-export
never leaves a half-written target folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from crmctl.db import bulk, migrate
from crmctl.db.engine import open_database

ROWS = 150_000


def _big_sqlite(path: Path) -> str:
    url = f"sqlite:///{path}"
    migrate.upgrade(url)
    db = open_database(url, "default")
    frame = pl.DataFrame({"id": pl.int_range(1, ROWS + 1, eager=True)}).with_columns(
        tenant_id=pl.lit("default"),
        kind=pl.lit("note"),
        occurred_at=pl.lit(datetime(2026, 1, 1, tzinfo=UTC)),
        body=pl.format("a note of some length so the export takes a moment {}", pl.col("id")),
        idempotency_key=pl.format("k-{}", pl.col("id")),
    )
    try:
        with db.session(write=True) as session:
            bulk.insert_frame(session, "interaction", frame)
    finally:
        db.dispose()
    return url


def _start(url: str, out: Path) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "crmctl", "--db", url, "--tenant", "default", "-q"]
    argv += ["export", "snapshot", "--out", str(out), "--format", "csv", "--tables", "interaction"]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_for_partial(folder: Path, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        partial = [p for p in folder.glob(".export.partial-*") if any(p.iterdir())]
        if partial:
            return
        if proc.poll() is not None:
            pytest.fail("the export finished before it could be interrupted")
        time.sleep(0.01)
    pytest.fail("the export never started writing")


@pytest.mark.slow
def test_interrupted_or_killed_export_leaves_no_target(tmp_path: Path) -> None:
    url = _big_sqlite(tmp_path / "crm.db")
    exports = tmp_path / "exports"
    exports.mkdir()
    out = exports / "export"

    proc = _start(url, out)
    _wait_for_partial(exports, proc)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    assert list(exports.iterdir()) == []  # staging folder removed, no target

    proc = _start(url, out)
    _wait_for_partial(exports, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert not out.exists()
    leftovers = [p.name for p in exports.iterdir()]
    assert len(leftovers) == 1 and leftovers[0].startswith(".export.partial-")

    # a later export is not disturbed by the hidden leftover
    proc = _start(url, out)
    assert proc.wait(timeout=120) == 0, proc.stderr.read().decode() if proc.stderr else ""
    assert (out / "manifest.json").is_file()
