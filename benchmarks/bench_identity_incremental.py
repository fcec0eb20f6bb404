"""Incremental lead import: a file of new rows against a database that already holds many contacts.

``full``: 200,000 people (~1M rows) imported first, then 10,000 held-back rows timed on their own
(issue 3: <= 5 s). ``small``: 2,000 people and 1,000 held-back rows. Only the last import is timed;
it finds its candidates by index probes, so its time should not grow with the database.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import polars as pl

from crmctl.db import migrate
from crmctl.db.engine import open_database
from crmctl.demo.leads import write_lead_files
from crmctl.importers.leads import LeadImportOptions, import_leads

SCALES = {"small": (2_000, 1_000), "full": (200_000, 10_000)}


def run(scale: str) -> dict[str, Any]:
    people, new_rows = SCALES[scale]
    people = int(os.environ.get("BENCH_IDENTITY_PEOPLE", people))
    with tempfile.TemporaryDirectory(prefix="bench-identity-inc-") as tmp:
        out = Path(tmp)
        files = write_lead_files(out / "leads", people=people, seed=13)
        url = f"sqlite:///{out / 'bench.db'}"
        migrate.upgrade(url)
        db = open_database(url, "default")
        existing_rows = 0
        held_back: Path | None = None
        for lead_file in files:
            frame = pl.read_csv(lead_file.path, infer_schema=False)
            if lead_file.source == "web_form":
                held_back = out / "new_rows.csv"
                frame.tail(new_rows).write_csv(held_back)
                frame = frame.head(frame.height - new_rows)
            path = out / f"old_{lead_file.path.name}"
            frame.write_csv(path)
            existing_rows += frame.height
            import_leads(db, lead_file.import_options(paths=[path]))
        assert held_back is not None
        with db.session() as session:
            contacts = session.connection().exec_driver_sql("SELECT count(*) FROM contact").scalar()
        load = os.getloadavg()[0]
        cpu_started = time.process_time()
        started = time.perf_counter()
        result = import_leads(
            db, LeadImportOptions(paths=[held_back], source="web_form", id_column="Submission ID")
        )
        seconds = time.perf_counter() - started
        cpu_seconds = time.process_time() - cpu_started
        db.dispose()
    counts = result.counts
    return {
        "existing_rows": existing_rows,
        "existing_contacts": contacts,
        "new_rows": counts["rows_read"],
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu_seconds, 2),  # this process's, all threads
        "load_average_1m": round(load, 2),
        "merged_into_existing": counts["merged_into_existing"],
        "new_contacts": counts["new_contacts"],
    }
