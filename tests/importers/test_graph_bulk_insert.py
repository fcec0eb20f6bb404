"""bulk.insert_frame writes exactly what it is given, whichever columns it can write as constants."""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest

from crmctl.db.bulk import insert_frame
from crmctl.db.engine import Database

FRAMES = {
    "mixed": pl.DataFrame(
        {
            "name": ["O'Brien; DROP", "O'Brien; DROP", "O'Brien; DROP"],  # one value, with a quote
            "n": [7, 7, 7],
            "label": ["a", "b", None],
            "qty": [1.5, 1.5, 1.5],
            "empty": pl.Series([None, None, None], dtype=pl.String),
        }
    ),
    "one row": pl.DataFrame(
        {"name": ["x"], "n": [-(2**63)], "label": ["é\u2603"], "qty": [None], "empty": [None]}
    ),
    "all constant": pl.DataFrame({"name": ["t"] * 4, "n": [0] * 4, "label": ["z"] * 4, "qty": [2.0] * 4}),
    # several multi-row statements and single-row remainders
    "many rows": pl.DataFrame(
        {
            "name": [f"n{i}" for i in range(1_234)],
            "n": list(range(1_234)),
            "label": [None if i % 7 else "x" for i in range(1_234)],
            "qty": [i / 4 for i in range(1_234)],
        }
    ),
}


@pytest.mark.parametrize("case", sorted(FRAMES))
def test_insert_frame_round_trips_constant_and_varying_columns(db: Database, case: str) -> None:
    frame = FRAMES[case]
    with db.session(write=True) as session:
        conn = session.connection()
        conn.exec_driver_sql(
            "CREATE TEMP TABLE bulk_probe (name TEXT, n BIGINT, label TEXT, qty REAL, empty TEXT)"
        )
        assert insert_frame(session, "bulk_probe", frame) == frame.height
        stored = conn.exec_driver_sql(f"SELECT {', '.join(frame.columns)} FROM bulk_probe").all()
        conn.exec_driver_sql("DROP TABLE bulk_probe")
    expected: list[tuple[Any, ...]] = frame.rows()
    assert sorted(map(tuple, stored), key=repr) == sorted(expected, key=repr)
