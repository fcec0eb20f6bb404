"""Pipeline reports: pipeline, funnel, velocity, forecast, stalled, changes.

Each report aggregates in the database (one row per group x stage x currency x rate day, never
per deal), converts the sums with :mod:`crmctl.pipeline.currency` and finishes in polars. Every
metric carries its definition (:data:`DEFINITIONS`) so ``--explain`` and JSON say what was counted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import polars as pl
from sqlalchemy import text
from sqlmodel import Session

from crmctl.db import bulk
from crmctl.db.engine import dialect_of
from crmctl.errors import UsageError
from crmctl.pipeline import config, currency
from crmctl.pipeline.state import Sql, day_number, end_of_day, state_sql, valid_at, valid_rows

GROUPS = ("owner", "segment", "source", "pipeline", "month")
BUCKETS = ("new", "pulled_in", "increased", "decreased", "unchanged", "slipped_out", "won", "lost")
NONE_LABEL = "(none)"


@dataclass(frozen=True)
class ReportOptions:
    pipeline: str | None = None
    by: str | None = None
    date_from: date | None = None
    date_to: date | None = None
    as_of: datetime | None = None  # None = live
    currency: str | None = None
    rates: pl.DataFrame | None = None  # from --rates FILE instead of the exchange_rate table
    days: int | None = None  # stalled: overrides each stage's stall_days
    period: str = "month"  # forecast: month | quarter
    close_from: date | None = None  # changes: the close-date window the waterfall tracks
    close_to: date | None = None
    details: str | None = None  # changes: list the deals behind this bucket
    limit: int = 100  # row listings (stalled, changes --details); 0 = all


@dataclass
class Report:
    kind: str
    title: str
    rows: list[dict[str, Any]]
    columns: list[str]
    definitions: dict[str, str]
    meta: dict[str, Any] = field(default_factory=dict)


# -- definitions (shown by --explain, carried in JSON) -------------------------------------------

STATE_RULE = (
    "Deal state is live, or with --as-of the values of each deal's last stage-history row at or "
    "before the end of that day (UTC). A deal counts in the pipeline of its stage: live the deal's "
    "current one, as of a date the one its history held then. Amounts are converted to the report "
    "currency at the latest "
    "rate on or before the deal's close date, or the as-of date when the close date is later or unknown."
)
DEFINITIONS: dict[str, dict[str, str]] = {
    "pipeline": {
        "deals": "count of open deals (stage neither won nor lost) in the stage",
        "amount": "sum(amount) over those deals, converted",
        "weighted_amount": "sum(amount x stage probability) over those deals",
        "avg_days_in_stage": "mean(as-of time - time the deal entered its current stage) in days",
        "total": "the same sums over every open stage; avg_days_in_stage weighted by deals",
    },
    "funnel": {
        "cohort": "deals whose first stage-history row falls between --from and --to (inclusive) "
        "and whose history enters this pipeline's stages; only their history up to the as-of time "
        "counts; lost stages are not funnel steps; --by month groups by the month the deal was created",
        "reached_any_stage": "cohort deals that reached this stage or any later one (skipped "
        "stages count as passed)",
        "conversion_any_stage": "reached_any_stage(next stage) / reached_any_stage(this stage)",
        "reached_in_order": "cohort deals that entered every stage up to this one, each no earlier "
        "than the one before (first entry times)",
        "conversion_in_order": "reached_in_order(next stage) / reached_in_order(this stage)",
        "drop_off": "reached(this stage) - reached(next stage), for each variant",
    },
    "velocity": {
        "won / lost": "deals that moved into a won / lost stage between --from and --to (default: "
        "the 90 days up to the as-of date) and are still there",
        "win_rate": "won / (won + lost)",
        "avg_won_amount": "sum(amount of won deals) / won, converted at the close date",
        "avg_cycle_days": "mean(time entered won stage - first stage-history row) over won deals",
        "open_deals": "open deals at the as-of time",
        "velocity_per_day": "open_deals x win_rate x avg_won_amount / avg_cycle_days",
    },
    "forecast": {
        "period": "the close-date month or quarter (--period); --from/--to bound close dates",
        "category": "the deal's forecast_category, else from stage probability: >= 0.7 commit, "
        ">= 0.4 best_case, else pipeline; 'omitted' deals are left out",
        "won": "amount of won deals closing in the period",
        "commit / best_case / pipeline": "amount of open deals of that category closing in the period",
        "worst": "won + commit",
        "most_likely": "won + commit + best_case",
        "best": "won + commit + best_case + pipeline",
    },
    "stalled": {
        "stalled": "open deals whose last stage move is more than N days before the as-of time; N "
        "is --days, else the stage's stall_days (stages without one never stall)",
        "days_in_stage": "(as-of time - time the deal entered its current stage) in days",
        "order": "oldest stage entry first, then deal id",
    },
    "changes": {
        "tracked pipeline": "open deals whose close date lies in the close window (--close-from / "
        "--close-to; default the calendar quarter of --to), at the end of --from and of --to",
        "start / end": "sum(amount) of the tracked pipeline at the end of --from / --to, converted",
        "ranking": "each deal is attributed to the first matching reason: won, lost, slipped_out "
        "(open but close date moved out of the window), pulled_in (open before with close date "
        "outside the window), new (not open before), increased, decreased, unchanged (amount in "
        "the deal's currency went up / down / stayed)",
        "amount": "for each bucket: sum(end value - start value) of its deals, converted (a value "
        "outside the tracked pipeline counts 0); unchanged carries currency effects only",
        "identity": "start + sum of all bucket amounts = end, exactly (integer cents)",
    },
}


# -- shared machinery ------------------------------------------------------------------------------


@dataclass
class _Context:
    session: Session
    sql: Sql
    options: ReportOptions
    pipelines: list[config.PipelineInfo]
    stages: dict[int, config.StageInfo]
    stage_pipeline: dict[int, str]
    target: str
    as_of: datetime  # the moment the report describes
    live: bool

    stored_rates: pl.DataFrame | None = None

    def rates(self) -> pl.DataFrame:
        if self.options.rates is not None:
            return self.options.rates
        if self.stored_rates is None:
            self.stored_rates = currency.read_rates(self.session, self.target)
        return self.stored_rates

    def params(self, **extra: Any) -> dict[str, Any]:
        return {"tenant": self.sql.tenant, "at": self.sql.ts(self.as_of), **extra}

    @property
    def stage_ids(self) -> list[int]:
        return list(self.stages)

    def state(self, *, at_param: str = "at", deal: bool = True) -> str:
        ids = [p.id for p in self.pipelines]
        return state_sql(self.sql, ids, self.stage_ids, at_param=None if self.live else at_param, deal=deal)

    def keys(self, *columns: str) -> str:
        """GROUP BY over raw ``st`` columns; live, led by pipeline_id so SQLite reads the covering
        index of ``deal`` in order and streams the aggregate."""
        keys = [f"st.{c}" for c in columns]
        group, _ = self.group_sql()
        return ", ".join((["st.pipeline_id"] if self.live else []) + keys + ([group] if group else []))

    def group_sql(self) -> tuple[str | None, str]:
        """(raw SQL column for --by, extra join); month and pipeline are derived in polars."""
        by = self.options.by
        if by in (None, "month", "pipeline"):
            return None, ""
        if by == "segment":
            return "a.segment", "LEFT JOIN account a ON a.tenant_id = :tenant AND a.id = st.account_id"
        return f"st.{by}", ""

    @property
    def needs_deal(self) -> bool:
        """Whether the --by group needs the deal's own columns (owner, source, account)."""
        return self.options.by in {"owner", "source", "segment"}

    def select_group(self) -> str:
        group, _ = self.group_sql()
        return f"{group} AS grp, " if group else ""

    def finish_group(self, frame: pl.DataFrame, month_of: str = "close_date") -> pl.DataFrame:
        """Add the ``grp`` label column: the --by value, the month of ``month_of``, or the pipeline."""
        by = self.options.by
        if by is None or frame.height == 0:
            return frame.with_columns(grp=pl.lit("" if by is None else None, pl.String))
        if by == "pipeline":
            return frame.with_columns(
                grp=pl.col("stage_id").replace_strict(
                    self.stage_pipeline, default=NONE_LABEL, return_dtype=pl.String
                )
            )
        if by == "month":
            month = currency.as_date(frame, month_of).dt.strftime("%Y-%m")
            return frame.with_columns(grp=month.fill_null(NONE_LABEL))
        return frame.with_columns(pl.col("grp").cast(pl.String).fill_null(NONE_LABEL))

    def with_rate_day(
        self, frame: pl.DataFrame, column: str = "close_date", name: str = "rate_day", cap: date | None = None
    ) -> pl.DataFrame:
        """The rate day: ``column`` (a date), or ``cap`` (default the as-of date) when it is later or
        unknown."""
        cap = cap or self.as_of.date()
        day = currency.as_date(frame, column)
        return frame.with_columns(
            pl.when(day.is_null() | (day > cap)).then(pl.lit(cap)).otherwise(day).alias(name)
        )

    def read(self, query: str, params: dict[str, Any]) -> pl.DataFrame:
        return bulk.read_frame(self.session, query, params)

    def convert(self, frame: pl.DataFrame, amounts: dict[str, str], **kw: str) -> pl.DataFrame:
        return currency.convert(frame, self.target, self.rates(), amounts=amounts, **kw)

    def period(self) -> tuple[date, date]:
        """--from/--to; by default the 90 days up to the as-of date."""
        end = self.options.date_to or self.as_of.date()
        return self.options.date_from or end - timedelta(days=89), end

    def meta(self, kind: str, **extra: Any) -> dict[str, Any]:
        return {
            "report": kind,
            "as_of": "live" if self.live else self.as_of.isoformat(),
            "currency": self.target,
            "pipelines": [p.name for p in self.pipelines],
            "by": self.options.by,
            "definitions": DEFINITIONS[kind],
            "state_rule": STATE_RULE,
            **extra,
        }


def _context(session: Session, options: ReportOptions, *, single_pipeline: bool = False) -> _Context:
    if options.by is not None and options.by not in GROUPS:
        raise UsageError(f"--by must be one of {', '.join(GROUPS)}.")
    if options.date_from and options.date_to and options.date_from > options.date_to:
        raise UsageError("--from must be on or before --to.")
    pipelines = config.resolve_pipelines(session, options.pipeline)
    if single_pipeline and len(pipelines) > 1:
        defaults = [p for p in pipelines if p.is_default]
        pipelines = defaults[:1] or pipelines[:1]
    stages = {s.id: s for p in pipelines for s in p.stages}
    target = (options.currency or config.default_currency(pipelines)).upper()
    if not (len(target) == 3 and target.isalpha()):
        raise UsageError("--currency must be a 3-letter ISO code such as USD.")
    live = options.as_of is None
    as_of = options.as_of or datetime.now(UTC)
    if dialect_of(session) == "postgresql":
        # These are one-shot aggregates: JIT compilation cost more than it saved (1.5 s of 4.9 s).
        session.execute(text("SET LOCAL jit = off"))
    return _Context(
        session,
        Sql.of(session),
        options,
        pipelines,
        stages,
        {s.id: p.name for p in pipelines for s in p.stages},
        target,
        as_of,
        live,
    )


def _coarse(ctx: _Context, frame: pl.DataFrame, keys: list[str], sums: list[str]) -> pl.DataFrame:
    """Sum the database's fine groups up to (group, ``keys``, currency, rate day), then convert.

    Converting (and rounding to the cent) once per coarse group keeps the totals independent of
    how finely the database grouped."""
    frame = _sum_up(ctx.finish_group(ctx.with_rate_day(frame)), ["grp", *keys, "currency", "rate_day"], sums)
    return ctx.convert(frame, {"amount": "amount_conv"})


def _sum_up(frame: pl.DataFrame, by: list[str], sums: list[str]) -> pl.DataFrame:
    """``sums`` per ``by``, sorted: float sums downstream must not depend on hash-table order."""
    if frame.height == 0:
        return frame
    return frame.group_by(by).agg(pl.col(c).sum() for c in sums).sort(by, nulls_last=True)


def _units(cents: int | float | None) -> float:
    return round((cents or 0) / 100, 2)


def _ids(stages: list[config.StageInfo] | list[int]) -> str:
    ids = [s if isinstance(s, int) else s.id for s in stages]
    return ", ".join(str(int(i)) for i in ids) or "NULL"


def _open_ids(ctx: _Context) -> str:
    return _ids([s for s in ctx.stages.values() if s.is_open])


def _won_ids(ctx: _Context) -> str:
    return _ids([s for s in ctx.stages.values() if s.is_won])


def _lost_ids(ctx: _Context) -> str:
    return _ids([s for s in ctx.stages.values() if s.is_lost])


def _stage_label(ctx: _Context, stage_id: int) -> str:
    stage = ctx.stages[stage_id]
    return stage.name if len(ctx.pipelines) == 1 else f"{ctx.stage_pipeline[stage_id]}: {stage.name}"


# -- report pipeline -------------------------------------------------------------------------------


def pipeline_report(ctx: _Context) -> Report:
    _, join = ctx.group_sql()
    query = (
        f"WITH st AS ({ctx.state(deal=ctx.needs_deal)}) "
        f"SELECT {ctx.select_group()}st.stage_id, st.currency, st.close_date, COUNT(*) AS deals, "
        f"SUM(COALESCE(st.amount_cents, 0)) AS amount, "
        f"SUM({ctx.sql.day_number('st.entered_at')}) AS entered_days "
        f"FROM st {join} WHERE st.stage_id IN ({_open_ids(ctx)}) "
        f"GROUP BY {ctx.keys('stage_id', 'currency', 'close_date')}"
    )
    frame = ctx.read(query, ctx.params())
    frame = frame.with_columns(
        # sum(at - entered) = deals x at - sum(entered), in days
        age_days=pl.col("deals") * day_number(ctx.as_of) - pl.col("entered_days").cast(pl.Float64)
    )
    frame = _coarse(ctx, frame, ["stage_id"], ["deals", "amount", "age_days"])
    prob = {sid: s.probability for sid, s in ctx.stages.items()}
    rows: list[dict[str, Any]] = []
    per_stage = frame
    if frame.height:
        # Weighted once per stage (probability x exact cent sum): no float sum whose order matters.
        per_stage = (
            frame.group_by("grp", "stage_id")
            .agg(pl.col("deals").sum(), pl.col("amount_conv").sum(), pl.col("age_days").sum())
            .with_columns(
                weighted=pl.col("amount_conv")
                * pl.col("stage_id").replace_strict(prob, return_dtype=pl.Float64)
            )
            .sort("grp", "stage_id")
        )
        order = {sid: (ctx.stage_pipeline[sid], s.position) for sid, s in ctx.stages.items()}
        for group_name in sorted(per_stage["grp"].unique().to_list()):
            part = per_stage.filter(pl.col("grp") == group_name).to_dicts()
            part.sort(key=lambda r: order[r["stage_id"]])
            for r in part:
                rows.append(_pipeline_row(ctx, group_name, _stage_label(ctx, r["stage_id"]), r))
            if ctx.options.by:
                rows.append(_pipeline_row(ctx, group_name, "TOTAL", _sum_rows(part)))
    totals = _pipeline_row(ctx, "", "TOTAL", _sum_rows(per_stage.to_dicts() if frame.height else []))
    rows.append(totals | ({"group": "ALL"} if ctx.options.by else {}))
    columns = ["stage", "deals", "amount", "weighted_amount", "avg_days_in_stage"]
    return Report(
        "pipeline",
        f"Open pipeline ({ctx.target})",
        rows,
        (["group"] if ctx.options.by else []) + columns,
        DEFINITIONS["pipeline"],
        ctx.meta("pipeline", totals={k: totals[k] for k in columns[1:]}),
    )


def _sum_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "deals": sum(r["deals"] for r in rows),
        "amount_conv": sum(r["amount_conv"] for r in rows),
        "weighted": sum(r["weighted"] for r in rows),
        "age_days": sum(r["age_days"] or 0 for r in rows),
    }


def _pipeline_row(ctx: _Context, group_name: str, stage: str, r: dict[str, Any]) -> dict[str, Any]:
    row = {"group": group_name} if ctx.options.by else {}
    return row | {
        "stage": stage,
        "deals": int(r["deals"]),
        "amount": _units(r["amount_conv"]),
        "weighted_amount": _units(r["weighted"]),
        "avg_days_in_stage": round(r["age_days"] / r["deals"], 1) if r["deals"] else None,
    }


# -- report forecast -------------------------------------------------------------------------------


def forecast_report(ctx: _Context) -> Report:
    if ctx.options.period not in {"month", "quarter"}:
        raise UsageError("--period must be month or quarter.")
    _, join = ctx.group_sql()
    commit = [s.id for s in ctx.stages.values() if s.is_open and s.probability >= 0.7]
    best = [s.id for s in ctx.stages.values() if s.is_open and 0.4 <= s.probability < 0.7]
    won = [s.id for s in ctx.stages.values() if s.is_won]
    where = [f"st.stage_id IN ({_open_ids(ctx)}, {_won_ids(ctx)})", "st.close_date IS NOT NULL"]
    params = ctx.params()
    if ctx.options.date_from:
        where.append(f"st.close_date >= {ctx.sql.day_param('from_day')}")
        params["from_day"] = ctx.sql.day(ctx.options.date_from)
    if ctx.options.date_to:
        where.append(f"st.close_date <= {ctx.sql.day_param('to_day')}")
        params["to_day"] = ctx.sql.day(ctx.options.date_to)
    # Raw columns in the database (an index-ordered aggregate); category and month in polars.
    query = (
        f"WITH st AS ({ctx.state()}) "
        f"SELECT {ctx.select_group()}st.stage_id, st.currency, st.close_date, st.forecast_category, "
        f"SUM(COALESCE(st.amount_cents, 0)) AS amount "
        f"FROM st {join} WHERE {' AND '.join(where)} "
        f"GROUP BY {ctx.keys('stage_id', 'currency', 'close_date', 'forecast_category')}"
    )
    frame = ctx.read(query, params)
    if frame.height:
        stage = pl.col("stage_id")
        frame = frame.with_columns(
            category=pl.when(stage.is_in(won))
            .then(pl.lit("won"))
            .when(pl.col("forecast_category").is_in(["commit", "best_case", "pipeline", "omitted"]))
            .then(pl.col("forecast_category"))
            .when(stage.is_in(commit))
            .then(pl.lit("commit"))
            .when(stage.is_in(best))
            .then(pl.lit("best_case"))
            .otherwise(pl.lit("pipeline")),
            month=currency.as_date(frame, "close_date").dt.strftime("%Y-%m"),
        )
    frame = _coarse(ctx, frame, ["month", "category"], ["amount"])
    categories = ["won", "commit", "best_case", "pipeline"]
    rows: list[dict[str, Any]] = []
    if frame.height:
        frame = frame.filter(pl.col("category") != "omitted").with_columns(
            period=pl.col("month")
            if ctx.options.period == "month"
            else pl.col("month").str.slice(0, 4)
            + "-Q"
            + ((pl.col("month").str.slice(5, 2).cast(pl.Int32) - 1) // 3 + 1).cast(pl.String)
        )
        wide = (
            frame.group_by("grp", "period", "category")
            .agg(pl.col("amount_conv").sum())
            .pivot(on="category", index=["grp", "period"], values="amount_conv")
        )
        for c in categories:
            if c not in wide.columns:
                wide = wide.with_columns(pl.lit(0, pl.Int64).alias(c))
        wide = wide.fill_null(0).sort("grp", "period")
        for r in wide.to_dicts():
            rows.append(_forecast_row(ctx, r))
    total = {c: sum(r[c] for r in rows) for c in categories}
    rows.append(
        ({"group": "ALL"} if ctx.options.by else {})
        | {"period": "TOTAL"}
        | _forecast_row(
            ctx, {c: round(total[c] * 100) for c in categories} | {"grp": "ALL", "period": "TOTAL"}
        )
    )
    columns = ["period", *categories, "worst", "most_likely", "best"]
    return Report(
        "forecast",
        f"Forecast by close {ctx.options.period} ({ctx.target})",
        rows,
        (["group"] if ctx.options.by else []) + columns,
        DEFINITIONS["forecast"],
        ctx.meta("forecast", period=ctx.options.period, totals=rows[-1]),
    )


def _forecast_row(ctx: _Context, r: dict[str, Any]) -> dict[str, Any]:
    won, commit, best, pipe = (r.get(c, 0) for c in ("won", "commit", "best_case", "pipeline"))
    row = {"group": r["grp"]} if ctx.options.by else {}
    return row | {
        "period": r["period"],
        "won": _units(won),
        "commit": _units(commit),
        "best_case": _units(best),
        "pipeline": _units(pipe),
        "worst": _units(won + commit),
        "most_likely": _units(won + commit + best),
        "best": _units(won + commit + best + pipe),
    }


# -- report stalled --------------------------------------------------------------------------------


def stalled_report(ctx: _Context) -> Report:
    days = ctx.options.days
    if days is not None and days < 0:
        raise UsageError("--days must be zero or more.")
    params = ctx.params()
    conditions = []
    for stage in ctx.stages.values():
        threshold = days if days is not None else stage.stall_days
        if not stage.is_open or threshold is None:
            continue
        conditions.append(
            f"(st.stage_id = {int(stage.id)} AND st.entered_at < {ctx.sql.ts_param(f'cut{stage.id}')})"
        )
        params[f"cut{stage.id}"] = ctx.sql.ts(ctx.as_of - timedelta(days=threshold))
    where = " OR ".join(conditions) or "1 = 0"
    limit = f" LIMIT {int(ctx.options.limit)}" if ctx.options.limit else ""
    state = f"WITH st AS ({ctx.state(deal=False)}) "
    total = int(ctx.read(f"{state}SELECT COUNT(*) AS n FROM st WHERE {where}", params)["n"][0] or 0)
    # The oldest first from the index alone; names and owners only for the deals listed.
    frame = ctx.read(
        f"{state}SELECT st.deal_id, st.stage_id, st.amount_cents, st.currency, st.close_date, "
        f"{ctx.sql.day_number('st.entered_at')} AS entered_days FROM st WHERE {where} "
        f"ORDER BY st.entered_at, st.deal_id{limit}",
        params,
    )
    if frame.height:
        ids = ", ".join(str(int(i)) for i in frame["deal_id"])
        names = ctx.read(
            f"SELECT id AS deal_id, name, owner FROM deal WHERE tenant_id = :tenant AND id IN ({ids})", params
        )
        frame = frame.join(names, on="deal_id", how="left").with_columns(
            days=day_number(ctx.as_of) - pl.col("entered_days")
        )
    frame = ctx.convert(ctx.with_rate_day(frame), {"amount_cents": "amount_conv"})
    frame = frame.sort("days", "deal_id", descending=[True, False]) if frame.height else frame
    rows = [
        {
            "deal_id": r["deal_id"],
            "deal": r["name"],
            "owner": r["owner"],
            "stage": _stage_label(ctx, r["stage_id"]),
            "days_in_stage": round(r["days"]),
            "amount": _units(r["amount_cents"]),
            "deal_currency": r["currency"],
            f"amount_{ctx.target}": _units(r["amount_conv"]),
        }
        for r in frame.to_dicts()
    ]
    columns = [
        "deal_id",
        "deal",
        "owner",
        "stage",
        "days_in_stage",
        "amount",
        "deal_currency",
        f"amount_{ctx.target}",
    ]
    return Report(
        "stalled",
        f"Stalled deals ({total} in all, oldest first)",
        rows,
        columns,
        DEFINITIONS["stalled"],
        ctx.meta("stalled", stalled_deals=total, listed=len(rows), days=days),
    )


# -- report velocity -------------------------------------------------------------------------------


def velocity_report(ctx: _Context) -> Report:
    _, join = ctx.group_sql()
    period_start, period_end = ctx.period()
    start_ts = datetime.combine(period_start, datetime.min.time(), tzinfo=UTC)
    params = ctx.params(
        p_from=ctx.sql.ts(start_ts),
        p_to=ctx.sql.ts(min(end_of_day(period_end), ctx.as_of)),
    )
    in_period = (
        f"st.entered_at >= {ctx.sql.ts_param('p_from')} AND st.entered_at <= {ctx.sql.ts_param('p_to')}"
    )
    won, lost = _won_ids(ctx), _lost_ids(ctx)
    cycle = f"{ctx.sql.day_number('st.entered_at')} - {ctx.sql.day_number('st.first_at')}"
    query = (
        f"WITH st AS ({ctx.state(deal=ctx.needs_deal)}) SELECT {ctx.select_group()}st.stage_id, "
        "st.currency, st.close_date, COUNT(*) AS deals, SUM(COALESCE(st.amount_cents, 0)) AS amount, "
        f"SUM(CASE WHEN st.stage_id IN ({won}) THEN {cycle} END) AS cycle_days FROM st {join} "
        f"WHERE st.stage_id IN ({_open_ids(ctx)}) OR (st.stage_id IN ({won}, {lost}) AND {in_period}) "
        f"GROUP BY {ctx.keys('stage_id', 'currency', 'close_date')}"
    )
    frame = ctx.read(query, params)
    if frame.height:
        open_ids = [s.id for s in ctx.stages.values() if s.is_open]
        won_ids = [s.id for s in ctx.stages.values() if s.is_won]
        frame = frame.with_columns(
            kind=pl.when(pl.col("stage_id").is_in(open_ids))
            .then(pl.lit("open"))
            .when(pl.col("stage_id").is_in(won_ids))
            .then(pl.lit("won"))
            .otherwise(pl.lit("lost"))
        )
    frame = _coarse(ctx, frame, ["kind"], ["deals", "amount", "cycle_days"])
    rows = []
    groups = sorted(frame["grp"].unique().to_list()) if frame.height else []
    for g in [*groups, None] if ctx.options.by else [None]:
        part = frame.filter(pl.col("grp") == g) if g is not None else frame
        rows.append(_velocity_row(ctx, "ALL" if g is None else g, part))
    columns = [
        "won",
        "lost",
        "win_rate",
        "avg_won_amount",
        "avg_cycle_days",
        "open_deals",
        "velocity_per_day",
    ]
    return Report(
        "velocity",
        f"Sales velocity {period_start} to {period_end} ({ctx.target})",
        rows,
        (["group"] if ctx.options.by else []) + columns,
        DEFINITIONS["velocity"],
        ctx.meta("velocity", period={"from": period_start.isoformat(), "to": period_end.isoformat()}),
    )


def _velocity_row(ctx: _Context, label: str, part: pl.DataFrame) -> dict[str, Any]:
    def total(kind: str, column: str) -> float:
        values = part.filter(pl.col("kind") == kind)[column] if part.height else []
        return float(sum(v or 0 for v in values))

    won, lost, opened = total("won", "deals"), total("lost", "deals"), total("open", "deals")
    win_rate = won / (won + lost) if won + lost else None
    avg_won = total("won", "amount_conv") / won if won else None
    avg_cycle = total("won", "cycle_days") / won if won else None
    velocity = (
        opened * win_rate * avg_won / avg_cycle if win_rate is not None and avg_won and avg_cycle else None
    )
    row = {"group": label} if ctx.options.by else {}
    return row | {
        "won": int(won),
        "lost": int(lost),
        "win_rate": round(win_rate, 4) if win_rate is not None else None,
        "avg_won_amount": _units(avg_won) if avg_won is not None else None,
        "avg_cycle_days": round(avg_cycle, 1) if avg_cycle is not None else None,
        "open_deals": int(opened),
        "velocity_per_day": _units(velocity) if velocity is not None else None,
    }


# -- report funnel ---------------------------------------------------------------------------------


def funnel_report(ctx: _Context) -> Report:
    (pipeline,) = ctx.pipelines
    steps = [s for s in pipeline.stages if not s.is_lost]
    group, join = ctx.group_sql()
    if ctx.options.by == "month":
        group = f"COALESCE({ctx.sql.month('st.first_at')}, '{NONE_LABEL}')"
    elif ctx.options.by == "pipeline":
        group = None  # one pipeline: one group, labelled below (never a name spliced into SQL)
    period_start, period_end = ctx.period()
    params = ctx.params(
        c_from=ctx.sql.ts(datetime.combine(period_start, datetime.min.time(), tzinfo=UTC)),
        c_to=ctx.sql.ts(min(end_of_day(period_end), ctx.as_of)),
    )
    bound = "" if ctx.live else f" AND changed_at <= {ctx.sql.ts_param('at')}"
    entries = ", ".join(
        f"MIN(CASE WHEN to_stage_id = {int(s.id)} THEN changed_at END) AS e{i}" for i, s in enumerate(steps)
    )
    reached_any = []
    reached_in_order = []
    for k in range(len(steps)):
        reached_any.append(
            "SUM(CASE WHEN "
            + " OR ".join(f"st.e{j} IS NOT NULL" for j in range(k, len(steps)))
            + " THEN 1 ELSE 0 END)"
        )
        chain = [f"st.e{j} IS NOT NULL" for j in range(k + 1)] + [
            f"st.e{j - 1} <= st.e{j}" for j in range(1, k + 1)
        ]
        reached_in_order.append(f"SUM(CASE WHEN {' AND '.join(chain)} THEN 1 ELSE 0 END)")
    # The cohort is a range of the history's entered_pipeline_at index, grouped in index order.
    cohort = (
        f"SELECT entered_pipeline_at AS first_at, deal_id, {entries} FROM stage_change "
        f"WHERE tenant_id = :tenant AND entered_pipeline_at >= {ctx.sql.ts_param('c_from')} "
        f"AND entered_pipeline_at <= {ctx.sql.ts_param('c_to')} "
        f"AND to_stage_id IN ({_ids(pipeline.stages)}){bound} GROUP BY entered_pipeline_at, deal_id"
    )
    if ctx.needs_deal:
        cohort = (
            f"SELECT f.*, d.owner, d.source, d.account_id FROM ({cohort}) f "
            "JOIN deal d ON d.tenant_id = :tenant AND d.id = f.deal_id"
        )
    query = (
        f"WITH st AS ({cohort}) SELECT {group or chr(39) * 2} AS grp, COUNT(*) AS cohort, "
        + ", ".join(
            f"{a} AS any{k}, {o} AS ord{k}"
            for k, (a, o) in enumerate(zip(reached_any, reached_in_order, strict=True))
        )
        + f" FROM st {join}"
        + (" GROUP BY 1" if group else "")
    )
    frame = ctx.read(query, params)
    frame = frame.filter(pl.col("cohort") > 0) if frame.height else frame
    if ctx.options.by == "pipeline":
        frame = frame.with_columns(grp=pl.lit(pipeline.name, pl.String))
    if ctx.options.by in {"owner", "source", "segment"} and frame.height:
        frame = frame.with_columns(pl.col("grp").cast(pl.String).fill_null(NONE_LABEL))
    rows: list[dict[str, Any]] = []
    if frame.height:
        groups = frame.to_dicts()
        if ctx.options.by:
            keys = ["cohort"] + [f"{v}{k}" for k in range(len(steps)) for v in ("any", "ord")]
            groups.sort(key=lambda r: r["grp"])
            groups.append({"grp": "ALL"} | {key: sum(r[key] or 0 for r in groups) for key in keys})
        for g in groups:
            for k, stage in enumerate(steps):
                nxt = k + 1 < len(steps)
                any_k, ord_k = int(g[f"any{k}"] or 0), int(g[f"ord{k}"] or 0)
                any_n = int(g[f"any{k + 1}"] or 0) if nxt else None
                ord_n = int(g[f"ord{k + 1}"] or 0) if nxt else None
                rows.append(
                    ({"group": g["grp"]} if ctx.options.by else {})
                    | {
                        "stage": stage.name,
                        "cohort": int(g["cohort"]),
                        "reached_any_stage": any_k,
                        "conversion_any_stage": round(any_n / any_k, 4) if nxt and any_k else None,
                        "drop_off_any_stage": any_k - any_n if any_n is not None else None,
                        "reached_in_order": ord_k,
                        "conversion_in_order": round(ord_n / ord_k, 4) if nxt and ord_k else None,
                        "drop_off_in_order": ord_k - ord_n if ord_n is not None else None,
                    }
                )
    columns = [
        "stage",
        "cohort",
        "reached_any_stage",
        "conversion_any_stage",
        "drop_off_any_stage",
        "reached_in_order",
        "conversion_in_order",
        "drop_off_in_order",
    ]
    return Report(
        "funnel",
        f"Funnel of '{pipeline.name}': deals created {period_start} to {period_end}",
        rows,
        (["group"] if ctx.options.by else []) + columns,
        DEFINITIONS["funnel"],
        ctx.meta(
            "funnel",
            pipelines=[pipeline.name],
            period={"from": period_start.isoformat(), "to": period_end.isoformat()},
        ),
    )


# -- report changes (waterfall) --------------------------------------------------------------------


def _quarter(day: date) -> tuple[date, date]:
    first_month = (day.month - 1) // 3 * 3 + 1
    start = date(day.year, first_month, 1)
    end = date(day.year + (first_month + 3 > 12), (first_month + 2) % 12 + 1, 1) - timedelta(days=1)
    return start, end


def changes_report(ctx: _Context) -> Report:
    opts = ctx.options
    if opts.date_from is None or opts.date_to is None:
        raise UsageError("report changes needs both --from and --to dates.")
    start_at, end_at = end_of_day(opts.date_from), end_of_day(opts.date_to)
    if not ctx.live and ctx.as_of < end_at:
        raise UsageError("--as-of must not be before --to for report changes.")
    if opts.date_from > ctx.as_of.date():
        raise UsageError("--from lies after the as-of date.")
    window_from, window_to = _quarter(opts.date_to)
    window_from, window_to = opts.close_from or window_from, opts.close_to or window_to
    if window_from > window_to:
        raise UsageError("--close-from must be on or before --close-to.")
    if opts.details is not None and opts.details not in BUCKETS:
        raise UsageError(f"--details must be one of {', '.join(BUCKETS)}.")
    sql = ctx.sql
    open_ids = _open_ids(ctx)
    w = f"BETWEEN {sql.day_param('w_from')} AND {sql.day_param('w_to')}"
    # The deals tracked at either end (each an index range of the valid rows), then both states of
    # just those deals; every tracked deal exists at the later end, so s2 is never missing.
    tracked = " UNION ".join(
        valid_rows(sql, "s.deal_id", t, f" AND s.to_stage_id IN ({open_ids}) AND s.close_date {w}")
        for t in ("t1", "t2")
    )

    def state(t: str) -> str:
        columns = "s.to_stage_id AS stage_id, s.amount_cents, s.currency, s.close_date"
        if sql.is_pg:
            # A LIMIT 1 seek per tracked deal: PostgreSQL would otherwise hash-join whole scans.
            return (
                f"SELECT c.deal_id, s.* FROM tracked c JOIN LATERAL (SELECT {columns} FROM stage_change s "
                "WHERE s.tenant_id = :tenant AND s.deal_id = c.deal_id "
                f"AND s.changed_at <= {sql.ts_param(t)} "
                "ORDER BY s.changed_at DESC, s.id DESC LIMIT 1) s ON true"
            )
        return (
            f"SELECT s.deal_id, {columns} "
            "FROM tracked c JOIN stage_change s ON s.tenant_id = :tenant AND s.deal_id = c.deal_id "
            f"WHERE {valid_at(sql, 's', t)}"
        )

    # CASE, not a bare predicate: s1 is NULL for deals that did not exist yet, and NOT NULL is NULL.
    in1 = f"(CASE WHEN s1.stage_id IN ({open_ids}) AND s1.close_date {w} THEN 1 ELSE 0 END = 1)"
    in2 = f"(CASE WHEN s2.stage_id IN ({open_ids}) AND s2.close_date {w} THEN 1 ELSE 0 END = 1)"
    bucket = (
        f"CASE WHEN {in1} AND s2.stage_id IN ({_won_ids(ctx)}) THEN 'won' "
        f"WHEN {in1} AND s2.stage_id IN ({_lost_ids(ctx)}) THEN 'lost' "
        f"WHEN {in1} AND NOT {in2} THEN 'slipped_out' "
        f"WHEN {in2} AND NOT {in1} AND s1.stage_id IN ({open_ids}) THEN 'pulled_in' "
        f"WHEN {in2} AND NOT {in1} THEN 'new' "
        "WHEN COALESCE(s2.amount_cents, 0) > COALESCE(s1.amount_cents, 0) THEN 'increased' "
        "WHEN COALESCE(s2.amount_cents, 0) < COALESCE(s1.amount_cents, 0) THEN 'decreased' "
        "ELSE 'unchanged' END"
    )
    group, join = ctx.group_sql()
    select = ""
    keys = ["bucket", "cur1", "close1", "cur2", "close2"]
    if group:  # owner / source / segment: the deal's own columns
        join = "JOIN deal d ON d.tenant_id = :tenant AND d.id = s2.deal_id " + join.replace("st.", "d.")
        select, keys = f"{group.replace('st.', 'd.')} AS grp, ", ["grp", *keys]
    elif ctx.options.by == "pipeline":
        keys = ["stage_id", *keys]  # the pipeline of the stage at --to, labelled in polars
    joined = f"FROM s2 LEFT JOIN s1 ON s1.deal_id = s2.deal_id {join} WHERE {in1} OR {in2}"
    with_states = f"WITH tracked AS ({tracked}), s1 AS ({state('t1')}), s2 AS ({state('t2')}) "
    params = {
        "tenant": sql.tenant,
        "t1": sql.ts(start_at),
        "t2": sql.ts(end_at),
        "w_from": sql.day(window_from),
        "w_to": sql.day(window_to),
    }
    # Raw close dates in the database; rate days, month and pipeline labels in polars.
    query = (
        f"{with_states}SELECT {', '.join(keys)}, COUNT(*) AS deals, "
        "SUM(n1) AS n1, SUM(n2) AS n2, SUM(a1) AS a1, SUM(a2) AS a2 FROM ("
        f"SELECT {select}s2.stage_id, {bucket} AS bucket, COALESCE(s1.currency, s2.currency) AS cur1, "
        "s1.close_date AS close1, s2.currency AS cur2, s2.close_date AS close2, "
        f"CASE WHEN {in1} THEN COALESCE(s1.amount_cents, 0) ELSE 0 END AS a1, "
        f"CASE WHEN {in2} THEN COALESCE(s2.amount_cents, 0) ELSE 0 END AS a2, "
        f"CASE WHEN {in1} THEN 1 ELSE 0 END AS n1, CASE WHEN {in2} THEN 1 ELSE 0 END AS n2 {joined}) x "
        f"GROUP BY {', '.join(keys)}"
    )
    frame = _change_days(ctx, ctx.read(query, params))
    frame = ctx.finish_group(frame, month_of="close2")
    # converted once per (group, bucket, currencies, rate days), as _coarse does for the other reports
    frame = _sum_up(
        frame, ["grp", "bucket", "cur1", "day1", "cur2", "day2"], ["deals", "n1", "n2", "a1", "a2"]
    )
    frame = ctx.convert(frame, {"a1": "v1"}, currency="cur1", rate_day="day1")
    frame = ctx.convert(frame, {"a2": "v2"}, currency="cur2", rate_day="day2")
    if opts.details is not None:
        return _changes_details(ctx, with_states, joined, bucket, params, (window_from, window_to))
    rows: list[dict[str, Any]] = []
    groups = sorted(frame["grp"].unique().to_list()) if frame.height else []
    identity_ok = True
    for g in [*groups, None] if ctx.options.by else [None]:
        part = frame.filter(pl.col("grp") == g) if g is not None else frame
        label = {"group": "ALL" if g is None else g} if ctx.options.by else {}
        start = int(part["v1"].sum()) if part.height else 0
        end = int(part["v2"].sum()) if part.height else 0
        rows.append(label | {"step": "start", "deals": _total(part, "n1"), "amount": _units(start)})
        running = start
        for b in BUCKETS:
            sub = part.filter(pl.col("bucket") == b) if part.height else part
            value = int((sub["v2"] - sub["v1"]).sum()) if sub.height else 0
            running += value
            rows.append(label | {"step": b, "deals": _total(sub, "deals"), "amount": _units(value)})
        identity_ok &= running == end
        rows.append(label | {"step": "end", "deals": _total(part, "n2"), "amount": _units(end)})
    return Report(
        "changes",
        f"Pipeline changes {opts.date_from} to {opts.date_to}, "
        f"close window {window_from} to {window_to} ({ctx.target})",
        rows,
        (["group"] if ctx.options.by else []) + ["step", "deals", "amount"],
        DEFINITIONS["changes"],
        ctx.meta(
            "changes",
            start_at=start_at.isoformat(),
            end_at=end_at.isoformat(),
            close_window={"from": window_from.isoformat(), "to": window_to.isoformat()},
            identity_holds=identity_ok,
        ),
    )


def _change_days(ctx: _Context, frame: pl.DataFrame) -> pl.DataFrame:
    """Rate days of both ends: each close date, capped at --from / --to."""
    assert ctx.options.date_from is not None and ctx.options.date_to is not None
    frame = ctx.with_rate_day(frame, "close1", "day1", cap=ctx.options.date_from)
    return ctx.with_rate_day(frame, "close2", "day2", cap=ctx.options.date_to)


def _total(part: pl.DataFrame, column: str) -> int:
    return int(part[column].sum()) if part.height else 0


def _changes_details(
    ctx: _Context,
    with_states: str,
    joined: str,
    bucket: str,
    params: dict[str, Any],
    window: tuple[date, date],
) -> Report:
    limit = f" LIMIT {int(ctx.options.limit)}" if ctx.options.limit else ""
    query = (
        f"{with_states}SELECT x.*, n.name, n.owner FROM (SELECT s2.deal_id, s1.stage_id AS stage1, "
        "s2.stage_id AS stage2, "
        f"s1.amount_cents AS a1, s2.amount_cents AS a2, s1.currency AS cur1, s2.currency AS cur2, "
        "s1.close_date AS close1, s2.close_date AS close2, "
        f"{bucket} AS bucket {joined}) x JOIN deal n ON n.tenant_id = :tenant AND n.id = x.deal_id "
        f"WHERE x.bucket = :bucket ORDER BY x.deal_id{limit}"
    )
    frame = ctx.read(query, params | {"bucket": ctx.options.details})
    rows = []
    if frame.height:
        frame = _change_days(ctx, frame.with_columns(pl.col("cur1").fill_null(pl.col("cur2"))))
        frame = ctx.convert(frame, {"a1": "v1"}, currency="cur1", rate_day="day1")
        frame = ctx.convert(frame, {"a2": "v2"}, currency="cur2", rate_day="day2").sort("deal_id")
        for r in frame.to_dicts():
            rows.append(
                {
                    "deal_id": r["deal_id"],
                    "deal": r["name"],
                    "owner": r["owner"],
                    "stage_before": _stage_label(ctx, r["stage1"]) if r["stage1"] is not None else None,
                    "stage_after": _stage_label(ctx, r["stage2"]),
                    "close_before": r["close1"],
                    "close_after": r["close2"],
                    "amount_before": _units(r["a1"]) if r["a1"] is not None else None,
                    "amount_after": _units(r["a2"]),
                    "deal_currency": r["cur2"],
                }
            )
    return Report(
        "changes",
        f"Deals behind '{ctx.options.details}'",
        rows,
        list(rows[0]) if rows else ["deal_id", "deal", "owner", "stage_before", "stage_after"],
        DEFINITIONS["changes"],
        ctx.meta("changes", bucket=ctx.options.details, listed=len(rows)),
    )


# -- entry point -----------------------------------------------------------------------------------

RUNNERS: dict[str, tuple[Callable[[_Context], Report], bool]] = {
    "pipeline": (pipeline_report, False),
    "funnel": (funnel_report, True),
    "velocity": (velocity_report, False),
    "forecast": (forecast_report, False),
    "stalled": (stalled_report, False),
    "changes": (changes_report, False),
}


def run_report(session: Session, kind: str, options: ReportOptions) -> Report:
    """Build report ``kind`` for the session's tenant."""
    runner, single = RUNNERS[kind]
    return runner(_context(session, options, single_pipeline=single))
