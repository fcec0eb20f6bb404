"""Crash safety: a killed import leaves whole batches only, and a re-run finishes without duplicates."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import inspect

from crmctl.db.engine import Database
from crmctl.demo.graph import GraphSizes, write_graph_files
from crmctl.importers.graph import ImportOptions, import_file
from crmctl.pipeline import history
from tests.conftest import Cli
from tests.importers.test_graph_import import query, scalar

ROWS = 20_000


@pytest.mark.slow
def test_a_killed_import_is_finished_by_a_rerun_without_duplicates(
    cli: Cli, db: Database, database_url: str, tmp_path: Path
) -> None:
    sizes = GraphSizes(accounts=20, contacts=200, deals=1, stage_changes=1, interactions=ROWS, tickets=1)
    files = write_graph_files(tmp_path, sizes, seed=1, as_of=date(2026, 6, 30))
    for kind in ("accounts", "contacts"):
        cli("import", kind, str(files.paths[kind]), "--source", "demo")
    command = [sys.executable, "-m", "crmctl", "--db", database_url, "--tenant", "default", "--quiet"]
    command += [
        "import",
        "interactions",
        str(files.paths["interactions"]),
        "--source",
        "demo",
        "--batch-rows",
        "500",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        if scalar(db, "SELECT count(*) FROM interaction") >= 1_000:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = scalar(db, "SELECT count(*) FROM interaction")
    assert 0 < partial < ROWS, "the import should have been killed part-way"
    assert partial % 500 == 0  # whole batches only: each is one transaction
    assert query(db, "SELECT status FROM import_run WHERE kind = 'interactions'") == [("running",)]

    cli("import", "interactions", str(files.paths["interactions"]), "--source", "demo")
    assert scalar(db, "SELECT count(*) FROM interaction") == ROWS
    assert scalar(db, "SELECT count(DISTINCT idempotency_key) FROM interaction") == ROWS
    statuses = query(db, "SELECT status FROM import_run WHERE kind = 'interactions' ORDER BY id")
    assert statuses == [("running",), ("completed",)]


def test_a_sqlite_bulk_load_rebuilds_the_indexes_it_deferred(cli: Cli, db: Database, tmp_path: Path) -> None:
    sizes = GraphSizes(accounts=10, contacts=50, deals=1, stage_changes=1, interactions=2_000, tickets=1)
    files = write_graph_files(tmp_path, sizes, seed=2, as_of=date(2026, 6, 30))
    for kind in ("accounts", "contacts"):
        cli("import", kind, str(files.paths[kind]), "--source", "demo")
    before = _indexes(db, "interaction")
    options = ImportOptions(source="demo", bulk_load_bytes=0, batch_rows=700)
    result = import_file(db, "interactions", files.paths["interactions"], options)
    assert result.tables["interaction"].created == 2_000
    assert _indexes(db, "interaction") == before
    again = import_file(db, "interactions", files.paths["interactions"], options)
    assert (again.tables["interaction"].created, again.tables["interaction"].skipped) == (0, 2_000)


def test_a_sqlite_stage_history_bulk_load_keeps_projections_and_rebuilds_the_deal_index(
    cli: Cli, db: Database, tmp_path: Path
) -> None:
    sizes = GraphSizes(accounts=10, contacts=50, deals=300, stage_changes=1_500, interactions=1, tickets=1)
    files = write_graph_files(tmp_path, sizes, seed=3, as_of=date(2026, 6, 30))
    for kind in ("accounts", "contacts", "deals"):
        cli("import", kind, str(files.paths[kind]), "--source", "demo")
    before = {table: _indexes(db, table) for table in ("deal", "stage_change")}
    options = ImportOptions(source="demo", bulk_load_bytes=0, batch_rows=400)
    result = import_file(db, "stage-changes", files.paths["stage-changes"], options)
    assert result.tables["stage_change"].created > 1_000
    assert {table: _indexes(db, table) for table in before} == before
    with db.session(write=True) as session:  # the projections written batch by batch are final
        assert history.refresh(session) == 0
    projected = query(
        db,
        "SELECT count(*) FROM deal d JOIN stage_change s ON s.deal_id = d.id AND s.valid_until IS NULL "
        "WHERE d.entered_pipeline_at = s.entered_pipeline_at AND (d.entered_stage_at = s.entered_stage_at "
        "OR d.entered_stage_at IS NULL AND s.entered_stage_at IS NULL)",
    )
    assert projected == [(scalar(db, "SELECT count(DISTINCT deal_id) FROM stage_change"),)]


def _indexes(db: Database, table: str) -> set[str]:
    with db.engine.connect() as conn:
        return {ix["name"] for ix in inspect(conn).get_indexes(table)}
