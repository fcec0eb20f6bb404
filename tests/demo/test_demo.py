"""The demo generator and `crmctl demo`, end to end on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from crmctl.db.engine import Database
from crmctl.demo.graph import GraphSizes, write_graph_files
from tests.conftest import Cli
from tests.importers.test_graph_import import query, scalar

AS_OF = date(2026, 6, 30)


def _digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.glob("*.csv"))}


def test_same_seed_same_files_other_seed_other_files(tmp_path: Path) -> None:
    sizes = GraphSizes.for_people(150)
    write_graph_files(tmp_path / "a", sizes, seed=3, as_of=AS_OF)
    write_graph_files(tmp_path / "b", sizes, seed=3, as_of=AS_OF, chunk_rows=97)  # chunking changes nothing
    write_graph_files(tmp_path / "c", sizes, seed=4, as_of=AS_OF)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a")["contacts.csv"] != _digest(tmp_path / "c")["contacts.csv"]


def test_the_generated_graph_has_the_advertised_shape(tmp_path: Path) -> None:
    files = write_graph_files(tmp_path, GraphSizes.for_people(2000), seed=11, as_of=AS_OF)
    accounts = pl.read_csv(files.paths["accounts"])
    assert set(accounts["segment"]) == {"enterprise", "mid-market", "smb"}
    assert accounts["parent_external_id"].drop_nulls().is_in(accounts["external_id"].implode()).all()
    assert accounts["parent_external_id"].null_count() < accounts.height  # some parent/child groups
    contacts = pl.read_csv(files.paths["contacts"])
    assert contacts["email"].n_unique() == contacts.height
    deals = pl.read_csv(files.paths["deals"], try_parse_dates=True)
    age = (datetime.combine(AS_OF, datetime.min.time(), tzinfo=UTC) - deals["created_at"].min()).days
    assert 500 <= age <= 545  # 18 months of deals
    history = pl.read_csv(files.paths["stage-changes"])
    assert history["deal_external_id"].n_unique() == deals.height
    interactions = pl.read_csv(files.paths["interactions"], try_parse_dates=True)
    assert {"nps", "csat"} <= set(interactions["kind"])
    assert interactions.filter(pl.col("kind") == "nps")["score"].is_between(0, 10).all()
    # Usage follows the account's pattern: churning accounts stop, declining ones fade.
    usage = pl.read_csv(files.paths["product-usage"], try_parse_dates=True)
    patterns = _patterns(files.paths["accounts"], seed=11, count=accounts.height)
    recent = usage.filter(
        pl.col("occurred_at") > datetime.combine(AS_OF - timedelta(days=56), datetime.min.time(), UTC)
    )
    recent_accounts = set(recent["account_external_id"])
    assert not recent_accounts & patterns["churning"]
    assert recent_accounts & patterns["healthy"]
    tickets = pl.read_csv(files.paths["tickets"])
    assert set(tickets["priority"]) == {"low", "normal", "high", "urgent"}
    assert tickets["sentiment"].is_between(-1, 1).all()


def _patterns(accounts_csv: Path, *, seed: int, count: int) -> dict[str, set[str]]:
    from crmctl.demo.graph import _accounts

    frame = _accounts(count, seed)
    return {
        p: set(frame.filter(pl.col("pattern") == p)["external_id"])
        for p in ("healthy", "declining", "churning")
    }


@pytest.mark.slow
def test_demo_imports_everything_and_a_second_run_adds_nothing(
    cli: Cli, db: Database, tmp_path: Path
) -> None:
    out = tmp_path / "demo-data"
    args = ("demo", "--people", "60", "--seed", "5", "--out", str(out), "--as-of", AS_OF.isoformat())
    result = cli(*args)
    assert "Demo import" in result.stdout
    assert "Try next:" in result.stderr
    expected = {
        "account": "accounts.csv",
        "deal": "deals.csv",
        "stage_change": "stage_changes.csv",
        "interaction": "interactions.csv",
        "product_usage": "product_usage.csv",
        "contract": "contracts.csv",
        "renewal": "contracts.csv",
        "support_ticket": "tickets.csv",
    }
    counts = {table: scalar(db, f"SELECT count(*) FROM {table}") for table in expected}
    assert counts == {table: pl.read_csv(out / name).height for table, name in expected.items()}
    assert scalar(db, "SELECT count(*) FROM contact WHERE external_source = 'demo'") == 60
    assert scalar(db, "SELECT count(*) FROM exchange_rate") > 0
    assert query(db, "SELECT outcome FROM audit_event WHERE command = 'demo'") == [("ok",)]
    # the four lead files went through `crmctl import leads` (identity resolution), and the tour ran
    lead_rows = sum(pl.read_csv(f).height for f in (out / "leads").glob("*.csv") if f.name != "truth.csv")
    assert lead_rows > 0
    assert scalar(db, "SELECT count(*) FROM source_record") == lead_rows
    assert "not available" not in result.stderr
    assert "Scored" in result.stderr
    cli(*args)
    assert {table: scalar(db, f"SELECT count(*) FROM {table}") for table in expected} == counts
    assert not list(out.glob("*.rejects.csv"))
