"""Lead import with identity resolution: accuracy against ground truth, and speed.

``small``: 2,000 people (~10k rows); ``full``: 200,000 people (~1M rows) as issue 3 asks. Prints
pairwise precision, recall, F1, the reachable ceiling (true pairs joined by some chain of shared
evidence: email, phone, helpdesk id, name + company), recall of reachable pairs, and the baseline
of exact matching on lower-cased email. Timing is the whole import into an empty SQLite database.
"""

from __future__ import annotations

import os
import resource
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import polars as pl

from crmctl.db import migrate
from crmctl.db.engine import open_database
from crmctl.demo.leads import write_lead_files
from crmctl.identity.history import source_links
from crmctl.identity.records import FIELD_ALIASES, normalise_records, record_keys
from crmctl.identity.resolve import connected
from crmctl.importers.leads import import_leads
from crmctl.importers.reader import resolve_columns

SCALES = {"small": 2_000, "full": 200_000}


def _database_url(out: Path) -> str:
    """SQLite in the temporary folder, or a fresh PostgreSQL database when BENCH_PG_ADMIN_URL is set
    (e.g. postgresql://postgres@127.0.0.1:5432/test)."""
    admin = os.environ.get("BENCH_PG_ADMIN_URL")
    if not admin:
        return f"sqlite:///{out / 'bench.db'}"
    import uuid

    import psycopg

    name = f"crmctl_bench_identity_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{admin.rsplit('/', 1)[0]}/{name}"


def _drop_if_postgresql(url: str) -> None:
    admin = os.environ.get("BENCH_PG_ADMIN_URL")
    if admin and url.startswith("postgresql"):
        import psycopg

        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


def _pairs(frame: pl.DataFrame, *cols: str) -> int:
    return frame.group_by(cols).len().select((pl.col("len") * (pl.col("len") - 1) // 2).sum()).item() or 0


def run(scale: str) -> dict[str, Any]:
    people = int(os.environ.get("BENCH_IDENTITY_PEOPLE", SCALES[scale]))
    with tempfile.TemporaryDirectory(prefix="bench-identity-") as tmp:
        out = Path(tmp)
        started = time.perf_counter()
        files = write_lead_files(out / "leads", people=people, seed=11)
        generate_seconds = time.perf_counter() - started
        url = _database_url(out)
        migrate.upgrade(url)
        db = open_database(url, "default")
        rows = 0
        load_before = os.getloadavg()[0]
        cpu_started = time.process_time()
        writers_cpu_started = _children_cpu_seconds()
        started = time.perf_counter()
        with _TotalRss() as total_rss:
            for lead_file in files:
                result = import_leads(db, lead_file.import_options(default_region="US"))
                rows += result.counts["rows_read"]
        import_seconds = time.perf_counter() - started
        import_cpu_seconds = time.process_time() - cpu_started
        writers_cpu_seconds = _children_cpu_seconds() - writers_cpu_started
        load_after = os.getloadavg()[0]
        peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # generator's too
        # SQLite's batch writer process (one per file, each gone when its file is done): the
        # largest one's peak, which ran beside this process
        writer_peak_rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        with db.session() as session:
            links = source_links(session)
        db.dispose()
        _drop_if_postgresql(url)
        truth = pl.read_csv(out / "leads" / "truth.csv", infer_schema=False)
        accuracy = _accuracy(links, truth, files)
    return {
        "backend": "postgresql" if os.environ.get("BENCH_PG_ADMIN_URL") else "sqlite",
        "people": people,
        "rows": rows,
        "generate_seconds": round(generate_seconds, 1),
        "import_seconds": round(import_seconds, 1),
        "rows_per_second": round(rows / import_seconds),
        # this process's CPU (all its threads, polars' too; not PostgreSQL's server) and its
        # SQLite writer processes'
        "import_cpu_seconds": round(import_cpu_seconds, 1),
        "writer_process_cpu_seconds": round(writers_cpu_seconds, 1),
        "rows_per_cpu_second": round(rows / (import_cpu_seconds + writers_cpu_seconds)),
        "load_average_1m": [round(load_before, 2), round(load_after, 2)],
        "peak_rss_mb_after_import": round(peak_rss_mb),
        "writer_process_peak_rss_mb": round(writer_peak_rss_mb),
        # this process and its writer process together, sampled every 100 ms during the import
        "peak_rss_mb_import_with_writer": total_rss.peak_mb,
        **accuracy,
    }


class _TotalRss:
    """The largest sum of this process's and its children's resident memory, sampled on a thread."""

    def __init__(self, every: float = 0.1) -> None:
        self.peak_mb = 0
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> _TotalRss:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        me = Path("/proc") / str(os.getpid())
        while not self._stop.wait(self._every):
            # this process and its children only: a walk of all of /proc every 100 ms cost about
            # 4% of a core, taken from the import it measures
            children = " ".join(_read(task / "children") for task in me.joinpath("task").iterdir())
            total_kb = sum(
                _rss_kb(_read(Path("/proc") / pid / "status")) for pid in [me.name, *children.split()]
            )
            self.peak_mb = max(self.peak_mb, total_kb // 1024)


def _rss_kb(status: str) -> int:
    """VmRSS from a /proc/PID/status text (0 for a process that has just gone)."""
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:  # a child or thread that has just gone
        return ""


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _accuracy(links: pl.DataFrame, truth: pl.DataFrame, files: list[Any]) -> dict[str, Any]:
    joined = links.join(truth, on=["source", "source_record_id"])
    true_pairs = _pairs(truth, "person_id")
    found = _pairs(joined, "contact_id")
    correct = _pairs(joined, "person_id", "contact_id")
    precision = correct / found if found else 1.0
    recall = correct / true_pairs if true_pairs else 1.0
    reachable = _reachable_pairs(truth, files)
    baseline = _email_baseline(truth, files)
    return {
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(2 * precision * recall / (precision + recall), 4) if precision + recall else 0.0,
        "reachable_ceiling": round(reachable / true_pairs, 4),
        "recall_of_reachable": round(correct / reachable, 4) if reachable else 1.0,
        "baseline_email_precision": baseline[0],
        "baseline_email_recall": baseline[1],
    }


def _normalised(files: list[Any]) -> pl.DataFrame:
    parts = []
    for lead_file in files:
        raw = pl.read_csv(lead_file.path, infer_schema=False)
        mapping = resolve_columns(raw.columns, FIELD_ALIASES)
        mapped = raw.select(
            *[pl.col(h).alias(f) for f, h in mapping.items()],
            pl.col(lead_file.id_column).alias("source_record_id"),
        )
        records = normalise_records(mapped, source=lead_file.source, default_region="US")
        parts.append(
            records.select(
                pl.lit(lead_file.source).alias("source"),
                "source_record_id",
                "email",
                "email_norm",
                "phone_e164",
                "helpdesk_key",
                "company_key",
            )
        )
    return pl.concat(parts)


def _reachable_pairs(truth: pl.DataFrame, files: list[Any]) -> int:
    """True pairs joined by a chain of shared evidence between records of the same person."""
    records = _normalised(files).join(truth, on=["source", "source_record_id"])
    records = records.with_row_index("node").with_columns(pl.col("node").cast(pl.Int64))
    keys = record_keys(records).join(records.select("node", "person_id"), on="node")
    keys = keys.with_columns((pl.col("person_id") + "|" + pl.col("value")).alias("value"))
    heads = keys.with_columns(pl.col("node").min().over("kind", "value").alias("head"))
    edges = heads.filter(pl.col("node") != pl.col("head")).select(
        pl.col("head").alias("a"), pl.col("node").alias("b")
    )
    components = connected(records.height, edges)
    return _pairs(components.join(records.select("node", "person_id"), on="node"), "cluster")


def _email_baseline(truth: pl.DataFrame, files: list[Any]) -> tuple[float, float]:
    records = _normalised(files).join(truth, on=["source", "source_record_id"])
    lowered = records.with_columns(pl.col("email").str.strip_chars().str.to_lowercase().alias("lower"))
    matched = lowered.filter(pl.col("lower").is_not_null())
    found = _pairs(matched, "lower")
    correct = _pairs(matched, "lower", "person_id")
    true_pairs = _pairs(truth, "person_id")
    return round(correct / found, 4) if found else 1.0, round(correct / true_pairs, 4)
