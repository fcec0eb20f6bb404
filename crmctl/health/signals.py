"""Raw signal values per account: one grouped query per source, finished in polars.

Every source is aggregated in the database per account over the signals' windows (conditional
aggregates, one pass over each table); only one row per account comes back. Product usage, by far
the largest source, is read per account from its covering (tenant, account, occurred_at, ...)
index: the signals' windows cut the time axis into a few buckets, each bucket is one index range,
and a signal's condition is then an integer test on the bucket number instead of timestamp
comparisons on every row. "As of"
a date means as the data stood at the end of that day (UTC): events at or after the next midnight
are ignored, tickets are open if they had not closed by then, contracts are active if they had
started and not yet ended.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import polars as pl
from sqlmodel import Session

from crmctl.db.bulk import as_utc, read_frame, sqlite_text
from crmctl.db.engine import dialect_of, tenant_of
from crmctl.health.model import HealthModel, SignalSpec

RAW_DECIMALS = 6  # raw values are rounded so float sums in a different order give the same digits


@dataclass(frozen=True)
class Window:
    """The as-of instant (end of the as-of day, UTC) and how to pass times to this dialect."""

    as_of: date
    end: datetime
    sqlite: bool

    @classmethod
    def of(cls, as_of: date, session: Session) -> Window:
        end = datetime.combine(as_of + timedelta(days=1), time.min, tzinfo=UTC)
        return cls(as_of=as_of, end=end, sqlite=dialect_of(session) == "sqlite")

    def ts(self, moment: datetime) -> Any:
        # SQLite stores timestamps as text in one fixed format: compare like with like
        return sqlite_text(moment) if self.sqlite else moment

    def day(self, value: date) -> Any:
        return value.isoformat() if self.sqlite else value

    def start(self, days: int) -> datetime:
        return self.end - timedelta(days=days)


class _Query:
    """Builds one grouped SELECT of conditional aggregates with bound parameters."""

    def __init__(self, window: Window) -> None:
        self.window = window
        self.params: dict[str, Any] = {}
        self.columns: list[str] = []

    def bind(self, value: Any) -> str:
        name = f"p{len(self.params)}"
        self.params[name] = value
        return f":{name}"

    def in_list(self, column: str, values: tuple[str, ...] | list[str]) -> str:
        return f"{column} IN ({', '.join(self.bind(v) for v in values)})"

    def since(self, column: str, days: int, *, until_days: int | None = None) -> str:
        parts = ["1=1"]
        if days > 0:
            parts = [f"{column} >= {self.bind(self.window.ts(self.window.start(days)))}"]
        if until_days is not None:
            parts.append(f"{column} < {self.bind(self.window.ts(self.window.start(until_days)))}")
        return " AND ".join(parts)

    def add(self, alias: str, expression: str) -> None:
        self.columns.append(f'{expression} AS "{alias}"')


FEATURE_SEPARATOR = "\x1f"  # joins an account's feature names (the ASCII unit separator)


def _feature_list(expression: str, separator: str, sqlite: bool) -> str:
    """Every non-null value of ``expression``, repeats included, joined by ``separator``: the
    distinct ones are taken in polars (a DISTINCT aggregate sorts per account on PostgreSQL)."""
    return f"group_concat({expression}, {separator})" if sqlite else f"string_agg({expression}, {separator})"


def _distinct_features(column: str) -> pl.Expr:
    """The distinct names in a ``_feature_list`` column; an empty list where it is null."""
    return (
        pl.col(column)
        .cast(pl.String)
        .str.split(FEATURE_SEPARATOR)
        .fill_null(pl.lit([], pl.List(pl.String)))
        .list.unique()
    )


def _to_datetime(frame: pl.DataFrame, column: str) -> pl.DataFrame:
    return frame.with_columns(as_utc(frame, column).alias(column))


def _to_date(frame: pl.DataFrame, column: str) -> pl.DataFrame:
    if frame.schema[column] == pl.String:
        return frame.with_columns(pl.col(column).str.to_date("%Y-%m-%d", strict=False))
    return frame.with_columns(pl.col(column).cast(pl.Date))


def _per_account(session: Session, sql: str, params: dict[str, Any]) -> pl.DataFrame:
    """Run a per-account aggregate; an Int64 ``account_id`` column even when nothing matched."""
    frame = read_frame(session, sql, params)
    if frame.width == 0 or "account_id" not in frame.columns:
        return pl.DataFrame({"account_id": []}, schema={"account_id": pl.Int64})
    return frame.with_columns(pl.col("account_id").cast(pl.Int64))


def _grouped(session: Session, table: str, time_column: str, query: _Query, where: str) -> pl.DataFrame:
    if not query.columns:
        return pl.DataFrame({"account_id": []}, schema={"account_id": pl.Int64})
    tenant = query.bind(tenant_of(session))
    end = query.bind(query.window.ts(query.window.end))
    if query.window.sqlite:
        # SQLite: walk the accounts in id order and seek each one's (tenant, account, time) index
        # range, so rows outside the windows are never read and the GROUP BY needs no sort.
        # (CROSS JOIN fixes the join order there; NOT INDEXED makes the outer loop the rowid order.)
        source = f"account a NOT INDEXED CROSS JOIN {table} t"
        condition = f"a.tenant_id = {tenant} AND t.tenant_id = a.tenant_id AND t.account_id = a.id"
        group = "a.id"
    else:
        source, condition, group = (
            f"{table} t",
            f"t.tenant_id = {tenant} AND t.account_id IS NOT NULL",
            "t.account_id",
        )
    sql = (
        f"SELECT {group} AS account_id, {', '.join(query.columns)} FROM {source} "
        f"WHERE {condition} AND t.{time_column} < {end} AND ({where}) GROUP BY {group}"
    )
    return _per_account(session, sql, query.params)


# -- product usage ------------------------------------------------------------------------------

EARLIEST = datetime(1, 1, 1, tzinfo=UTC)  # lower bound of an "all history" bucket


@dataclass(frozen=True)
class _Buckets:
    """The time axis before the as-of instant cut at every window's start: bucket 0 is the most
    recent ``[end - d0, end)``, bucket i is ``[end - d_i, end - d_(i-1))``, and, when a signal
    reads all history, a last bucket reaches back to the beginning."""

    days: tuple[int, ...]  # ascending window lengths (the cuts)
    all_history: bool

    @classmethod
    def of(cls, signals: list[SignalSpec]) -> _Buckets:
        cuts: set[int] = set()
        for s in signals:
            if s.window_days > 0:
                cuts.add(s.window_days)
                if s.aggregation == "trend":
                    cuts.add(2 * s.window_days)
        return cls(days=tuple(sorted(cuts)), all_history=any(s.window_days == 0 for s in signals))

    @property
    def count(self) -> int:
        return len(self.days) + (1 if self.all_history or not self.days else 0)

    def ranges(self, window: Window) -> list[tuple[int, datetime, datetime]]:
        """(bucket, from, until) for each bucket, most recent first."""
        out: list[tuple[int, datetime, datetime]] = []
        until = window.end
        for k, days in enumerate(self.days):
            start = window.start(days)
            out.append((k, start, until))
            until = start
        if self.count > len(self.days):
            out.append((len(self.days), EARLIEST, until))
        return out

    def span(self, days: int, *, after_days: int = 0) -> tuple[int, int] | None:
        """The first and last bucket of ``[end - days, end - after_days)`` (days 0: all history);
        None when that is every bucket."""
        first = self.days.index(after_days) + 1 if after_days else 0
        last = self.days.index(days) if days else self.count - 1
        return None if (first, last) == (0, self.count - 1) else (first, last)


def _product_usage(session: Session, signals: list[SignalSpec], window: Window) -> pl.DataFrame:
    """One pass over the accounts' index ranges; SQLite reads each bucket as its own range and tests
    the bucket number, PostgreSQL reads the whole span once and compares timestamps (which it
    compares as integers, where SQLite compares text)."""
    query = _Query(window)
    buckets = _Buckets.of(signals)
    ranges = buckets.ranges(window)

    def in_span(span: tuple[int, int] | None) -> str:
        if span is None:
            return ""
        first, last = span
        if window.sqlite:
            if first == last:
                return f"b.k = {first} AND "
            return f"b.k <= {last} AND " if first == 0 else f"b.k BETWEEN {first} AND {last} AND "
        # the scan reads [oldest bucket, end) already: bound only what is narrower
        lower = "" if last == len(ranges) - 1 else f"t.occurred_at >= {query.bind(ranges[last][1])} AND "
        upper = "" if first == 0 else f"t.occurred_at < {query.bind(ranges[first][2])} AND "
        return lower + upper

    def when(s: SignalSpec, *, previous: bool = False) -> str:
        # "t.event = :a OR t.event = :b": plain comparisons (SQLite builds a lookup table for an
        # IN list of three or more values and probes it on every row)
        events = " OR ".join(f"t.event = {query.bind(e)}" for e in s.filter)
        span = (
            buckets.span(2 * s.window_days, after_days=s.window_days)
            if previous
            else buckets.span(s.window_days)
        )
        return f"{in_span(span)}({events})"

    for s in signals:
        if s.aggregation == "count":
            query.add(s.name, f"SUM(CASE WHEN {when(s)} THEN 1 ELSE 0 END)")
        elif s.aggregation == "sum":
            query.add(s.name, f"SUM(CASE WHEN {when(s)} THEN t.quantity ELSE 0 END)")
        elif s.aggregation in {"distinct_features", "entitled_feature_share"}:
            features = f"CASE WHEN {when(s)} THEN t.feature END"
            query.add(
                f"{s.name}__features", _feature_list(features, query.bind(FEATURE_SEPARATOR), window.sqlite)
            )
        elif s.aggregation == "trend":
            query.add(f"{s.name}__now", f"SUM(CASE WHEN {when(s)} THEN t.quantity ELSE 0 END)")
            query.add(
                f"{s.name}__before", f"SUM(CASE WHEN {when(s, previous=True)} THEN t.quantity ELSE 0 END)"
            )
    tenant = query.bind(tenant_of(session))
    columns = ", ".join(query.columns)
    if window.sqlite:
        # accounts in id order (NOT INDEXED), then each bucket's range of the account's index
        # entries (CROSS JOIN fixes that order): no sort, and rows outside the windows never read
        table = " UNION ALL ".join(
            f"SELECT {k} AS k, {query.bind(window.ts(lo))} AS lo, {query.bind(window.ts(hi))} AS hi"
            for k, lo, hi in ranges
        )
        sql = (
            f"SELECT a.id AS account_id, {columns} FROM account a NOT INDEXED "
            f"CROSS JOIN ({table}) b CROSS JOIN product_usage t "
            f"WHERE a.tenant_id = {tenant} AND t.tenant_id = a.tenant_id AND t.account_id = a.id "
            "AND t.occurred_at >= b.lo AND t.occurred_at < b.hi GROUP BY a.id"
        )
    else:
        # the same per account: a lateral aggregate over one index-only range scan (a small sort
        # per account for the DISTINCT aggregates instead of one over every row)
        lower = "" if ranges[-1][1] == EARLIEST else f"AND t.occurred_at >= {query.bind(ranges[-1][1])} "
        sql = (
            f"SELECT a.id AS account_id, u.* FROM account a CROSS JOIN LATERAL "
            f"(SELECT {columns} FROM product_usage t WHERE t.tenant_id = a.tenant_id AND t.account_id = a.id "
            f"{lower}AND t.occurred_at < {query.bind(window.end)}) u WHERE a.tenant_id = {tenant}"
        )
    return _per_account(session, sql, query.params)


# -- interactions -------------------------------------------------------------------------------


def _interactions(session: Session, signals: list[SignalSpec], window: Window) -> pl.DataFrame:
    query = _Query(window)
    kinds: set[str] = set()
    # the latest score rides along as "timestamp|score": MAX picks the latest, ties the larger text
    stamp = (
        "t.occurred_at || '|' || t.score"
        if window.sqlite
        else "to_char(t.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '|' || t.score::text"
    )
    for s in signals:
        kinds.update(s.filter)
        condition = f"{query.in_list('t.kind', s.filter)} AND {query.since('t.occurred_at', s.window_days)}"
        if s.aggregation == "count":
            query.add(s.name, f"SUM(CASE WHEN {condition} THEN 1 ELSE 0 END)")
        elif s.aggregation == "days_since_last":
            query.add(f"{s.name}__last", f"MAX(CASE WHEN {condition} THEN t.occurred_at END)")
        elif s.aggregation == "mean_score":
            query.add(s.name, f"AVG(CASE WHEN {condition} THEN t.score END)")
        elif s.aggregation == "latest_score":
            query.add(
                f"{s.name}__latest", f"MAX(CASE WHEN {condition} AND t.score IS NOT NULL THEN {stamp} END)"
            )
    frame = _grouped(session, "interaction", "occurred_at", query, query.in_list("t.kind", sorted(kinds)))
    for s in signals:
        if s.aggregation == "days_since_last" and f"{s.name}__last" in frame.columns:
            frame = _to_datetime(frame, f"{s.name}__last")
            frame = frame.with_columns(
                ((pl.lit(window.end) - pl.col(f"{s.name}__last")).dt.total_microseconds() / 86_400e6).alias(
                    s.name
                )
            ).drop(f"{s.name}__last")
        elif s.aggregation == "latest_score" and f"{s.name}__latest" in frame.columns:
            latest = pl.col(f"{s.name}__latest").cast(pl.String).str.split("|").list.last()
            frame = frame.with_columns(latest.cast(pl.Float64, strict=False).alias(s.name)).drop(
                f"{s.name}__latest"
            )
    return frame


# -- support tickets ----------------------------------------------------------------------------


def _tickets(session: Session, signals: list[SignalSpec], window: Window) -> pl.DataFrame:
    query = _Query(window)
    end = window.ts(window.end)
    for s in signals:
        in_window = query.since("opened_at", s.window_days)
        if s.aggregation == "open_weighted":
            weights = " ".join(
                f"WHEN {query.bind(priority)} THEN {query.bind(weight)}"
                for priority, weight in sorted(s.priority_weights.items())
            )
            is_open = (
                f"((closed_at IS NOT NULL AND closed_at >= {query.bind(end)}) OR "
                f"(closed_at IS NULL AND status NOT IN ('solved', 'closed')))"
            )
            priority_weight = f"CAST(CASE priority {weights} ELSE 1.0 END AS FLOAT)"
            query.add(s.name, f"SUM(CASE WHEN {is_open} AND {in_window} THEN {priority_weight} ELSE 0 END)")
        elif s.aggregation == "mean_sentiment":
            query.add(s.name, f"AVG(CASE WHEN {in_window} THEN sentiment END)")
        elif s.aggregation == "escalations":
            query.add(s.name, f"SUM(CASE WHEN {in_window} AND is_escalated THEN 1 ELSE 0 END)")
        elif s.aggregation == "opened":
            query.add(s.name, f"SUM(CASE WHEN {in_window} THEN 1 ELSE 0 END)")
        elif s.aggregation == "mean_csat":
            query.add(s.name, f"AVG(CASE WHEN {in_window} THEN csat END)")
    return _grouped(session, "support_ticket", "opened_at", query, "1=1")


# -- contracts ----------------------------------------------------------------------------------


def contracts(session: Session, window: Window) -> pl.DataFrame:
    """Per account as of the date: latest contract type, active ARR, entitled features, renewal."""
    query = _Query(window)
    sql = (
        "SELECT account_id, id, start_date, end_date, arr_cents, contract_type, status, "
        "CAST(entitlements AS TEXT) AS entitlements FROM contract "
        f"WHERE tenant_id = {query.bind(tenant_of(session))} "
        f"AND start_date <= {query.bind(window.day(window.as_of))}"
    )
    rows = read_frame(session, sql, query.params)
    schema = {
        "account_id": pl.Int64,
        "contract_type": pl.String,
        "arr_cents": pl.Int64,
        "entitled": pl.List(pl.String),
        "days_to_renewal": pl.Float64,
    }
    if rows.height == 0:
        return pl.DataFrame(schema=schema)
    rows = _to_date(_to_date(rows, "start_date"), "end_date").with_columns(
        pl.col("account_id").cast(pl.Int64),
        pl.col("arr_cents").cast(pl.Int64),
        pl.col("entitlements")
        .cast(pl.String)
        .str.json_decode(pl.Struct({"features": pl.List(pl.String)}))
        .struct.field("features")
        .alias("features"),
    )
    active = (pl.col("end_date") >= pl.lit(window.as_of)) & (
        pl.col("status").fill_null("active") != "cancelled"
    )
    return (
        rows.sort(["account_id", "start_date", "id"])
        .group_by("account_id", maintain_order=True)
        .agg(
            pl.col("contract_type").last(),
            pl.col("arr_cents").filter(active).sum(),
            pl.col("features").filter(active).explode().drop_nulls().unique().sort().alias("entitled"),
            (pl.col("end_date").filter(active).min() - pl.lit(window.as_of))
            .dt.total_days()
            .cast(pl.Float64)
            .alias("days_to_renewal"),
        )
        .select(list(schema))
    )


# -- manual signals -----------------------------------------------------------------------------


def _manual(session: Session, signals: list[SignalSpec], window: Window) -> pl.DataFrame:
    query = _Query(window)
    end = query.bind(window.ts(window.end))
    sql = (
        "SELECT account_id, id, value, created_at FROM manual_signal "
        f"WHERE tenant_id = {query.bind(tenant_of(session))} AND created_at < {end} "
        f"AND (expires_at IS NULL OR expires_at >= {end})"
    )
    rows = read_frame(session, sql, query.params)
    if rows.height == 0:
        return pl.DataFrame(schema={"account_id": pl.Int64, **{s.name: pl.Float64 for s in signals}})
    latest = (
        _to_datetime(rows, "created_at")
        .with_columns(pl.col("account_id").cast(pl.Int64), pl.col("value").cast(pl.Float64))
        .sort(["account_id", "created_at", "id"])
        .group_by("account_id", maintain_order=True)
        .agg(pl.col("value").last())
    )
    return latest.with_columns(pl.col("value").alias(s.name) for s in signals).drop("value")


# -- all together ---------------------------------------------------------------------------------


def raw_signals(session: Session, model: HealthModel, accounts: pl.DataFrame, window: Window) -> pl.DataFrame:
    """One row per account (``accounts`` must carry account_id and the contract columns), one
    Float64 column per signal of the model; null where the account has no data for it."""
    by_source: dict[str, list[SignalSpec]] = {}
    for s in model.signals:
        by_source.setdefault(s.source, []).append(s)
    frame = accounts
    fetchers = {
        "product_usage": _product_usage,
        "interaction": _interactions,
        "support_ticket": _tickets,
        "manual": _manual,
    }
    for source, fetch in fetchers.items():
        if source in by_source:
            part = fetch(session, by_source[source], window)
            frame = frame.join(part, on="account_id", how="left")
    columns = []
    for s in model.signals:
        columns.append(_finish(s, frame).cast(pl.Float64).round(RAW_DECIMALS).alias(s.name))
    return frame.select("account_id", *columns)


def _finish(s: SignalSpec, frame: pl.DataFrame) -> pl.Expr:
    """The raw value expression of one signal from the joined columns."""
    if s.aggregation in {"count", "sum", "open_weighted", "escalations", "opened"}:
        # no rows in the window means zero activity, which is a value, not missing data
        return pl.col(s.name).cast(pl.Float64).fill_null(0.0) if s.name in frame.columns else pl.lit(0.0)
    features = f"{s.name}__features"
    if s.aggregation == "distinct_features":
        return _distinct_features(features).list.len() if features in frame.columns else pl.lit(0.0)
    if s.aggregation == "entitled_feature_share":
        used = _distinct_features(features) if features in frame.columns else pl.lit([], pl.List(pl.String))
        entitled = pl.col("entitled").fill_null(pl.lit([], pl.List(pl.String)))
        adopted = used.list.set_intersection(entitled).list.len()
        return pl.when(entitled.list.len() > 0).then(adopted / entitled.list.len()).otherwise(None)
    if s.aggregation == "trend":
        now, before = pl.col(f"{s.name}__now").fill_null(0.0), pl.col(f"{s.name}__before").fill_null(0.0)
        if f"{s.name}__now" not in frame.columns:
            return pl.lit(None, pl.Float64)
        return pl.when(before > 0).then((now - before) / before).otherwise(None)
    if s.aggregation == "days_to_renewal":
        return pl.col("days_to_renewal")
    return pl.col(s.name) if s.name in frame.columns else pl.lit(None, pl.Float64)
