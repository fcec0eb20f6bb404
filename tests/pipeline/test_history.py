"""The stage-history projections (valid_until, entered_*_at) against a naive recomputation.

Histories arrive out of order and in several batches, with ties on changed_at; after each refresh
the rows valid at T must be exactly each deal's last row at or before T (order: changed_at, id),
and the timing columns what the history says.
"""

from __future__ import annotations

import csv
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from crmctl.db import bulk
from crmctl.db.engine import Database
from crmctl.pipeline import config, history
from crmctl.pipeline.state import Sql, valid_at
from tests.conftest import Cli

EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
STAGES = ("A", "B", "C")


def _setup(db: Database) -> dict[str, int]:
    with db.session(write=True) as session:
        specs = tuple(config.StageSpec(name, 0.5) for name in STAGES)
        config.set_pipelines(session, [config.PipelineSpec("p", specs, True, "USD")])
        (pipeline,) = config.list_pipelines(session)
        pipeline_id = pipeline.id
        stage = {s.name: s.id for s in pipeline.stages}
        bulk.insert_rows(
            session,
            "deal",
            [
                {
                    "id": d,
                    "tenant_id": "default",
                    "pipeline_id": pipeline_id,
                    "stage_id": stage["A"],
                    "currency": "USD",
                    "created_at": EPOCH,
                    "updated_at": EPOCH,
                }
                for d in range(1, 21)
            ],
        )
    return stage


def _pipeline_file(tmp_path: Path) -> Path:
    path = tmp_path / "pipelines.toml"
    stages = "\n".join(f'[[pipeline.stage]]\nname = "{name}"\nprobability = 0.5\n' for name in STAGES)
    path.write_text(f'[[pipeline]]\nname = "p"\ndefault = true\ncurrency = "USD"\n\n{stages}')
    return path


def _csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _random_history(rng: random.Random, stage: dict[str, int]) -> list[dict[str, object]]:
    rows = []
    for deal in range(1, 21):
        previous = None
        for step in range(rng.randint(1, 6)):
            to = rng.choice(STAGES)
            # Ties on purpose: several changes of one deal in the same microsecond.
            # Sub-second steps too: the projections must keep microseconds exactly.
            at = EPOCH + timedelta(
                days=rng.choice([0, 1, 1, 2, 3, 5, 8]) + step // 3,
                microseconds=rng.choice([0, 0, 7, 999_999]),
            )
            rows.append(
                {
                    "tenant_id": "default",
                    "deal_id": deal,
                    "changed_at": at,
                    "from_stage_id": stage[previous] if previous else None,
                    "to_stage_id": stage[to],
                    "amount_cents": rng.randint(1, 9) * 100,
                    "currency": "USD",
                    "idempotency_key": f"{deal}-{step}-{rng.random()}",
                }
            )
            previous = to
    rng.shuffle(rows)
    return rows


def _stored(db: Database) -> pl.DataFrame:
    with db.session() as session:
        frame = bulk.read_frame(
            session,
            "SELECT id, deal_id, changed_at, from_stage_id, to_stage_id, valid_until, entered_stage_at, "
            "entered_pipeline_at FROM stage_change WHERE tenant_id = 'default'",
        )
    return frame.with_columns(
        pl.col(c).cast(pl.String)
        for c in ("changed_at", "valid_until", "entered_stage_at", "entered_pipeline_at")
    )


def _expected(frame: pl.DataFrame) -> pl.DataFrame:
    """The projections computed naively, deal by deal, in Python."""
    out = []
    for _, rows in frame.sort("deal_id", "changed_at", "id").group_by("deal_id", maintain_order=True):
        records = rows.to_dicts()
        entered = None
        for i, r in enumerate(records):
            if r["from_stage_id"] is None or r["from_stage_id"] != r["to_stage_id"]:
                entered = r["changed_at"]
            out.append(
                {
                    "id": r["id"],
                    "valid_until": records[i + 1]["changed_at"] if i + 1 < len(records) else None,
                    "entered_stage_at": entered,
                    "entered_pipeline_at": records[0]["changed_at"],
                }
            )
    return pl.DataFrame(
        out,
        schema={c: pl.String for c in ("valid_until", "entered_stage_at", "entered_pipeline_at")}
        | {"id": pl.Int64},
    )


def test_projections_follow_out_of_order_batches(db: Database) -> None:
    stage = _setup(db)
    rows = _random_history(random.Random(7), stage)
    for start in range(0, len(rows), 17):
        with db.session(write=True) as session:
            bulk.insert_rows(session, "stage_change", rows[start : start + 17])
            assert history.refresh_pending(session) > 0
        stored = _stored(db)
        want = _expected(stored)
        got = stored.select("id", "valid_until", "entered_stage_at", "entered_pipeline_at").sort("id")
        want = want.select(got.columns).sort("id")
        assert got.rows() == want.rows(), "projection differs from the naive recomputation"
    with db.session(write=True) as session:
        assert history.refresh_pending(session) == 0  # nothing pending
        assert history.refresh(session) == 0  # and a full refresh changes nothing


def test_rows_valid_at_each_moment_are_the_last_row_at_or_before_it(db: Database) -> None:
    stage = _setup(db)
    with db.session(write=True) as session:
        bulk.insert_rows(session, "stage_change", _random_history(random.Random(11), stage))
        history.refresh(session)
    stored = _stored(db)
    for day in range(-1, 11):
        moment = EPOCH + timedelta(days=day, hours=12)
        with db.session() as session:
            sql = Sql.of(session)
            got = bulk.read_frame(
                session,
                f"SELECT s.deal_id, s.id FROM stage_change s WHERE s.tenant_id = 'default' "
                f"AND {valid_at(sql, 's', 'at')} ORDER BY s.deal_id",
                {"at": sql.ts(moment)},
            )
        cut = moment.strftime("%Y-%m-%d %H:%M:%S")
        want = (
            stored.filter(pl.col("changed_at") <= cut)
            .sort("deal_id", "changed_at", "id")
            .group_by("deal_id", maintain_order=True)
            .last()
            .select("deal_id", "id")
        )
        assert got.rows() == want.rows(), f"state as of day {day}"


def test_deal_carries_the_timing_of_its_latest_row(db: Database) -> None:
    stage = _setup(db)
    with db.session(write=True) as session:
        bulk.insert_rows(session, "stage_change", _random_history(random.Random(3), stage))
        history.refresh(session)
        mismatches = session.execute(
            text(
                "SELECT COUNT(*) FROM deal d "
                "JOIN stage_change s ON s.deal_id = d.id AND s.valid_until IS NULL "
                "WHERE d.entered_pipeline_at IS NULL OR d.entered_pipeline_at <> s.entered_pipeline_at "
                "OR (d.entered_stage_at IS NULL) <> (s.entered_stage_at IS NULL) "
                "OR d.entered_stage_at <> s.entered_stage_at"
            )
        ).scalar_one()
        latest = session.execute(
            text("SELECT COUNT(*) FROM stage_change WHERE valid_until IS NULL")
        ).scalar_one()
    assert mismatches == 0
    assert latest == 20  # exactly one latest row per deal


def test_rows_appended_in_order_are_projected_without_a_refresh() -> None:
    at = [datetime(2025, 1, d, tzinfo=UTC) for d in range(1, 6)]
    latest = pl.DataFrame(
        {
            "id": [10],
            "deal_id": [1],
            "changed_at": [at[1]],
            "entered_stage_at": [at[0]],
            "entered_pipeline_at": [at[0]],
        }
    )
    new = pl.DataFrame(
        {
            "deal_id": [1, 2, 1, 2, 3],
            "changed_at": [at[3], at[2], at[2], at[2], at[0]],
            "from_stage_id": [5, None, 5, 6, None],
            "to_stage_id": [6, 6, 5, 7, 5],
        }
    )
    latest = pl.concat(
        [
            latest,
            pl.DataFrame(  # deal 3's stored row is later than its new one
                {
                    "id": [11],
                    "deal_id": [3],
                    "changed_at": [at[4]],
                    "entered_stage_at": [at[4]],
                    "entered_pipeline_at": [at[4]],
                }
            ),
        ]
    )
    rows, superseded, deals = history.project_appended(new, latest)
    assert rows.select("valid_until", "entered_stage_at", "entered_pipeline_at").rows() == [
        (None, at[3], at[0]),  # deal 1: moves 5 -> 6 on the 4th, after its stored row and the 3rd
        (at[2], at[2], at[2]),  # deal 2: two rows on the 3rd, in insertion order
        (at[3], at[0], at[0]),  # deal 1 on the 3rd: 5 -> 5 is no move; entered stays the stored one
        (None, at[2], at[2]),
        (None, None, None),  # deal 3 arrived out of order: pending, for the refresh
    ]
    assert superseded.rows() == [(10, at[2])]
    assert sorted(deals.rows()) == [(1, at[3], at[0]), (2, at[2], at[2])]


def test_stage_change_imports_in_and_out_of_order_keep_projections_exact(
    cli: Cli, db: Database, tmp_path: Path
) -> None:
    rng = random.Random(5)
    cli("pipeline", "set", str(_pipeline_file(tmp_path)))
    _csv(
        tmp_path / "deals.csv",
        ["external_id", "name", "stage", "amount"],
        [[f"D{d}", f"deal {d}", "A", "100"] for d in range(1, 16)],
    )
    cli("import", "deals", str(tmp_path / "deals.csv"))
    rows = []
    for d in range(1, 16):
        previous = ""
        for step in range(rng.randint(1, 5)):
            to = rng.choice(STAGES)
            rows.append([f"D{d}", f"2025-01-{1 + rng.randint(0, 20):02d}T{step:02d}:00:00Z", previous, to])
            previous = to
    early = [r for r in rows if r[1] < "2025-01-08"]
    late = [r for r in rows if r[1] >= "2025-01-15"]
    middle = [r for r in rows if "2025-01-08" <= r[1] < "2025-01-15"]  # arrives last: out of order
    for name, part in (("early", early), ("late", late), ("middle", middle)):
        path = _csv(
            tmp_path / f"{name}.csv", ["deal_external_id", "changed_at", "from_stage", "to_stage"], part
        )
        cli("import", "stage-changes", str(path))
        stored = _stored(db)
        assert stored.filter(pl.col("entered_pipeline_at").is_null()).height == 0
        want = _expected(stored)
        got = stored.select("id", "valid_until", "entered_stage_at", "entered_pipeline_at").sort("id")
        assert got.rows() == want.select(got.columns).sort("id").rows(), f"after the {name} file"


def test_projecting_a_deal_holds_it_against_a_second_writer(db: Database) -> None:
    if not db.is_postgresql:
        pytest.skip("SQLite: a write transaction already holds the database's write lock")
    stage = _setup(db)
    with db.session(write=True) as session:
        bulk.insert_rows(session, "stage_change", _random_history(random.Random(2), stage))
        history.refresh(session)
    with db.session(write=True) as first:
        history.latest_rows(first, [2])  # as the stage-changes import does before projecting
        with db.session(write=True) as second, pytest.raises(OperationalError):
            second.execute(text("SELECT id FROM deal WHERE id = 2 FOR UPDATE NOWAIT"))
        with db.session(write=True) as other:  # another deal stays free
            other.execute(text("SELECT id FROM deal WHERE id = 3 FOR UPDATE NOWAIT"))
