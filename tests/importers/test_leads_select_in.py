"""The lead importer's index probes (``leads._select_in``) return what is stored, whatever the text:
on SQLite the hits come back as one JSON array per column and polars decodes them, on PostgreSQL
as one array per column."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import crmctl.importers.leads as leads
from crmctl.db import bulk
from crmctl.db.engine import Database
from tests.conftest import create_scratch_table

# any text a column can hold: PostgreSQL's text has no NUL, and UTF-8 has no lone surrogates
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)


@pytest.fixture
def probed(db: Database) -> Database:
    create_scratch_table(db, "probed", "id BIGINT PRIMARY KEY, value TEXT, other TEXT")
    return db


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(st.one_of(st.none(), TEXT), st.one_of(st.none(), TEXT)), max_size=30))
@example(
    rows=[
        (" padded ", 'a "quoted" word'),
        ("back\\slash", "new\nline\ttab"),
        ("", None),
        ("null", "[]"),
        ("ünïcödé \u2028 ☃", '{"a": 1}'),
        (None, "\\u0041"),
    ]
)
def test_probes_return_the_stored_values_whatever_the_text(
    probed: Database, rows: list[tuple[str | None, str | None]]
) -> None:
    stored = pl.DataFrame(
        {"id": list(range(1, len(rows) + 1)), "value": [r[0] for r in rows], "other": [r[1] for r in rows]},
        schema={"id": pl.Int64, "value": pl.String, "other": pl.String},
    )
    with probed.session(write=True) as session:
        session.connection().exec_driver_sql("DELETE FROM probed")
        bulk.insert_frame(session, "probed", stored)
    # every other id probed, and one that is not there
    wanted = sorted([*stored["id"].to_list()[::2], 10_000])
    with probed.session() as session:
        got = leads._select_in(
            session,
            "SELECT id, value, other FROM probed WHERE {cond}",
            "id",
            wanted,
            {},
            {"id": pl.Int64, "value": pl.String, "other": pl.String},
        )
    expected = stored.filter(pl.col("id").is_in(wanted))
    assert got.sort("id").equals(expected)
