"""`crmctl demo` minus the talking: generate the graph files and import them with the real importers."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl

from crmctl.db.bulk import insert_frame
from crmctl.db.engine import Database
from crmctl.db.sql import frame as sql_frame
from crmctl.demo.graph import (
    DEMO_SOURCE,
    IMPORT_ORDER,
    GraphFiles,
    GraphSizes,
    exchange_rates,
    write_graph_files,
)
from crmctl.importers.graph import TABLES, ImportOptions, ImportResult, import_file


@dataclass(frozen=True)
class DemoOptions:
    people: int
    seed: int
    out: Path
    as_of: date

    def audit(self) -> dict[str, Any]:
        return {
            "people": self.people,
            "seed": self.seed,
            "out": str(self.out),
            "as_of": self.as_of.isoformat(),
        }


@dataclass
class DemoSummary:
    files: GraphFiles
    results: list[ImportResult] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        return [
            {
                "kind": r.kind,
                "rows": r.rows,
                **vars(r.tables[TABLES[r.kind]]),
                "seconds": self.seconds.get(r.kind),
            }
            for r in self.results
        ]

    def counts(self) -> dict[str, Any]:
        return {r.kind: {"rows": r.rows, **r.counts()} for r in self.results}


def generate_and_import(db: Database, options: DemoOptions, *, erasure_key: str | None = None) -> DemoSummary:
    """Write the graph files into ``options.out`` and import them in dependency order."""
    files = write_graph_files(
        options.out, GraphSizes.for_people(options.people), seed=options.seed, as_of=options.as_of
    )
    summary = DemoSummary(files=files)
    for kind in IMPORT_ORDER:
        path = files.paths[kind]
        import_options = ImportOptions(
            source=DEMO_SOURCE,
            rejects_path=path.with_name(f"{path.stem}.rejects.csv"),
            erasure_key=erasure_key,
            actor="crmctl demo",
        )
        started = time.perf_counter()
        summary.results.append(import_file(db, kind, path, import_options))
        summary.seconds[kind] = round(time.perf_counter() - started, 2)
    _add_exchange_rates(db, options.as_of)
    return summary


def _add_exchange_rates(db: Database, as_of: date) -> None:
    """The demo's deals are in USD, EUR and GBP: give the reports rates to convert them."""
    rates = exchange_rates(as_of)
    with db.session(write=True) as session:
        stored = sql_frame(
            session,
            "SELECT base, currency, CAST(day AS TEXT) AS day FROM exchange_rate WHERE tenant_id = :tenant",
            {"base": pl.String, "currency": pl.String, "day": pl.String},
        ).with_columns(pl.col("day").str.slice(0, 10).str.to_date())
        fresh = rates.join(stored, on=["base", "currency", "day"], how="anti")
        insert_frame(session, "exchange_rate", fresh.with_columns(pl.lit(db.tenant).alias("tenant_id")))
