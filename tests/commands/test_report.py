"""crmctl report: hand-computed answers on SQLite and PostgreSQL (fixture in tests/pipeline/fixtures.py)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from crmctl.db import bulk
from crmctl.db.engine import Database
from tests.conftest import Cli
from tests.pipeline import fixtures


@pytest.fixture
def loaded(cli: Cli, db: Database, tmp_path: Path) -> Cli:
    fixtures.load(cli, db, tmp_path)
    return cli


def report(cli: Cli, *args: str, expect: int = 0) -> dict[str, Any]:
    result = cli("report", *args, "--format", "json", expect=expect)
    return json.loads(result.stdout)


def by_key(rows: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    return {r[key]: r for r in rows}


def test_pipeline_as_of_counts_amounts_weights_and_days(loaded: Cli) -> None:
    out = report(loaded, "pipeline", "--as-of", "2025-03-31")
    rows = by_key(out["rows"], "stage")
    # Deal 2 (EUR 5000) converts at the 2025-03-01 rate 1.20: its close date 04-15 is after the as-of.
    assert rows["Lead"] | {} == {
        "stage": "Lead",
        "deals": 1,
        "amount": 3000.0,
        "weighted_amount": 300.0,
        "avg_days_in_stage": 40.0,
    }
    assert (rows["Demo"]["deals"], rows["Demo"]["amount"], rows["Demo"]["avg_days_in_stage"]) == (
        1,
        12000.0,
        59.0,
    )
    assert (rows["Contract"]["amount"], rows["Contract"]["weighted_amount"]) == (6000.0, 4800.0)
    assert rows["TOTAL"]["deals"] == 3 and rows["TOTAL"]["amount"] == 21000.0
    assert rows["TOTAL"]["weighted_amount"] == 11100.0 and rows["TOTAL"]["avg_days_in_stage"] == 49.7
    assert out["definitions"]["weighted_amount"].startswith("sum(amount x stage probability)")


def test_pipeline_earlier_as_of_uses_the_rate_known_then(loaded: Cli) -> None:
    rows = by_key(report(loaded, "pipeline", "--as-of", "2025-02-15")["rows"], "stage")
    assert rows["Lead"]["amount"] == 8000.0  # deal 4, before it was lost; deal 5 did not exist yet
    assert rows["Demo"]["deals"] == 2 and rows["Demo"]["amount"] == 32000.0
    assert rows["Contract"]["amount"] == 5500.0  # EUR 5000 at 1.10: the 1.20 rate came later
    assert rows["TOTAL"]["weighted_amount"] == 21200.0


def test_pipeline_by_owner(loaded: Cli) -> None:
    rows = report(loaded, "pipeline", "--by", "owner")["rows"]
    totals = {r["group"]: r["amount"] for r in rows if r["stage"] == "TOTAL"}
    assert totals == {"ann": 15000.0, "bob": 6000.0, "ALL": 21000.0}


def _without_clock(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    clock = {"avg_days_in_stage", "days_in_stage"}
    return [{k: v for k, v in r.items() if k not in clock} for r in rows]


@pytest.mark.parametrize(
    "args",
    [
        ("pipeline",),
        ("pipeline", "--by", "source"),
        ("forecast",),
        ("velocity", "--from", "2025-01-01"),
        ("stalled", "--days", "1"),
        ("funnel", "--from", "2025-01-01"),
    ],
)
def test_as_of_today_equals_live(loaded: Cli, args: tuple[str, ...]) -> None:
    today = datetime.now(UTC).date().isoformat()
    live = report(loaded, *args)
    rebuilt = report(loaded, *args, "--as-of", today)
    assert live["rows"], "the fixture must produce rows"
    assert _without_clock(rebuilt["rows"]) == _without_clock(live["rows"])
    assert rebuilt["as_of"] != "live"


def test_changes_waterfall_adds_up_with_one_reason_per_deal(loaded: Cli) -> None:
    out = report(loaded, "changes", "--from", "2025-01-31", "--to", "2025-03-31")
    steps = {r["step"]: (r["deals"], r["amount"]) for r in out["rows"]}
    assert steps["start"] == (3, 35500.0)  # deals 1, 2 (EUR 5000 at 1.10), 3
    assert steps["new"] == (1, 3000.0)  # deal 5
    assert steps["increased"] == (1, 2000.0)  # deal 1
    assert steps["slipped_out"] == (1, -5500.0)  # deal 2: close date moved to April
    assert steps["won"] == (1, -20000.0)  # deal 3
    assert steps["lost"] == (0, 0.0)  # deal 4 was created and lost inside the period: never tracked
    assert steps["end"] == (2, 15000.0)
    middle = [r["amount"] for r in out["rows"] if r["step"] not in {"start", "end"}]
    assert round(steps["start"][1] + sum(middle), 2) == steps["end"][1]
    assert out["identity_holds"] is True
    assert out["close_window"] == {"from": "2025-01-01", "to": "2025-03-31"}


def test_changes_pulled_in_and_details(loaded: Cli) -> None:
    out = report(loaded, "changes", "--from", "2025-02-25", "--to", "2025-03-31")
    steps = {r["step"]: (r["deals"], r["amount"]) for r in out["rows"]}
    assert steps["pulled_in"] == (1, 3000.0)
    assert steps["lost"] == (1, -8000.0)
    assert steps["won"] == (1, -20000.0)
    details = report(
        loaded, "changes", "--from", "2025-02-25", "--to", "2025-03-31", "--details", "pulled_in"
    )
    assert [(r["deal_id"], r["close_before"], r["close_after"]) for r in details["rows"]] == [
        (5, "2025-05-30", "2025-03-25")
    ]


def test_changes_by_owner_and_csv(loaded: Cli) -> None:
    out = report(loaded, "changes", "--from", "2025-01-31", "--to", "2025-03-31", "--by", "owner")
    ann = {r["step"]: r["amount"] for r in out["rows"] if r["group"] == "ann"}
    assert (ann["start"], ann["won"], ann["end"]) == (30000.0, -20000.0, 15000.0)
    csv_out = loaded(
        "report", "changes", "--from", "2025-01-31", "--to", "2025-03-31", "--format", "csv"
    ).stdout
    assert csv_out.splitlines()[0] == "step,deals,amount"
    assert "start,3,35500.0" in csv_out


def test_forecast_categories_and_scenarios(loaded: Cli) -> None:
    rows = by_key(report(loaded, "forecast")["rows"], "period")
    assert rows["2025-03"] | {} == {
        "period": "2025-03",
        "won": 20000.0,
        "commit": 3000.0,  # deal 5's own forecast category
        "best_case": 12000.0,  # deal 1: Demo, probability 0.5
        "pipeline": 0.0,
        "worst": 23000.0,
        "most_likely": 35000.0,
        "best": 35000.0,
    }
    assert rows["2025-04"]["commit"] == 6000.0  # deal 2: Contract, probability 0.8
    assert rows["TOTAL"]["most_likely"] == 41000.0
    quarter = by_key(report(loaded, "forecast", "--period", "quarter")["rows"], "period")
    assert quarter["2025-Q1"]["worst"] == 23000.0 and quarter["2025-Q2"]["best"] == 6000.0


def test_velocity(loaded: Cli) -> None:
    (row,) = report(loaded, "velocity", "--from", "2025-01-01", "--to", "2025-03-31")["rows"]
    assert row == {
        "won": 1,
        "lost": 1,
        "win_rate": 0.5,
        "avg_won_amount": 20000.0,
        "avg_cycle_days": 49.0,
        "open_deals": 3,
        "velocity_per_day": round(3 * 0.5 * 20000 / 49, 2),
    }


def test_stalled_per_stage_threshold_and_days(loaded: Cli) -> None:
    out = report(loaded, "stalled", "--as-of", "2025-03-31")
    assert [(r["deal_id"], r["owner"], r["stage"], r["days_in_stage"]) for r in out["rows"]] == [
        (1, "ann", "Demo", 59),
        (5, "ann", "Lead", 40),
    ]
    out = report(loaded, "stalled", "--as-of", "2025-03-31", "--days", "45")
    assert [r["deal_id"] for r in out["rows"]] == [1, 2]
    assert out["stalled_deals"] == 2


def test_funnel_any_stage_and_in_order(loaded: Cli) -> None:
    out = report(loaded, "funnel", "--from", "2025-01-01", "--to", "2025-03-31")
    rows = by_key(out["rows"], "stage")
    assert [rows[s]["reached_any_stage"] for s in ("Lead", "Demo", "Contract", "Won")] == [5, 3, 2, 1]
    assert [rows[s]["reached_in_order"] for s in ("Lead", "Demo", "Contract", "Won")] == [4, 1, 0, 0]
    assert [rows[s]["conversion_any_stage"] for s in ("Lead", "Demo", "Contract")] == [0.6, 0.6667, 0.5]
    assert [rows[s]["conversion_in_order"] for s in ("Lead", "Demo", "Contract")] == [0.25, 0.0, None]
    assert rows["Lead"]["drop_off_any_stage"] == 2 and rows["Lead"]["drop_off_in_order"] == 3
    assert "Lost" not in rows
    assert "in_order" in " ".join(out["definitions"]) and "any_stage" in " ".join(out["definitions"])
    table = loaded("report", "funnel", "--from", "2025-01-01", "--to", "2025-03-31").stdout
    assert "█" in table


def test_explain_prints_definitions(loaded: Cli) -> None:
    out = loaded("report", "pipeline", "--explain").stdout
    assert "weighted_amount" in out and "probability" in out


def test_currency_conversion_and_missing_rate(loaded: Cli, tmp_path: Path) -> None:
    result = loaded("report", "pipeline", "--currency", "GBP", expect=2)
    assert "There is no EUR to GBP exchange rate on or before" in result.stderr
    rates = tmp_path / "rates.csv"
    rates.write_text("base,currency,day,rate\nEUR,USD,2025-01-01,0.5\nEUR,GBP,2025-01-01,2.0\n")
    out = report(loaded, "pipeline", "--currency", "EUR", "--rates", str(rates), "--as-of", "2025-03-31")
    # 1 USD = 0.5 EUR: 3000 + 12000 USD -> 7500 EUR; deal 2 is already EUR 5000.
    assert by_key(out["rows"], "stage")["TOTAL"]["amount"] == 12500.0
    assert out["currency"] == "EUR"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("pipeline", "--pipeline", "nope"), "There is no pipeline named 'nope'."),
        (("pipeline", "--as-of", "2025-13-01"), "--as-of must be a date written YYYY-MM-DD."),
        (("changes", "--from", "2025-03-01"), "report changes needs both --from and --to dates."),
        (("funnel", "--from", "2025-03-01", "--to", "2025-01-01"), "--from must be on or before --to."),
        (("pipeline", "--by", "colour"), "--by must be one of owner, segment, source, pipeline, month."),
        (
            ("changes", "--from", "2025-01-01", "--to", "2025-02-01", "--details", "x"),
            "--details must be one of",
        ),
    ],
)
def test_bad_input_is_one_sentence_and_exit_2(loaded: Cli, args: tuple[str, ...], message: str) -> None:
    result = loaded("report", *args, expect=2)
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_empty_database_says_so(cli: Cli) -> None:
    for kind in ("pipeline", "funnel", "velocity", "forecast", "stalled"):
        result = cli("report", kind, expect=2)
        assert "This tenant has no pipeline configured yet." in result.stderr


def test_pipeline_without_deals_reports_zero_totals(cli: Cli, tmp_path: Path) -> None:
    toml = tmp_path / "p.toml"
    toml.write_text(fixtures.PIPELINE_TOML)
    cli("pipeline", "set", str(toml))
    out = report(cli, "pipeline")
    assert out["rows"] == [
        {"stage": "TOTAL", "deals": 0, "amount": 0.0, "weighted_amount": 0.0, "avg_days_in_stage": None}
    ]
    steps = report(cli, "changes", "--from", "2025-01-01", "--to", "2025-02-01")["rows"]
    assert all(r["amount"] == 0 for r in steps)


def test_as_of_ties_on_changed_at_go_to_the_higher_id(loaded: Cli, db: Database) -> None:
    # Ids 99 and 100 differ in digit count: a text tie-break must still rank 100 above 99.
    before = by_key(report(loaded, "pipeline", "--as-of", "2025-04-30")["rows"], "stage")
    with db.session(write=True) as session:
        stage = dict(session.execute(text("SELECT name, id FROM stage WHERE tenant_id = 'default'")).all())
        bulk.insert_rows(
            session,
            "stage_change",
            [
                {
                    "id": change_id,
                    "tenant_id": "default",
                    "deal_id": 5,
                    "changed_at": fixtures.at("2025-04-01"),
                    "from_stage_id": stage["Lead"],
                    "to_stage_id": stage[to_stage],
                    "amount_cents": 300_000,
                    "currency": "USD",
                    "close_date": date(2025, 5, 30),
                    "idempotency_key": f"tie{change_id}",
                }
                for change_id, to_stage in ((100, "Demo"), (99, "Lead"))
            ],
        )
    after = by_key(report(loaded, "pipeline", "--as-of", "2025-04-30")["rows"], "stage")
    assert after["Demo"]["deals"] == before["Demo"]["deals"] + 1
    assert after.get("Lead", {"deals": 0})["deals"] == before["Lead"]["deals"] - 1  # no row when 0


def test_history_written_by_another_tool_is_projected_before_reporting(loaded: Cli, db: Database) -> None:
    # The fixture writes stage_change rows directly (as a killed import or another tool would),
    # leaving their projections pending; the first report finishes them, then answers.
    pending = "SELECT count(*) FROM stage_change WHERE entered_pipeline_at IS NULL"
    with db.session() as session:
        assert session.execute(text(pending)).scalar_one() > 0
    rows = by_key(report(loaded, "pipeline", "--as-of", "2025-03-31")["rows"], "stage")
    assert rows["TOTAL"]["deals"] == 3
    with db.session() as session:
        assert session.execute(text(pending)).scalar_one() == 0


def test_a_pipeline_name_is_data_not_sql(
    cli: Cli, db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "x' || (SELECT group_concat(tenant_id) FROM deal) || 'O''Brien"
    toml_name = name.replace("\\", "\\\\").replace('"', '\\"')
    monkeypatch.setattr(
        fixtures, "PIPELINE_TOML", fixtures.PIPELINE_TOML.replace('"sales"', f'"{toml_name}"')
    )
    fixtures.load(cli, db, tmp_path)
    out = report(cli, "funnel", "--by", "pipeline", "--from", "2025-01-01", "--to", "2025-12-31")
    assert {r["group"] for r in out["rows"]} == {name, "ALL"}
