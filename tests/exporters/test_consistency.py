"""An export is one point in time even while a writer keeps committing.

A writer thread moves money between deals (their sum is invariant) and appends one interaction per
transaction (``w-<k>``), recording the deal amounts after each commit. The export is slowed down
between tables until the writer has committed more, so writes land while it runs and between the
``deal`` and ``interaction`` tables. The exported interactions must then be exactly the writer's
first K transactions, and the exported deals exactly the amounts after transaction K.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from crmctl.db.engine import Database, open_database
from crmctl.exporters import snapshot
from crmctl.exporters.sinks import WrittenFile
from tests.conftest import Cli
from tests.exporters.helpers import T0, read_table, seed

DEALS = 8
START_CENTS = 10_000


class Writer(threading.Thread):
    def __init__(self, database_url: str) -> None:
        super().__init__(daemon=True)
        self.db: Database = open_database(database_url, "default")
        self.stop = threading.Event()
        self.commits = 0
        self.states: dict[int, dict[int, int]] = {}
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self.db.session() as s:
                rows = s.execute(text("SELECT id, amount_cents FROM deal WHERE tenant_id = 'default'")).all()
            amounts = {int(i): int(a) for i, a in rows}
            self.states[0] = dict(amounts)
            ids = sorted(amounts)
            k = 0
            while not self.stop.is_set():
                k += 1
                source, target = ids[k % len(ids)], ids[(k * 3 + 1) % len(ids)]
                moved = 1 + k % 97
                with self.db.session(write=True) as s:
                    for deal_id, delta in ((source, -moved), (target, moved)):
                        s.execute(
                            text("UPDATE deal SET amount_cents = amount_cents + :d WHERE id = :i"),
                            {"d": delta, "i": deal_id},
                        )
                    s.execute(
                        text(
                            "INSERT INTO interaction (tenant_id, kind, occurred_at, idempotency_key) "
                            "VALUES ('default', 'note', :at, :key)"
                        ),
                        {"at": T0, "key": f"w-{k}"},
                    )
                amounts[source] -= moved
                amounts[target] += moved
                self.states[k] = dict(amounts)
                self.commits = k
        except BaseException as exc:
            self.error = exc
        finally:
            self.db.dispose()

    def wait_for(self, commits: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while self.commits < commits and self.error is None:
            if time.monotonic() > deadline:
                raise TimeoutError("the writer made no progress")
            time.sleep(0.002)


@pytest.mark.parametrize("jobs", [1, 2])
@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_export_is_one_snapshot_under_concurrent_writes(
    cli: Cli,
    db: Database,
    database_url: str,
    backend: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    jobs: int,
    fmt: str,
) -> None:
    if jobs > 1 and backend == "sqlite":
        pytest.skip("--jobs shares a snapshot between connections: PostgreSQL only")
    seed(db, deals=DEALS, amount_cents=START_CENTS)
    writer = Writer(database_url)
    writer.start()
    writer.wait_for(3)
    real_export_one = snapshot._export_one

    def export_then_let_writer_commit(spec: object, open_sink: object, export: object) -> WrittenFile:
        entry = real_export_one(spec, open_sink, export)  # type: ignore[arg-type]
        writer.wait_for(writer.commits + 3)
        return entry

    real_write_manifest = snapshot.write_manifest

    def stop_writer_then_write_manifest(folder: Path, manifest: object) -> None:
        # Every table is exported by now. Stop the writer before the command's audit event is
        # closed: on SQLite that update (audit.audited) reads before it writes in a deferred
        # transaction, which a concurrent writer makes fail with "database is locked".
        writer.stop.set()
        writer.join(timeout=30)
        real_write_manifest(folder, manifest)  # type: ignore[arg-type]

    monkeypatch.setattr(snapshot, "_export_one", export_then_let_writer_commit)
    monkeypatch.setattr(snapshot, "write_manifest", stop_writer_then_write_manifest)
    out = tmp_path / "export"
    try:
        cli("export", "snapshot", "--out", str(out), "--format", fmt, "--jobs", str(jobs))
    finally:
        writer.stop.set()
        writer.join(timeout=30)
    assert writer.error is None, writer.error

    keys = [k for k in read_table(out, "interaction")["idempotency_key"].to_list() if k.startswith("w-")]
    seen = sorted(int(k[2:]) for k in keys)
    k_at_snapshot = len(seen)
    assert seen == list(range(1, k_at_snapshot + 1)), "the export holds a gap in the writer's commits"
    assert writer.commits >= k_at_snapshot + 3, "the writer kept committing while the export ran"

    deals = read_table(out, "deal")
    exported = {int(i): int(a) for i, a in zip(deals["id"], deals["amount_cents"], strict=True)}
    assert sum(exported.values()) == DEALS * START_CENTS
    assert exported == writer.states[k_at_snapshot]


def test_progress_callback_and_manifest_agree(db: Database, tmp_path: Path) -> None:
    """The library entry point: one callback per file, and the manifest lists the same files."""
    seed(db)
    seen: list[WrittenFile] = []
    manifest = snapshot.export_snapshot(
        db, tmp_path / "out", snapshot.SnapshotOptions(tables=["contact", "deal"]), on_file=seen.append
    )
    assert sorted(f.table for f in seen) == ["contact", "deal"]
    assert [f.table for f in manifest.files] == ["contact", "deal"]
    assert [(f.rows, f.sha256) for f in manifest.files] == [
        (f.rows, f.sha256) for f in sorted(seen, key=lambda f: f.table)
    ]
