"""A large SQLite lead import defers the indexes it never reads while it loads (bulk_load; a
SQLite-only path: PostgreSQL keeps its indexes). The result is the same contacts, merges and
source links as a row-by-row load, and every index is back afterwards."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect

import crmctl.importers.leads as leads
from crmctl.db import migrate
from crmctl.db.engine import Database, open_database
from crmctl.db.locks import database_file_lock
from crmctl.demo.leads import write_lead_files
from crmctl.identity.history import source_links
from crmctl.importers.leads import import_leads


def _import_all(db: Database, out: Path) -> list[tuple[object, ...]]:
    for lead_file in write_lead_files(out, people=300, seed=5):
        import_leads(db, lead_file.import_options(default_region="US"))
    with db.session() as session:
        return sorted(source_links(session).rows())


def _indexes(db: Database) -> dict[str, set[str]]:
    with db.engine.connect() as conn:
        found = inspect(conn)
        return {
            t: {ix["name"] for ix in found.get_indexes(t)}
            for t in ("contact", "source_record", "merge_decision")
        }


def test_bulk_load_gives_the_same_links_and_keeps_every_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = {}
    for deferred in (False, True):
        url = f"sqlite:///{tmp_path / f'leads-{deferred}.db'}"
        migrate.upgrade(url)
        db = open_database(url, "default")
        before = _indexes(db)
        monkeypatch.setattr(leads, "worth_deferring", lambda *_args, deferred=deferred, **_kw: deferred)
        results[deferred] = _import_all(db, tmp_path / f"files-{deferred}")
        assert _indexes(db) == before
        db.dispose()
    assert results[True] == results[False]
    assert len({row[-1] for row in results[True]}) < len(results[True])  # some rows were merged


def test_imports_rebuild_missing_indexes_unless_a_bulk_load_holds_them(tmp_path: Path) -> None:
    """A killed bulk load leaves indexes out: the next SQLite import of any kind builds every
    missing model index, except while another process's bulk load (its database-wide lock) has
    them down; that import then loads row by row and leaves the rebuild to the bulk load."""
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    migrate.upgrade(url)
    db = open_database(url, "default")
    with db.engine.begin() as conn:  # as a killed stage-history load and lead load leave them
        conn.exec_driver_sql("DROP INDEX ix_deal_tenant_pipeline_stage")
        conn.exec_driver_sql("DROP INDEX ix_merge_decision_tenant_run")
    files = write_lead_files(tmp_path / "files", people=20, seed=2)
    options = files[0].import_options()
    bulk_load = database_file_lock(db, "bulk-load")
    with bulk_load:  # another process's bulk load in progress
        import_leads(db, options)
        assert "ix_merge_decision_tenant_run" not in _indexes(db)["merge_decision"]
    import_leads(db, options)
    assert "ix_merge_decision_tenant_run" in _indexes(db)["merge_decision"]
    with db.engine.connect() as conn:
        assert "ix_deal_tenant_pipeline_stage" in {ix["name"] for ix in inspect(conn).get_indexes("deal")}
    db.dispose()


def test_sqlite_batches_leave_their_checkpoints_to_the_helper_thread(
    tmp_path: Path, checkpoint_commits: list[int]
) -> None:
    """Each batch's commit (in the writer process) is reported to the thread of
    crmctl.db.checkpoints, which copies the WAL back while the next batch is prepared. (That the
    writer's own transactions do not checkpoint: tests/db/test_batch_writer.py.)"""
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    migrate.upgrade(url)
    db = open_database(url, "default")
    lead_file = write_lead_files(tmp_path / "files", people=60, seed=3)[0]
    result = import_leads(db, lead_file.import_options(default_region="US", batch_rows=50))
    batches = -(-result.counts["rows_read"] // 50)
    assert len(checkpoint_commits) == batches > 1
    db.dispose()
