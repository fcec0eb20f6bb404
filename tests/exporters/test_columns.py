"""Column kinds from the schema, table selection, and the CSV formula neutraliser."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crmctl.errors import UsageError
from crmctl.exporters.columns import (
    EXPORT_TABLES,
    FORMULA_PREFIXES,
    ColumnSpec,
    Kind,
    TableSpec,
    neutralise_formulas,
    select_tables,
)


def _spec(**kinds: Kind) -> TableSpec:
    return TableSpec("t", tuple(ColumnSpec(name, kind) for name, kind in kinds.items()))


def test_every_tenant_table_is_exported_with_typed_columns() -> None:
    assert len(EXPORT_TABLES) == 26
    deal = {c.name: c.kind for c in EXPORT_TABLES["deal"].columns}
    assert deal["amount_cents"] is Kind.integer and deal["close_date"] is Kind.date
    assert deal["created_at"] is Kind.datetime and deal["tenant_id"] is Kind.string
    assert {c.name: c.kind for c in EXPORT_TABLES["contact"].columns}["field_provenance"] is Kind.json
    assert {c.name: c.kind for c in EXPORT_TABLES["pipeline"].columns}["is_default"] is Kind.boolean
    assert all("tenant_id" in spec.column_names for spec in EXPORT_TABLES.values())


def test_select_tables_keeps_schema_order_and_reports_every_unknown_name() -> None:
    assert [s.name for s in select_tables(["deal", " contact"])] == ["contact", "deal"]
    with pytest.raises(UsageError, match=r"Unknown table\(s\): deals, nope\."):
        select_tables(["deal", "deals", "nope"])


@given(st.lists(st.one_of(st.none(), st.text(max_size=12)), max_size=20))
def test_neutraliser_prefixes_exactly_the_formula_cells_and_is_idempotent(values: list[str | None]) -> None:
    spec = _spec(text=Kind.string, doc=Kind.json)
    frame = pl.DataFrame({"text": values, "doc": values}, schema={"text": pl.String, "doc": pl.String})
    once = neutralise_formulas(frame, spec)
    assert neutralise_formulas(once, spec).equals(once)
    assert once["doc"].to_list() == values  # JSON columns are never touched
    for before, after in zip(values, once["text"].to_list(), strict=True):
        if before is not None and before.startswith(FORMULA_PREFIXES):
            assert after == "'" + before
        else:
            assert after == before
