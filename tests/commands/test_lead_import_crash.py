"""A lead import killed with SIGKILL mid-way, then re-run, ends exactly where an uninterrupted run does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from sqlalchemy import create_engine, text

from crmctl.db import migrate
from crmctl.demo.leads import write_lead_files


def _import(url: str, path: Path, id_column: str, batch_rows: int = 100) -> list[str]:
    return [
        sys.executable, "-m", "crmctl", "--db", url, "--quiet", "import", "leads", str(path),
        "--source", "support", "--id-column", id_column, "--default-region", "US",
        "--batch-rows", str(batch_rows),
    ]  # fmt: skip


def _partition(url: str) -> set[frozenset[str]]:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT s.source_record_id, COALESCE(c.merged_into_id, c.id) FROM source_record s "
                "JOIN contact c ON c.id = s.contact_id"
            )
        ).all()
        contacts = conn.execute(text("SELECT count(*) FROM contact WHERE merged_into_id IS NULL")).scalar()
    engine.dispose()
    groups = pl.DataFrame(rows, schema=["srid", "contact"], orient="row").group_by("contact").agg("srid")
    assert contacts == groups.height  # no contact left without its records
    return {frozenset(g) for g in groups["srid"].to_list()}


def _count(url: str) -> int:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM source_record")).scalar() or 0
    finally:
        engine.dispose()


@pytest.mark.slow
def test_sigkill_then_rerun_reaches_the_uninterrupted_state(
    database_url: str, empty_database_url: str, tmp_path: Path
) -> None:
    lead_file = next(f for f in write_lead_files(tmp_path, people=400, seed=5) if f.source == "support")
    assert lead_file.id_column is not None
    reference_url = empty_database_url
    migrate.upgrade(reference_url)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    subprocess.run(_import(reference_url, lead_file.path, lead_file.id_column), check=True, env=env)

    victim = subprocess.Popen(_import(database_url, lead_file.path, lead_file.id_column), env=env)
    deadline = time.monotonic() + 60
    while _count(database_url) == 0 and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = _count(database_url)
    assert 0 < killed_at < 400  # it died between two batches' commits, part-way
    subprocess.run(_import(database_url, lead_file.path, lead_file.id_column), check=True, env=env)
    assert _partition(database_url) == _partition(reference_url)


@pytest.mark.slow
def test_ctrl_c_stops_with_one_sentence_and_a_rerun_finishes(
    database_url: str, empty_database_url: str, tmp_path: Path
) -> None:
    """SIGINT part-way (on SQLite the batch writer process is then busy): exit 130, one sentence,
    no traceback from either process, whole batches only; the re-run reaches the uninterrupted state."""
    lead_file = next(f for f in write_lead_files(tmp_path, people=400, seed=5) if f.source == "support")
    assert lead_file.id_column is not None
    migrate.upgrade(empty_database_url)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    subprocess.run(_import(empty_database_url, lead_file.path, lead_file.id_column, 40), check=True, env=env)

    # ten batches: the signal lands part-way even on a slow machine
    command = _import(database_url, lead_file.path, lead_file.id_column, 40)
    victim = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while _count(database_url) == 0 and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    victim.send_signal(signal.SIGINT)
    _, stderr = victim.communicate(timeout=60)
    assert victim.returncode == 130, stderr
    assert "Interrupted" in stderr and "Traceback" not in stderr
    subprocess.run(_import(database_url, lead_file.path, lead_file.id_column, 40), check=True, env=env)
    assert _partition(database_url) == _partition(empty_database_url)
