"""Scoring: normalise raw signals within segments, weight them, band the composite, store it.

The composite of an account is, exactly, ``sum(weight * normalised)`` over its stored signal rows,
added in signal-name order (weights are the segment's weights rescaled to sum to 1 over the
signals that count). Everything is vectorised over all accounts at once in polars.

Parent accounts (accounts other accounts name as ``parent_id``) are rolled up from their direct
children's composites by the model's rule; their stored breakdown is one ``children`` row.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import date, datetime
from datetime import time as dt_time
from typing import Any

import polars as pl
from sqlalchemy import text
from sqlmodel import Session

from crmctl.db import bulk
from crmctl.db.engine import Database, tenant_of
from crmctl.db.models import utcnow
from crmctl.health.model import UNSEGMENTED, HealthModel, SignalSpec
from crmctl.health.signals import RAW_DECIMALS, Window, contracts, raw_signals

NEUTRAL = 50.0
ZSCORE_SPAN = 2.5  # z = -2.5 maps to 0 and z = +2.5 to 100 (linear, clipped)
ROLLUP_SIGNAL = "children"
ROLLUP_DEPTH = 10  # parent chains deeper than this are rolled up from partially rolled children
DRIVERS_PER_TRANSITION = 3
TRANSITION_KIND = "health_transition"


@dataclass
class ScoreResult:
    as_of: date
    model_name: str
    model_version: str
    accounts: int
    bands: dict[str, int]
    transitions: int
    replaced: int
    new_transition_events: int
    dry_run: bool
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class Scores:
    snapshots: pl.DataFrame  # account_id, segment, composite, band
    signals: pl.DataFrame  # account_id, signal, raw_value, normalised_value, weight, contribution


# -- reading --------------------------------------------------------------------------------------


def _accounts(session: Session, window: Window) -> pl.DataFrame:
    frame = bulk.read_frame(
        session,
        "SELECT id AS account_id, parent_id, arr_tier, plan, industry, segment, country "
        "FROM account WHERE tenant_id = :tenant ORDER BY id",
        {"tenant": tenant_of(session)},
    )
    schema = {
        "account_id": pl.Int64,
        "parent_id": pl.Int64,
        **{c: pl.String for c in ("arr_tier", "plan", "industry", "segment", "country")},
    }
    if frame.height == 0:
        frame = pl.DataFrame(schema=schema)
    frame = frame.cast(schema)  # type: ignore[arg-type]
    return frame.join(contracts(session, window), on="account_id", how="left")


def _segment_expr(model: HealthModel) -> pl.Expr:
    fallback = next((s.name for s in model.segments if s.otherwise), UNSEGMENTED)
    expr: pl.Expr = pl.lit(fallback)
    for seg in reversed([s for s in model.segments if not s.otherwise]):
        condition = pl.lit(True)
        for fld, values in seg.match.items():
            condition = condition & pl.col(fld).is_in(sorted(values)).fill_null(False)
        expr = pl.when(condition).then(pl.lit(seg.name)).otherwise(expr)
    return expr.alias("segment")


# -- normalising ----------------------------------------------------------------------------------


def _normalised(s: SignalSpec) -> pl.Expr:
    """0..100, higher is healthier; null where the raw value is null."""
    x = pl.col(s.name)
    if s.normalise == "percentile":
        n = x.count().over("segment")
        rank = x.rank("average").over("segment")
        score = pl.when(n > 1).then((rank - 1) / (n - 1) * 100).otherwise(NEUTRAL)
    elif s.normalise == "zscore":
        mean, std = x.mean().over("segment"), x.std(ddof=0).over("segment")
        score = pl.when(std > 0).then(50 + 50 * (x - mean) / std / ZSCORE_SPAN).otherwise(NEUTRAL)
    elif s.normalise == "target":
        assert s.target is not None
        low, high = s.target
        score = (x - low) / (high - low) * 100
    else:
        score = x
    score = score.clip(0, 100)
    if s.direction == "lower":
        score = 100 - score
    return pl.when(x.is_null()).then(None).otherwise(score)


_MISSING_VALUE = {"neutral": NEUTRAL, "worst": 0.0, "best": 100.0}


def compute(model: HealthModel, raw: pl.DataFrame, accounts: pl.DataFrame) -> Scores:
    """Scores for every account from its raw signals (pure: no database)."""
    frame = (
        accounts.select("account_id", "parent_id", "arr_cents", _segment_expr(model))
        .join(raw, on="account_id", how="left")
        .sort("account_id")
    )
    # missing = "zero": absence means none of it; the zeros belong in the segment's baseline
    frame = frame.with_columns(pl.col(s.name).fill_null(0.0) for s in model.signals if s.missing == "zero")
    normalised = []
    for s in model.signals:
        n = _normalised(s)
        if s.missing in _MISSING_VALUE:
            n = n.fill_null(_MISSING_VALUE[s.missing])
        normalised.append(n.round(RAW_DECIMALS).alias(f"n__{s.name}"))
    frame = frame.with_columns(normalised)

    base = {
        s.name: pl.col("segment").replace_strict(
            {seg: model.weight(seg, s) for seg in model.segment_names},
            default=s.weight,
            return_dtype=pl.Float64,
        )
        for s in model.signals
    }
    counted = {
        s.name: pl.when(pl.col(f"n__{s.name}").is_null()).then(0.0).otherwise(base[s.name])
        for s in model.signals
    }
    frame = frame.with_columns(
        pl.sum_horizontal(list(counted.values())).alias("w__counted"),
        pl.sum_horizontal(list(base.values())).alias("w__base"),
    )
    # When every weighted signal of an account is skipped, count the skipped ones as neutral.
    nothing = pl.col("w__counted") <= 0
    frame = frame.with_columns(
        *(
            pl.when(nothing)
            .then(pl.col(f"n__{s.name}").fill_null(NEUTRAL))
            .otherwise(pl.col(f"n__{s.name}"))
            .alias(f"n__{s.name}")
            for s in model.signals
        ),
        *(
            pl.when(nothing)
            .then(base[s.name] / pl.col("w__base"))
            .otherwise(counted[s.name] / pl.col("w__counted"))
            .alias(f"w__{s.name}")
            for s in model.signals
        ),
    )
    frame = frame.with_columns(
        (pl.col(f"w__{s.name}") * pl.col(f"n__{s.name}").fill_null(0.0)).alias(f"c__{s.name}")
        for s in model.signals
    )
    # a left fold adds in signal-name order: the same order a reader re-adding the rows uses
    frame = frame.with_columns(
        pl.fold(pl.lit(0.0), lambda acc, c: acc + c, [pl.col(f"c__{s.name}") for s in model.signals]).alias(
            "composite"
        )
    )
    signals = pl.concat(
        [
            frame.select(
                "account_id",
                pl.lit(s.name).alias("signal"),
                pl.col(s.name).alias("raw_value"),
                pl.col(f"n__{s.name}").alias("normalised_value"),
                pl.col(f"w__{s.name}").alias("weight"),
                pl.col(f"c__{s.name}").alias("contribution"),
            )
            for s in model.signals
        ]
    )
    snapshots = frame.select("account_id", "parent_id", "arr_cents", "segment", "composite")
    snapshots, rolled = _roll_up(model, snapshots)
    if rolled.height:
        signals = pl.concat(
            [
                signals.join(rolled.select("account_id"), on="account_id", how="anti"),
                rolled.select(
                    "account_id",
                    pl.lit(ROLLUP_SIGNAL).alias("signal"),
                    pl.col("children").cast(pl.Float64).alias("raw_value"),
                    pl.col("composite").alias("normalised_value"),
                    pl.lit(1.0).alias("weight"),
                    (pl.lit(1.0) * pl.col("composite")).alias("contribution"),
                ),
            ]
        )
    snapshots = snapshots.with_columns(_band_expr(model)).select("account_id", "segment", "composite", "band")
    return Scores(snapshots=snapshots, signals=signals.sort(["account_id", "signal"]))


def _band_expr(model: HealthModel) -> pl.Expr:
    expr: pl.Expr = pl.lit(model.bands[0].name)
    for band in model.bands[1:]:
        expr = pl.when(pl.col("composite") >= band.min).then(pl.lit(band.name)).otherwise(expr)
    return expr.alias("band")


def _roll_up(model: HealthModel, snapshots: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Parents take the average (or ARR-weighted average) of their direct children's composites.

    Repeated so a grandparent sees its children's rolled-up values (one level per pass)."""
    links = snapshots.filter(pl.col("parent_id").is_not_null()).select(
        pl.col("account_id").alias("child"),
        pl.col("parent_id").alias("account_id"),
        pl.col("arr_cents").fill_null(0),
    )
    links = links.join(snapshots.select("account_id"), on="account_id", how="semi")
    if links.height == 0:
        return snapshots, pl.DataFrame()
    own = snapshots.select("account_id", "composite")
    current = own
    rolled = pl.DataFrame()
    for _ in range(ROLLUP_DEPTH):
        children = links.join(current.rename({"account_id": "child"}), on="child", how="left")
        if model.rollup == "arr_weighted":
            value = (
                pl.when(pl.col("arr_cents").sum() > 0)
                .then((pl.col("composite") * pl.col("arr_cents")).sum() / pl.col("arr_cents").sum())
                .otherwise(pl.col("composite").mean())
            )
        else:
            value = pl.col("composite").mean()
        rolled = (
            children.sort(["account_id", "child"])
            .group_by("account_id", maintain_order=True)
            .agg(value.alias("composite"), pl.len().alias("children"))
        )
        updated = own.join(
            rolled.select("account_id", pl.col("composite").alias("rolled")), on="account_id", how="left"
        )
        updated = updated.select("account_id", pl.coalesce("rolled", "composite").alias("composite"))
        if updated.equals(current):
            break
        current = updated
    snapshots = snapshots.drop("composite").join(current, on="account_id", how="left")
    return snapshots, rolled


# -- the job ----------------------------------------------------------------------------------------


def score(db: Database, model: HealthModel, as_of: date, *, actor: str, dry_run: bool = False) -> ScoreResult:
    """Score every account of the tenant as of ``as_of`` and store the snapshots (unless dry run).

    Reads in one transaction (a consistent view), then replaces this as-of and model version's
    snapshots and appends the band transitions in one write transaction."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    with db.session() as session:
        if db.is_postgresql:
            # the per-account aggregates (DISTINCT ones included) sort: keep those sorts in memory
            session.execute(text("SET LOCAL work_mem = '256MB'"))
        window = Window.of(as_of, session)
        accounts = _accounts(session, window)
        raw = raw_signals(session, model, accounts, window)
    timings["read"] = round(time.perf_counter() - started, 3)
    mark = time.perf_counter()
    scores = compute(model, raw, accounts)
    timings["compute"] = round(time.perf_counter() - mark, 3)
    bands = {b.name: 0 for b in reversed(model.bands)}
    for band, count in scores.snapshots.group_by("band").len().iter_rows():
        bands[band] = count
    mark = time.perf_counter()
    with db.session(write=not dry_run) as session:
        if not dry_run:
            _skip_foreign_key_checks(session)
        previous = _previous(session, as_of, model.version)
        transitions = _transitions(session, scores, previous, model, as_of)
        replaced = new_events = 0
        if not dry_run:
            replaced, stored = _store(session, model, as_of, scores)
            # an account removed since the read has no snapshot now, and no transition either
            transitions = transitions.join(stored, on="account_id", how="semi")
            new_events = _append_transitions(session, transitions, actor=actor)
        else:
            session.rollback()
    timings["write"] = round(time.perf_counter() - mark, 3)
    return ScoreResult(
        as_of=as_of,
        model_name=model.name,
        model_version=model.version,
        accounts=scores.snapshots.height,
        bands=bands,
        transitions=transitions.height,
        replaced=replaced,
        new_transition_events=new_events,
        dry_run=dry_run,
        timings=timings,
    )


def _staged(session: Session, table: str, frame: pl.DataFrame) -> str:
    """Copy ``frame`` into a temporary table shaped like ``table`` (for an upsert from it); the
    caller drops it."""
    staging = f"staging_{table}"
    columns = ", ".join(f'"{c}"' for c in frame.columns)
    session.execute(text(f'CREATE TEMP TABLE "{staging}" AS SELECT {columns} FROM "{table}" WHERE 1 = 0'))
    bulk.insert_frame(session, staging, frame)
    return staging


def _skip_foreign_key_checks(session: Session) -> None:
    """SQLite: no per-row foreign key probes in the write transaction (1.3 million signal rows at
    100k accounts, each probing its snapshot; the snapshots, their accounts).

    Safe because every reference is resolved set-based inside this transaction, which holds
    SQLite's write lock: snapshots are written only for accounts that exist, signals only for the
    snapshot ids read back, transitions only for accounts that got a snapshot. PostgreSQL keeps
    its checks (the option is SQLite's; see ``engine._configure_sqlite``)."""
    session.connection(execution_options={"crmctl_foreign_keys": False})


def _store(session: Session, model: HealthModel, as_of: date, scores: Scores) -> tuple[int, pl.DataFrame]:
    """Write the snapshots and signals; a re-run of the same as-of and model replaces its rows.

    Returns how many snapshots were replaced and the accounts that have a snapshot now.
    The previous run's signal rows are deleted in one statement; snapshots are upserted in place
    (keeping their ids) rather than deleted, because deleting a parent row makes the database
    look for child signal rows by a column no index leads with (PostgreSQL's foreign key check)."""
    tenant = tenant_of(session)
    params: dict[str, Any] = {"tenant": tenant, "as_of": as_of, "version": model.version}
    exists = session.execute(
        text("SELECT 1 FROM health_model WHERE tenant_id = :tenant AND version = :version"), params
    ).first()
    if exists is None:
        session.execute(
            text(
                "INSERT INTO health_model (tenant_id, name, version, body, created_at) "
                "VALUES (:tenant, :name, :version, :body, :created_at)"
            ),
            {**params, "name": model.name, "body": model.body, "created_at": utcnow()},
        )
    same = "tenant_id = :tenant AND as_of = :as_of AND model_version = :version"
    replaced = (
        session.execute(text(f"SELECT COUNT(*) FROM health_snapshot WHERE {same}"), params).scalar() or 0
    )
    session.execute(
        text(
            "DELETE FROM health_signal WHERE tenant_id = :tenant "
            f"AND snapshot_id IN (SELECT id FROM health_snapshot WHERE {same})"
        ),
        params,
    )
    now = utcnow()
    snapshots = scores.snapshots.with_columns(
        pl.lit(tenant).alias("tenant_id"),
        pl.lit(as_of).alias("as_of"),
        pl.lit(model.version).alias("model_version"),
        pl.lit(now).alias("created_at"),
    )
    staging = _staged(session, "health_snapshot", snapshots)
    columns = ", ".join(f'"{c}"' for c in snapshots.columns)
    session.execute(
        text(
            f'INSERT INTO health_snapshot ({columns}) SELECT {columns} FROM "{staging}" '
            "WHERE account_id IN (SELECT id FROM account WHERE tenant_id = :tenant) "
            "ON CONFLICT (tenant_id, account_id, as_of, model_version) DO UPDATE SET "
            "segment = excluded.segment, composite = excluded.composite, band = excluded.band, "
            "created_at = excluded.created_at"
        ),
        {"tenant": tenant},
    )
    session.execute(text(f'DROP TABLE "{staging}"'))
    ids = bulk.read_frame(
        session, f"SELECT account_id, id AS snapshot_id FROM health_snapshot WHERE {same}", params
    )
    ids = ids.cast({"account_id": pl.Int64, "snapshot_id": pl.Int64})
    signals = scores.signals.join(ids.select("account_id", "snapshot_id"), on="account_id", how="inner")
    # snapshots of accounts no longer scored (deleted since the last run) go too
    stale = ids.join(scores.snapshots.select("account_id"), on="account_id", how="anti")[
        "snapshot_id"
    ].to_list()
    ids = ids.join(scores.snapshots.select("account_id"), on="account_id", how="semi")
    for start in range(0, len(stale), 500):
        chunk = {f"s{i}": v for i, v in enumerate(stale[start : start + 500])}
        listed = ", ".join(f":{k}" for k in chunk)
        session.execute(
            text(f"DELETE FROM health_snapshot WHERE tenant_id = :tenant AND id IN ({listed})"),
            {"tenant": tenant, **chunk},
        )
    bulk.insert_frame(
        session,
        "health_signal",
        signals.with_columns(pl.lit(tenant).alias("tenant_id")).select(
            "tenant_id",
            "snapshot_id",
            "account_id",
            "signal",
            "raw_value",
            "normalised_value",
            "weight",
            "contribution",
        ),
    )
    return int(replaced), ids.select("account_id")


# -- transitions -----------------------------------------------------------------------------------


def _previous(session: Session, as_of: date, version: str) -> pl.DataFrame:
    """Each account's snapshot from the latest earlier scoring date (this model's when there are
    several models that day)."""
    tenant = tenant_of(session)
    earlier = session.execute(
        text("SELECT MAX(as_of) FROM health_snapshot WHERE tenant_id = :tenant AND as_of < :as_of"),
        {"tenant": tenant, "as_of": as_of},
    ).scalar()
    schema = {
        "account_id": pl.Int64,
        "prev_id": pl.Int64,
        "prev_band": pl.String,
        "prev_composite": pl.Float64,
    }
    if earlier is None:
        return pl.DataFrame(schema=schema)
    rows = bulk.read_frame(
        session,
        "SELECT account_id, id AS prev_id, band AS prev_band, composite AS prev_composite, model_version "
        "FROM health_snapshot WHERE tenant_id = :tenant AND as_of = :earlier",
        {"tenant": tenant, "earlier": earlier},
    )
    if rows.height == 0:
        return pl.DataFrame(schema=schema)
    return (
        rows.with_columns((pl.col("model_version") == version).alias("same"))
        .sort(["account_id", "same", "prev_id"])
        .group_by("account_id", maintain_order=True)
        .last()
        .select(list(schema))
        .cast(schema)  # type: ignore[arg-type]
    )


def _transitions(
    session: Session, scores: Scores, previous: pl.DataFrame, model: HealthModel, as_of: date
) -> pl.DataFrame:
    changed = scores.snapshots.join(previous, on="account_id", how="inner").filter(
        pl.col("band") != pl.col("prev_band")
    )
    if changed.height == 0:
        return changed
    prior = _signals_of(session, changed["prev_id"].to_list())
    now = scores.signals.join(changed.select("account_id"), on="account_id", how="semi")
    delta = (
        now.select("account_id", "signal", "contribution")
        .join(
            prior.select("account_id", "signal", pl.col("contribution").alias("before")),
            on=["account_id", "signal"],
            how="full",
            coalesce=True,
        )
        .with_columns(
            (pl.col("contribution").fill_null(0.0) - pl.col("before").fill_null(0.0)).alias("change")
        )
    )
    order = {b.name: i for i, b in enumerate(model.bands)}
    changed = changed.with_columns(
        (
            pl.col("band").replace_strict(order, return_dtype=pl.Int64)
            > pl.col("prev_band").replace_strict(order, return_dtype=pl.Int64)
        ).alias("improved")
    )
    drivers = (
        delta.join(changed.select("account_id", "improved"), on="account_id")
        # the signals that moved the score the way the band moved, largest first
        .filter(pl.when(pl.col("improved")).then(pl.col("change") > 0).otherwise(pl.col("change") < 0))
        .with_columns(pl.col("change").abs().alias("size"))
        .sort(["account_id", "size", "signal"], descending=[False, True, False])
        .group_by("account_id", maintain_order=True)
        .agg(
            pl.struct(pl.col("signal"), pl.col("change").round(4))
            .head(DRIVERS_PER_TRANSITION)
            .alias("drivers")
        )
    )
    return changed.join(drivers, on="account_id", how="left").with_columns(
        pl.lit(as_of).alias("as_of"), pl.lit(model.version).alias("model_version")
    )


def _signals_of(session: Session, snapshot_ids: list[int]) -> pl.DataFrame:
    frames = []
    for start in range(0, len(snapshot_ids), 1000):
        chunk = snapshot_ids[start : start + 1000]
        placeholders = ", ".join(f":s{i}" for i in range(len(chunk)))
        frames.append(
            bulk.read_frame(
                session,
                "SELECT account_id, signal, contribution FROM health_signal "
                f"WHERE tenant_id = :tenant AND snapshot_id IN ({placeholders})",
                {"tenant": tenant_of(session), **{f"s{i}": v for i, v in enumerate(chunk)}},
            )
        )
    frames = [f for f in frames if f.height]
    schema = {"account_id": pl.Int64, "signal": pl.String, "contribution": pl.Float64}
    return pl.concat([f.cast(schema) for f in frames]) if frames else pl.DataFrame(schema=schema)  # type: ignore[arg-type]


def transition_key(account_id: int, as_of: date, version: str, before: str, after: str) -> str:
    return f"health-transition:{account_id}:{as_of.isoformat()}:{version}:{before}>{after}"


def _append_transitions(session: Session, transitions: pl.DataFrame, *, actor: str) -> int:
    """Append each transition to the account's timeline once (re-runs find the key and skip)."""
    if transitions.height == 0:
        return 0
    rows: list[dict[str, Any]] = []
    for t in transitions.iter_rows(named=True):
        details = {
            "from": t["prev_band"],
            "to": t["band"],
            "composite": t["composite"],
            "previous_composite": t["prev_composite"],
            "as_of": t["as_of"].isoformat(),
            "model_version": t["model_version"],
            "drivers": t["drivers"] or [],
        }
        rows.append(
            {
                "account_id": t["account_id"],
                "key": transition_key(
                    t["account_id"], t["as_of"], t["model_version"], t["prev_band"], t["band"]
                ),
                "subject": f"Health {t['prev_band']} -> {t['band']}",
                "details": json.dumps(details, sort_keys=True),
                "occurred_at": datetime.combine(t["as_of"], dt_time.min, tzinfo=utcnow().tzinfo),
            }
        )
    keys = [r["key"] for r in rows]
    existing: set[str] = set()
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        placeholders = ", ".join(f":k{i}" for i in range(len(chunk)))
        existing.update(
            k
            for (k,) in session.execute(
                text(
                    f"SELECT idempotency_key FROM interaction WHERE tenant_id = :tenant "
                    f"AND idempotency_key IN ({placeholders})"
                ),
                {"tenant": tenant_of(session), **{f"k{i}": k for i, k in enumerate(chunk)}},
            )
        )
    fresh = [r for r in rows if r["key"] not in existing]
    if not fresh:
        return 0
    frame = pl.DataFrame(fresh).select(
        pl.lit(tenant_of(session)).alias("tenant_id"),
        pl.col("account_id").cast(pl.Int64),
        pl.lit(TRANSITION_KIND).alias("kind"),
        pl.col("occurred_at"),
        pl.col("subject"),
        pl.lit(actor).alias("actor"),
        pl.col("details"),
        pl.lit("crmctl").alias("external_source"),
        pl.col("key").alias("idempotency_key"),
    )
    return bulk.insert_frame(session, "interaction", frame)
