"""crmctl export snapshot / verify through the real CLI, on SQLite and PostgreSQL."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import polars as pl
import pytest

from crmctl.db.engine import Database
from crmctl.exporters import folder as export_folder
from crmctl.exporters import sinks
from crmctl.exporters.columns import EXPORT_TABLES
from tests.conftest import Cli
from tests.exporters.helpers import FORMULA_NAME, TRICKY_BODY, read_table, seed, seed_other_tenant


@pytest.fixture
def exports(tmp_path: Path) -> Path:
    """An empty folder for export output (the SQLite test database lives in tmp_path)."""
    folder = tmp_path / "exports"
    folder.mkdir()
    return folder


@pytest.mark.parametrize(
    ("fmt", "compress", "suffix"),
    [
        ("parquet", "zstd", ".parquet"),
        ("csv", "gzip", ".csv.gz"),
        ("jsonl", "zstd", ".jsonl.zst"),
        ("csv", "none", ".csv"),
    ],
)
def test_snapshot_exports_every_table_of_the_tenant_only(
    cli: Cli, db: Database, database_url: str, exports: Path, fmt: str, compress: str, suffix: str
) -> None:
    ids = seed(db)
    seed_other_tenant(database_url)
    out = exports / "export"
    result = cli(
        "export", "snapshot", "--out", str(out), "--format", fmt, "--compress", compress, "--summary", "json"
    )

    summary = json.loads(result.stdout)
    assert [r["table"] for r in summary["rows"]] == list(EXPORT_TABLES)
    assert "interaction: 3 rows" in result.stderr  # progress per table on stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tenant"] == "default" and manifest["format"] == fmt
    assert manifest["schema_version"] == "0001"
    assert (manifest["snapshot_id"] is not None) == (manifest["backend"] == "postgresql")
    assert {f["path"] for f in manifest["files"]} == {f"{t}{suffix}" for t in EXPORT_TABLES}
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*(f["path"] for f in manifest["files"]), "manifest.json"]
    )
    assert not list(exports.glob(".export.partial-*"))

    contacts = read_table(out, "contact")
    assert contacts.height == 3 and set(contacts["tenant_id"]) == {"default"}
    assert sorted(int(i) for i in contacts["id"]) == sorted([ids["ada"], ids["bob"], ids["tab"]])
    interactions = read_table(out, "interaction").sort(pl.col("idempotency_key"))
    assert interactions["idempotency_key"].to_list() == ["seed-1", "seed-2", "seed-3"]
    # NULL and empty text stay apart; newlines, quotes and commas survive
    assert interactions["body"].to_list() == [TRICKY_BODY, "", None]
    assert json.loads(interactions["details"][0]) == {"thread": [1, 2]}
    deals = read_table(out, "deal")
    assert sum(int(a) for a in deals["amount_cents"]) == 10_000
    occurred = interactions["occurred_at"][0]
    if fmt == "parquet":
        assert str(occurred) == "2026-03-01 09:30:15.250000+00:00"
        assert contacts.schema["consent_at"] == pl.Datetime("us", "UTC")
        assert deals.schema["close_date"] == pl.Date
    else:
        assert str(occurred).startswith("2026-03-01") and "09:30:15.25" in str(occurred)

    cli("export", "verify", str(out))


def test_csv_formulas_are_neutralised_by_default_and_kept_on_request(
    cli: Cli, db: Database, exports: Path
) -> None:
    seed(db)
    cli(
        "export",
        "snapshot",
        "--out",
        str(exports / "safe"),
        "--format",
        "csv",
        "--tables",
        "contact,interaction",
    )
    cli(
        "export",
        "snapshot",
        "--out",
        str(exports / "raw"),
        "--format",
        "csv",
        "--tables",
        "contact",
        "--no-neutralise-formulas",
    )
    safe = read_table(exports / "safe", "contact").sort("id")
    raw = read_table(exports / "raw", "contact").sort("id")
    assert safe["first_name"].to_list()[0] == "'" + FORMULA_NAME
    assert safe["title"].to_list() == ["'-Chief", None, "'\tindent"]
    assert safe["company"][0] == "'@acme" and safe["phone"][0] == "'+44 20 7946 0000"
    assert safe["last_name"][0] == "Lovelace"  # ordinary text untouched
    assert json.loads(safe["field_provenance"][0]) == {"email": {"row": 3, "source": "web"}}  # JSON untouched
    assert raw["first_name"][0] == FORMULA_NAME and raw["title"][0] == "-Chief"
    subjects = read_table(exports / "safe", "interaction").sort("idempotency_key")["subject"].to_list()
    assert subjects == ["'+1 call me", None, None]
    assert json.loads((exports / "raw" / "manifest.json").read_text())["neutralised_formulas"] is False


def test_existing_folder_is_refused_unless_forced(cli: Cli, db: Database, exports: Path) -> None:
    seed(db)
    out = exports / "export"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = cli("export", "snapshot", "--out", str(out), expect=2)
    assert f"The folder {out} already exists." in result.stderr
    assert "--force" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]

    cli("export", "snapshot", "--out", str(out), "--force", "--tables", "deal")
    assert sorted(p.name for p in out.iterdir()) == ["deal.parquet", "manifest.json"]
    assert [p.name for p in exports.iterdir()] == ["export"]  # no staging or old folder left over


def test_unknown_table_is_one_sentence_and_writes_nothing(cli: Cli, exports: Path) -> None:
    result = cli(
        "export", "snapshot", "--out", str(exports / "x"), "--tables", "contact,contacts,deals", expect=2
    )
    assert "Unknown table(s): contacts, deals." in result.stderr
    assert "Tables that can be exported: account, contact," in result.stderr
    assert list(exports.iterdir()) == []


def test_full_disk_leaves_nothing_half_written(
    cli: Cli, db: Database, exports: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(db)
    written = {"bytes": 0}
    real_write = sinks.HashingFile.write

    def write_until_full(self: sinks.HashingFile, data: bytes) -> int:
        written["bytes"] += len(data)
        if written["bytes"] > 2_000:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, data)

    monkeypatch.setattr(sinks.HashingFile, "write", write_until_full)
    out = exports / "export"
    result = cli("export", "snapshot", "--out", str(out), "--format", "csv", expect=1)
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(
            f"error: Could not write the export to {out}: the disk is full; nothing was written there."
        )
    )
    assert list(exports.iterdir()) == []
    assert "Lovelace" not in result.stderr


def test_unwritable_parent_is_one_sentence(cli: Cli, exports: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # (the tests may run as root, which ignores file modes: make the check itself say "no access")
    monkeypatch.setattr(export_folder, "can_write_in", lambda folder: False)
    result = cli("export", "snapshot", "--out", str(exports / "x"), expect=2)
    assert f"Cannot write in {exports}: permission denied." in result.stderr
    assert list(exports.iterdir()) == []


def test_interrupted_export_leaves_no_folder(
    cli: Cli, db: Database, exports: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(db)
    real_close = sinks.TableSink.close

    def interrupt_after_deal(self: sinks.TableSink) -> sinks.WrittenFile:
        entry = real_close(self)
        if entry.table == "deal":
            raise KeyboardInterrupt
        return entry

    monkeypatch.setattr(sinks.TableSink, "close", interrupt_after_deal)
    cli("export", "snapshot", "--out", str(exports / "export"), expect=130)
    assert list(exports.iterdir()) == []


def test_verify_reports_every_difference(cli: Cli, db: Database, exports: Path) -> None:
    seed(db)
    out = exports / "export"
    cli("export", "snapshot", "--out", str(out), "--format", "csv", "--tables", "contact,deal,interaction")
    ok = json.loads(cli("export", "verify", str(out), "--format", "json").stdout)
    assert [r["status"] for r in ok] == ["ok", "ok", "ok"]

    deal_csv = out / "deal.csv"
    deal_csv.write_text("\n".join(deal_csv.read_text().splitlines()[:-1]) + "\n")  # drop a row
    (out / "interaction.csv").unlink()
    (out / "stray.csv").write_text("x\n")
    result = cli("export", "verify", str(out), "--format", "json", expect=1)
    rows = {r["file"]: r for r in json.loads(result.stdout)}
    assert rows["contact.csv"]["status"] == "ok"
    assert rows["deal.csv"]["status"] == "size differs; sha256 differs; row count differs"
    assert (rows["deal.csv"]["rows_expected"], rows["deal.csv"]["rows_found"]) == (4, 3)
    assert rows["interaction.csv"]["status"] == "missing"
    assert rows["stray.csv"]["status"] == "not in the manifest"
    assert "3 of 4 file(s) differ from the manifest." in result.stderr


def test_verify_without_manifest_is_a_usage_error(cli: Cli, exports: Path) -> None:
    result = cli("export", "verify", str(exports), expect=2)
    assert "has no manifest.json: it is not a complete crmctl export." in result.stderr


def test_jobs_out_of_range_is_a_usage_error(cli: Cli, exports: Path, backend: str) -> None:
    result = cli("export", "snapshot", "--out", str(exports / "x"), "--jobs", "0", expect=2)
    assert "--jobs must be between 1 and 8." in result.stderr
    assert list(exports.iterdir()) == []
    result = cli("export", "snapshot", "--out", str(exports / "x"), "--jobs", "2", "--tables", "deal")
    assert ("--jobs is ignored on SQLite" in result.stderr) == (backend == "sqlite")
