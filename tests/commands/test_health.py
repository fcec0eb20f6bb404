"""crmctl health, end to end through the CLI on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

from crmctl.db import bulk
from crmctl.db.engine import Database
from crmctl.db.locks import job_lock
from crmctl.health.model import default_model_text
from tests.conftest import Cli
from tests.health.fixtures import AS_OF, add, interaction, one, seed, ticket, usage

DAY = AS_OF.isoformat()


def _score(cli: Cli, *extra: str, as_of: str = DAY, expect: int = 0) -> dict:
    result = cli("health", "score", "--as-of", as_of, "--format", "json", *extra, expect=expect)
    return json.loads(result.stdout) if expect == 0 else {}


def _stored(db: Database) -> tuple[pl.DataFrame, pl.DataFrame]:
    with db.session() as session:
        snapshots = bulk.read_frame(
            session,
            "SELECT id, account_id, as_of, model_version, segment, composite, band FROM health_snapshot "
            "WHERE tenant_id = 'default' ORDER BY account_id, as_of",
        )
        signals = bulk.read_frame(
            session,
            "SELECT snapshot_id, account_id, signal, raw_value, normalised_value, weight, contribution "
            "FROM health_signal WHERE tenant_id = 'default' ORDER BY snapshot_id, signal",
        )
    return snapshots, signals


def test_composite_is_exactly_the_weighted_sum_of_the_stored_signals(cli: Cli, db: Database) -> None:
    ids = seed(db)
    summary = _score(cli)
    assert summary["accounts"] == len(ids)
    assert summary["green"] + summary["amber"] + summary["red"] == len(ids)
    snapshots, signals = _stored(db)
    assert snapshots.height == len(ids)
    for snap in snapshots.iter_rows(named=True):
        rows = signals.filter(pl.col("snapshot_id") == snap["id"]).sort("signal").to_dicts()
        assert rows, snap
        total = 0.0
        for r in rows:
            normalised = r["normalised_value"] if r["normalised_value"] is not None else 0.0
            assert r["contribution"] == r["weight"] * normalised
            total += r["weight"] * normalised
        assert total == snap["composite"], snap  # exactly, not approximately
        assert sum(r["weight"] for r in rows) == pytest.approx(1.0, abs=1e-12)
        assert 0 <= snap["composite"] <= 100


def test_the_same_login_rate_scores_differently_by_segment(cli: Cli, db: Database) -> None:
    ids = seed(db)
    _score(cli)
    snapshots, signals = _stored(db)
    logins = signals.filter(pl.col("signal") == "logins")
    enterprise = logins.filter(pl.col("account_id") == ids["Ent One"]).row(0, named=True)
    self_serve = logins.filter(pl.col("account_id") == ids["Small One"]).row(0, named=True)
    assert enterprise["raw_value"] == self_serve["raw_value"] == 20
    # lowest among enterprise peers, highest among self-serve peers
    assert enterprise["normalised_value"] < 30 < 90 < self_serve["normalised_value"]
    segments = dict(snapshots.select("account_id", "segment").iter_rows())
    assert segments[ids["Ent One"]] == "enterprise" and segments[ids["Small One"]] == "smb"


def test_rerun_replaces_is_reproducible_and_dry_run_writes_nothing(cli: Cli, db: Database) -> None:
    seed(db)
    dry = _score(cli, "--dry-run")
    assert dry["dry_run"] is True
    assert _stored(db)[0].height == 0
    first = _score(cli)
    before = _stored(db)
    again = _score(cli)
    after = _stored(db)
    assert again["replaced"] == first["accounts"] == dry["accounts"]
    assert after[0].height == before[0].height  # replaced, never duplicated
    columns = ["account_id", "segment", "composite", "band"]
    assert after[0].select(columns).equals(before[0].select(columns))  # to the last digit
    drop = ["snapshot_id"]
    assert (
        after[1]
        .drop(drop)
        .sort(["account_id", "signal"])
        .equals(before[1].drop(drop).sort(["account_id", "signal"]))
    )


def test_as_of_uses_only_the_data_as_it_stood_then(cli: Cli, db: Database) -> None:
    ids = seed(db)
    earlier = (AS_OF - timedelta(days=10)).isoformat()
    _score(cli, as_of=earlier)
    before = _stored(db)
    # events after the earlier date: a burst of logins, a new ticket, a new NPS answer
    account = ids["Small Two"]
    add(
        db,
        usage(account, "login", 500, 1),
        ticket(account, 2, priority="urgent", escalated=True),
        interaction(account, "nps", 1, score=0.0),
    )
    _score(cli, as_of=earlier)
    after = _stored(db)
    columns = ["account_id", "composite", "band"]
    assert after[0].select(columns).equals(before[0].select(columns))
    # and the later as-of does see them
    _score(cli)
    snapshots, signals = _stored(db)
    latest = signals.join(
        snapshots.filter(pl.col("as_of").cast(pl.String) == DAY), left_on="snapshot_id", right_on="id"
    )
    row = latest.filter((pl.col("account_id") == account) & (pl.col("signal") == "open_tickets")).row(
        0, named=True
    )
    assert row["raw_value"] == 4.0  # one urgent ticket, open at the as-of date


def test_second_concurrent_run_exits_4(cli: Cli, db: Database) -> None:
    seed(db)
    with job_lock(db, "health-score", actor="cron"):
        result = cli("health", "score", "--as-of", DAY, expect=4)
    assert "Another 'health-score' run is in progress" in result.stderr
    assert _stored(db)[0].height == 0


def test_invalid_model_is_one_sentence_naming_the_line_and_writes_nothing(
    cli: Cli, db: Database, tmp_path: Path
) -> None:
    seed(db)
    path = tmp_path / "model.toml"
    path.write_text(
        default_model_text().replace('weight = 15\nmissing = "zero"', 'weight = "high"\nmissing = "zero"', 1)
    )
    result = cli("health", "score", "--model", str(path), expect=2)
    line = default_model_text().splitlines().index("weight = 15") + 1
    assert f"line {line}: signal 'logins': weight is not a number" in result.stderr
    assert "Traceback" not in result.stderr
    with db.session() as session:
        assert one(session, "SELECT COUNT(*) FROM health_snapshot") == 0
        assert one(session, "SELECT COUNT(*) FROM health_model") == 0


def _ticket_heavy_model(tmp_path: Path) -> str:
    """The default model with open tickets weighing twice everything else together."""
    body = default_model_text()
    old = 'target = [0, 8]\ndirection = "lower"\nweight = 8'
    assert old in body
    path = tmp_path / "tickets.toml"
    path.write_text(body.replace(old, 'target = [0, 8]\ndirection = "lower"\nweight = 250'))
    return str(path)


def _crash(cli: Cli, db: Database, tmp_path: Path) -> tuple[int, str, str]:
    """Score a week before AS_OF, flood one account with urgent tickets, score AS_OF."""
    ids = seed(db)
    model = _ticket_heavy_model(tmp_path)
    earlier = (AS_OF - timedelta(days=7)).isoformat()
    _score(cli, "--model", model, as_of=earlier)
    account = ids["Small Three"]
    add(db, *(ticket(account, 2, priority="urgent", escalated=True) for _ in range(3)))
    summary = _score(cli, "--model", model)
    assert summary["transitions"] >= 1
    return account, model, earlier


def test_transitions_are_listed_with_drivers_and_logged_once(cli: Cli, db: Database, tmp_path: Path) -> None:
    account, model, earlier = _crash(cli, db, tmp_path)
    changes = json.loads(
        cli("health", "changes", "--since", earlier, "--to", "red", "--format", "json").stdout
    )
    mine = [c for c in changes if c["account_id"] == account]
    assert len(mine) == 1, changes
    change = mine[0]
    assert (change["from"], change["to"], change["as_of"]) == ("green", "red", DAY)
    assert change["composite"] < 40 <= 70 <= change["previous_composite"]
    assert [d["signal"] for d in change["drivers"]][0] == "open_tickets"
    assert all(d["change"] < 0 for d in change["drivers"])
    assert all(c["to"] == "red" for c in changes)
    table = cli("health", "changes", "--since", earlier, env={"COLUMNS": "200"}).stdout
    assert "Small Three" in table and "open_tickets" in table
    # re-running the same day does not append the transition to the timeline again
    _score(cli, "--model", model)
    with db.session() as session:
        logged = one(
            session,
            "SELECT COUNT(*) FROM interaction WHERE kind = 'health_transition' AND account_id = :a",
            a=account,
        )
    assert logged == 1


def test_show_explains_the_score_and_what_changed(cli: Cli, db: Database, tmp_path: Path) -> None:
    account, _, earlier = _crash(cli, db, tmp_path)
    shown = json.loads(cli("health", "show", str(account), "--format", "json").stdout)
    assert shown["account"] == "Small Three" and shown["as_of"] == DAY and shown["band"] == "red"
    total = 0.0
    for s in sorted(shown["signals"], key=lambda s: s["signal"]):
        total += s["contribution"]
    assert total == shown["composite"]
    assert shown["previous"]["as_of"] == earlier and shown["previous"]["band"] == "green"
    sizes = [abs(c["change"]) for c in shown["changes"]]
    assert sizes == sorted(sizes, reverse=True)  # the driver first
    assert shown["changes"][0]["signal"] == "open_tickets"
    table = cli("health", "show", "Small Three", env={"COLUMNS": "200"}).stdout
    assert "Small Three" in table and "open_tickets" in table and "composite" in table
    assert cli("health", "show", "No Such Account", expect=2).stderr.startswith("error: No account matches")


def test_history_has_a_sparkline(cli: Cli, db: Database) -> None:
    ids = seed(db)
    for days in (14, 7, 0):
        _score(cli, as_of=(AS_OF - timedelta(days=days)).isoformat())
    out = json.loads(cli("health", "history", str(ids["Small Two"]), "--format", "json").stdout)
    assert [r["as_of"] for r in out["rows"]] == [(AS_OF - timedelta(days=d)).isoformat() for d in (14, 7, 0)]
    assert len(out["sparkline"]) == 3 and set(out["sparkline"]) <= set("▁▂▃▄▅▆▇█")


def test_manual_signal_counts_until_it_expires(cli: Cli, db: Database) -> None:
    ids = seed(db)
    account = str(ids["Ent Three"])
    cli("health", "signal", "set", account, "5", "--note", "champion left", "--expires", "2099-01-31")
    cli("health", "signal", "set", account, "150", expect=2)
    listed = json.loads(cli("health", "signal", "list", account, "--format", "json").stdout)
    assert [(r["value"], r["author"], r["note"]) for r in listed] == [(5.0, "tester", "champion left")]
    today = listed[0]["created_at"][:10]
    _score(cli, as_of=today)
    shown = json.loads(cli("health", "show", account, "--format", "json").stdout)
    manual = next(s for s in shown["signals"] if s["signal"] == "csm_judgement")
    assert manual["raw_value"] == 5.0 and manual["weight"] > 0
    # scored as of a day after expiry, the judgement no longer counts
    _score(cli, as_of="2099-02-01")
    shown = json.loads(cli("health", "show", account, "--format", "json").stdout)
    manual = next(s for s in shown["signals"] if s["signal"] == "csm_judgement")
    assert manual["raw_value"] is None and manual["weight"] == 0


@pytest.mark.parametrize("rule", ["average", "arr_weighted"])
def test_parents_roll_up_their_children(cli: Cli, db: Database, tmp_path: Path, rule: str) -> None:
    ids = seed(db)
    path = tmp_path / "model.toml"
    path.write_text(default_model_text().replace('rollup = "arr_weighted"', f'rollup = "{rule}"'))
    _score(cli, "--model", str(path))
    snapshots, signals = _stored(db)
    composite = dict(snapshots.select("account_id", "composite").iter_rows())
    one_, two = composite[ids["Ent One"]], composite[ids["Ent Two"]]
    expected = (one_ + two) / 2 if rule == "average" else (one_ * 300_000_00 + two * 100_000_00) / 400_000_00
    assert composite[ids["Parent Group"]] == pytest.approx(expected, rel=1e-12)
    rows = signals.filter(pl.col("account_id") == ids["Parent Group"])
    assert rows["signal"].to_list() == ["children"] and rows["raw_value"].to_list() == [2.0]
