"""As of now equals live, on a seeded history of 400 deals (the benchmark's generator), for every
report: live reads ``deal`` and its projections, as-of reads the history's valid rows, so this
ties the two code paths together on far more shapes than the hand-computed fixture."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from benchmarks.bench_reports import generate
from crmctl.db.engine import Database
from crmctl.pipeline import reports

CASES = {
    "pipeline": {},
    "pipeline_by_owner": {"by": "owner"},
    "forecast": {"period": "quarter"},
    "forecast_by_segment": {"by": "segment"},
    "velocity": {"date_from": date(2024, 1, 1), "date_to": date(2025, 12, 31)},
    "velocity_by_pipeline": {"date_from": date(2025, 1, 1), "date_to": date(2025, 12, 31), "by": "pipeline"},
    "stalled": {"limit": 0},
    "funnel": {"date_from": date(2023, 1, 1), "date_to": date(2026, 12, 31), "by": "month"},
}


@pytest.fixture
def seeded(db: Database) -> Database:
    generate(db, 400)
    return db


@pytest.mark.parametrize("case", CASES)
def test_as_of_now_equals_live(seeded: Database, case: str) -> None:
    kind = case.split("_")[0]
    with seeded.session() as session:
        live = reports.run_report(session, kind, reports.ReportOptions(**CASES[case]))
        rebuilt = reports.run_report(
            session, kind, reports.ReportOptions(**CASES[case], as_of=datetime.now(UTC))
        )
    assert live.rows, case
    assert rebuilt.rows == live.rows
