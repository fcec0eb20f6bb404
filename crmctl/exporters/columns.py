"""What each exported column is: one kind per column, mapped to Arrow, polars and PostgreSQL text.

The export writes every column of a tenant table with a type derived from the schema (never
inferred from the data), so an empty table and a full one produce the same file schema.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import polars as pl
import pyarrow as pa
from sqlalchemy import JSON, Boolean, Column, Date, DateTime, Float, Integer, String, Table
from sqlalchemy.types import TypeDecorator

from crmctl.db.models import TENANT_TABLES
from crmctl.errors import UsageError

# Spreadsheets run a cell that starts with one of these as a formula (OWASP "CSV injection").
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
# Written for timestamps on every path, the same as PostgreSQL's ISO output in UTC.
CSV_DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S%.f+00"


class Kind(StrEnum):
    integer = "integer"
    float = "float"
    boolean = "boolean"
    datetime = "datetime"
    date = "date"
    string = "string"
    json = "json"  # JSON text, exported as a string


ARROW_TYPES: dict[Kind, pa.DataType] = {
    Kind.integer: pa.int64(),
    Kind.float: pa.float64(),
    Kind.boolean: pa.bool_(),
    Kind.datetime: pa.timestamp("us", tz="UTC"),
    Kind.date: pa.date32(),
    Kind.string: pa.string(),
    Kind.json: pa.string(),
}
POLARS_TYPES: dict[Kind, pl.DataType] = {
    Kind.integer: pl.Int64(),
    Kind.float: pl.Float64(),
    Kind.boolean: pl.Boolean(),
    Kind.datetime: pl.Datetime("us", "UTC"),
    Kind.date: pl.Date(),
    Kind.string: pl.String(),
    Kind.json: pl.String(),
}


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    kind: Kind


@dataclass(frozen=True)
class TableSpec:
    name: str
    columns: tuple[ColumnSpec, ...]

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def arrow_schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, ARROW_TYPES[c.kind]) for c in self.columns])

    @property
    def polars_schema(self) -> dict[str, pl.DataType]:
        return {c.name: POLARS_TYPES[c.kind] for c in self.columns}


def kind_of(column: Column) -> Kind:
    sql_type = column.type
    if isinstance(sql_type, TypeDecorator):  # e.g. sqlmodel's AutoString
        sql_type = sql_type.impl_instance
    # Order matters: Boolean and DateTime are not Integer/String subclasses, JSON is checked first.
    for sql_class, kind in (
        (JSON, Kind.json),
        (Boolean, Kind.boolean),
        (Integer, Kind.integer),
        (Float, Kind.float),
        (DateTime, Kind.datetime),
        (Date, Kind.date),
        (String, Kind.string),
    ):
        if isinstance(sql_type, sql_class):
            return kind
    raise TypeError(f"column {column.table.name}.{column.name} has an unexported type {sql_type!r}")


def table_spec(table: Table) -> TableSpec:
    return TableSpec(table.name, tuple(ColumnSpec(c.name, kind_of(c)) for c in table.columns))


EXPORT_TABLES: dict[str, TableSpec] = {
    model.__tablename__: table_spec(model.__table__)  # type: ignore[attr-defined]
    for model in TENANT_TABLES
}


def select_tables(names: list[str] | None) -> list[TableSpec]:
    """The tables to export, in schema order; every unknown name is reported at once."""
    if not names:
        return list(EXPORT_TABLES.values())
    wanted = {n.strip() for n in names if n.strip()}
    unknown = sorted(wanted - EXPORT_TABLES.keys())
    if unknown:
        raise UsageError(
            f"Unknown table(s): {', '.join(unknown)}.",
            hint=f"Tables that can be exported: {', '.join(EXPORT_TABLES)}.",
        )
    return [spec for name, spec in EXPORT_TABLES.items() if name in wanted]


def neutralise_formulas(frame: pl.DataFrame, spec: TableSpec) -> pl.DataFrame:
    """Prefix an apostrophe to text cells a spreadsheet would run as a formula.

    JSON columns are left alone: JSON text never starts with = + @ tab or CR, and a leading '-'
    is a negative number, which a spreadsheet reads as a number, not a formula."""
    pattern = "^[" + "".join("\\" + p if p in "-" else p for p in FORMULA_PREFIXES) + "]"
    exprs = [
        pl.when(pl.col(c.name).str.contains(pattern))
        .then(pl.lit("'") + pl.col(c.name))
        .otherwise(pl.col(c.name))
        .alias(c.name)
        for c in spec.columns
        if c.kind is Kind.string
    ]
    return frame.with_columns(exprs) if exprs else frame
