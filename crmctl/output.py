"""Rendering results: a rich table for people, JSON / CSV / NDJSON for scripts.

Data goes to stdout; messages and progress go to stderr (see ``commands.common.AppContext``).
Machine formats bypass rich entirely so nothing is wrapped, coloured or truncated.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import IO, Any

import polars as pl
from rich.console import Console
from rich.table import Table


class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"
    ndjson = "ndjson"


def json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def dumps(value: Any, *, indent: int | None = 2) -> str:
    return json.dumps(value, default=json_default, indent=indent, ensure_ascii=False)


Rows = Sequence[Mapping[str, Any]] | pl.DataFrame


def _as_dicts(rows: Rows) -> list[dict[str, Any]]:
    return rows.to_dicts() if isinstance(rows, pl.DataFrame) else [dict(r) for r in rows]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) >= 1000 else f"{value:.4g}" if value % 1 else f"{value:.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, dict | list):
        return dumps(value, indent=None)
    return str(value)


def render_rows(
    rows: Rows,
    fmt: OutputFormat,
    *,
    console: Console,
    out: IO[str] | None = None,
    title: str | None = None,
    columns: Sequence[str] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> None:
    """Write ``rows`` in ``fmt``. ``meta`` (definitions, totals) is added to JSON as a wrapper
    object ``{"rows": [...], **meta}`` and shown under the table."""
    out = out or sys.stdout
    data = _as_dicts(rows)
    cols = (
        list(columns) if columns else (list(rows.columns) if isinstance(rows, pl.DataFrame) else _keys(data))
    )
    if fmt is OutputFormat.json:
        payload: Any = [{c: r.get(c) for c in cols} for r in data]
        if meta:
            payload = {"rows": payload, **meta}
        out.write(dumps(payload) + "\n")
    elif fmt is OutputFormat.ndjson:
        for r in data:
            out.write(dumps({c: r.get(c) for c in cols}, indent=None) + "\n")
    elif fmt is OutputFormat.csv:
        write_csv(data, cols, out)
    else:
        table = Table(title=title, show_lines=False, header_style="bold")
        for c in cols:
            numeric = any(isinstance(r.get(c), int | float) and not isinstance(r.get(c), bool) for r in data)
            table.add_column(c, justify="right" if numeric else "left", overflow="fold")
        for r in data:
            table.add_row(*(_cell(r.get(c)) for c in cols))
        console.print(table)
        if not data:
            console.print("[dim](no rows)[/dim]")


def render_mapping(
    mapping: Mapping[str, Any],
    fmt: OutputFormat,
    *,
    console: Console,
    out: IO[str] | None = None,
    title: str | None = None,
) -> None:
    """A single record: key/value table for people, one object for scripts."""
    out = out or sys.stdout
    if fmt in (OutputFormat.json, OutputFormat.ndjson):
        out.write(dumps(dict(mapping), indent=None if fmt is OutputFormat.ndjson else 2) + "\n")
    elif fmt is OutputFormat.csv:
        write_csv([dict(mapping)], list(mapping), out)
    else:
        table = Table(title=title, show_header=False)
        table.add_column("field", style="bold")
        table.add_column("value", overflow="fold")
        for key, value in mapping.items():
            table.add_row(key, _cell(value))
        console.print(table)


def write_csv(rows: Iterable[Mapping[str, Any]], columns: Sequence[str], out: IO[str]) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for r in rows:
        writer.writerow(["" if r.get(c) is None else _csv_cell(r.get(c)) for c in columns])


def _csv_cell(value: Any) -> Any:
    # as JSON spells them, not Python: a script reading a CSV cell gets the same as from --format json
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return dumps(value, indent=None)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _keys(rows: list[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for r in rows:
        for k in r:
            seen.setdefault(k, None)
    return list(seen)
