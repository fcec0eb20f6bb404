"""crmctl report and crmctl pipeline (issue 5)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from crmctl.commands.common import AppContext, DryRunOption, FormatOption, app_context, example
from crmctl.errors import UsageError
from crmctl.output import OutputFormat
from crmctl.pipeline import config, currency, history, reports
from crmctl.pipeline.state import end_of_day

app = typer.Typer(
    help="Pipeline reports: pipeline, funnel, velocity, forecast, stalled, changes.", no_args_is_help=True
)
pipeline_app = typer.Typer(help="Pipelines and their stages: show, set.", no_args_is_help=True)

PipelineOption = Annotated[
    str | None, typer.Option("--pipeline", "-p", help="Report on this pipeline only (default: all).")
]
ByOption = Annotated[
    str | None, typer.Option("--by", help="Group by owner, segment, source, pipeline or month (close month).")
]
FromOption = Annotated[str | None, typer.Option("--from", help="Start date, YYYY-MM-DD.")]
ToOption = Annotated[str | None, typer.Option("--to", help="End date, YYYY-MM-DD (inclusive).")]
AsOfOption = Annotated[
    str | None,
    typer.Option("--as-of", help="Rebuild the report from the stage history as of the end of this day."),
]
CurrencyOption = Annotated[
    str | None, typer.Option("--currency", help="Report currency (default: the pipeline's currency).")
]
RatesOption = Annotated[
    Path | None,
    typer.Option("--rates", help="CSV of rates (base,currency,day,rate) instead of the exchange_rate table."),
]
ExplainOption = Annotated[bool, typer.Option("--explain", help="Print each metric's definition.")]
LimitOption = Annotated[int, typer.Option("--limit", help="List at most this many deals (0 = all).")]


def parse_day(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{option} must be a date written YYYY-MM-DD.") from None


def _options(
    pipeline: str | None,
    by: str | None,
    date_from: str | None,
    date_to: str | None,
    as_of: str | None,
    report_currency: str | None,
    rates: Path | None,
    **extra: Any,
) -> reports.ReportOptions:
    as_of_day = parse_day(as_of, "--as-of")
    as_of_at = end_of_day(as_of_day) if as_of_day else None
    if as_of_at is not None and as_of_at.date() > datetime.now(UTC).date():
        raise UsageError("--as-of cannot be in the future.")
    return reports.ReportOptions(
        pipeline=pipeline,
        by=by.lower() if by else None,
        date_from=parse_day(date_from, "--from"),
        date_to=parse_day(date_to, "--to"),
        as_of=as_of_at,
        currency=report_currency,
        rates=currency.load_rates_file(rates) if rates else None,
        **extra,
    )


def _run(
    app_ctx: AppContext, kind: str, options: reports.ReportOptions, fmt: OutputFormat, explain: bool
) -> None:
    db = app_ctx.database()
    history.ensure_fresh(db)
    with db.session() as session:
        report = reports.run_report(session, kind, options)
    if explain and fmt is OutputFormat.table:
        for metric, definition in report.definitions.items():
            app_ctx.out.print(f"[bold]{metric}[/bold]: {definition}")
        app_ctx.out.print(f"[dim]{reports.STATE_RULE}[/dim]")
    rows = report.rows
    columns = report.columns
    if fmt is OutputFormat.table and kind == "funnel" and rows:
        rows, columns = _with_bars(rows, columns)
    app_ctx.render_rows(rows, fmt, title=report.title, columns=columns, meta=report.meta)
    if fmt is OutputFormat.table and not rows:
        app_ctx.message("No deals match.")


def _with_bars(rows: list[dict[str, Any]], columns: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """Terminal bars for the funnel: reached (any stage) relative to the largest count."""
    width = 30
    top = max(r["reached_any_stage"] for r in rows) or 1
    barred = [r | {"bar": "█" * round(width * r["reached_any_stage"] / top)} for r in rows]
    return barred, [
        *columns[: columns.index("reached_any_stage") + 1],
        "bar",
        *columns[columns.index("reached_any_stage") + 1 :],
    ]


@app.command(
    "pipeline",
    epilog=example("crmctl report pipeline", "crmctl report pipeline --by owner --as-of 2025-12-31"),
)
def report_pipeline(
    ctx: typer.Context,
    pipeline: PipelineOption = None,
    by: ByOption = None,
    as_of: AsOfOption = None,
    report_currency: CurrencyOption = None,
    rates: RatesOption = None,
    fmt: FormatOption = OutputFormat.table,
    explain: ExplainOption = False,
) -> None:
    """Open deals by stage: count, amount, probability-weighted amount, average days in stage."""
    _run(
        app_context(ctx),
        "pipeline",
        _options(pipeline, by, None, None, as_of, report_currency, rates),
        fmt,
        explain,
    )


@app.command(
    epilog=example(
        "crmctl report funnel --from 2025-01-01 --to 2025-06-30",
        "crmctl report funnel --by source --format json",
    )
)
def funnel(
    ctx: typer.Context,
    pipeline: PipelineOption = None,
    by: ByOption = None,
    date_from: FromOption = None,
    date_to: ToOption = None,
    as_of: AsOfOption = None,
    fmt: FormatOption = OutputFormat.table,
    explain: ExplainOption = False,
) -> None:
    """Stage-to-stage conversion of the deals created in a period: any-stage and in-order."""
    _run(
        app_context(ctx),
        "funnel",
        _options(pipeline, by, date_from, date_to, as_of, None, None),
        fmt,
        explain,
    )


@app.command(
    epilog=example(
        "crmctl report velocity --by owner", "crmctl report velocity --from 2025-01-01 --to 2025-03-31"
    )
)
def velocity(
    ctx: typer.Context,
    pipeline: PipelineOption = None,
    by: ByOption = None,
    date_from: FromOption = None,
    date_to: ToOption = None,
    as_of: AsOfOption = None,
    report_currency: CurrencyOption = None,
    rates: RatesOption = None,
    fmt: FormatOption = OutputFormat.table,
    explain: ExplainOption = False,
) -> None:
    """Win rate, average won deal, sales cycle, open deals and the sales velocity they imply."""
    options = _options(pipeline, by, date_from, date_to, as_of, report_currency, rates)
    _run(app_context(ctx), "velocity", options, fmt, explain)


@app.command(
    epilog=example(
        "crmctl report forecast --period quarter",
        "crmctl report forecast --from 2026-01-01 --to 2026-06-30 --by owner",
    )
)
def forecast(
    ctx: typer.Context,
    pipeline: PipelineOption = None,
    by: ByOption = None,
    date_from: FromOption = None,
    date_to: ToOption = None,
    as_of: AsOfOption = None,
    period: Annotated[str, typer.Option("--period", help="Close month or quarter.")] = "month",
    report_currency: CurrencyOption = None,
    rates: RatesOption = None,
    fmt: FormatOption = OutputFormat.table,
    explain: ExplainOption = False,
) -> None:
    """Won, commit, best case and pipeline by close period, with worst / most likely / best."""
    options = _options(pipeline, by, date_from, date_to, as_of, report_currency, rates, period=period)
    _run(app_context(ctx), "forecast", options, fmt, explain)


@app.command(
    epilog=example("crmctl report stalled", "crmctl report stalled --days 30 --limit 0 --format csv")
)
def stalled(
    ctx: typer.Context,
    pipeline: PipelineOption = None,
    days: Annotated[
        int | None, typer.Option("--days", help="No stage change for this many days (default: per stage).")
    ] = None,
    as_of: AsOfOption = None,
    report_currency: CurrencyOption = None,
    rates: RatesOption = None,
    limit: LimitOption = 100,
    fmt: FormatOption = OutputFormat.table,
    explain: ExplainOption = False,
) -> None:
    """Open deals with no stage change for N days, oldest first, with owner."""
    options = _options(pipeline, None, None, None, as_of, report_currency, rates, days=days, limit=limit)
    _run(app_context(ctx), "stalled", options, fmt, explain)


@app.command(
    epilog=example(
        "crmctl report changes --from 2025-09-30 --to 2025-12-31",
        "crmctl report changes --from 2025-09-30 --to 2025-12-31 --details slipped_out",
    )
)
def changes(
    ctx: typer.Context,
    date_from: FromOption = None,
    date_to: ToOption = None,
    pipeline: PipelineOption = None,
    by: ByOption = None,
    close_from: Annotated[
        str | None, typer.Option("--close-from", help="Close window start (default: quarter of --to).")
    ] = None,
    close_to: Annotated[str | None, typer.Option("--close-to", help="Close window end.")] = None,
    details: Annotated[
        str | None,
        typer.Option(
            "--details", help="List the deals behind one bucket: " + ", ".join(reports.BUCKETS) + "."
        ),
    ] = None,
    as_of: AsOfOption = None,
    report_currency: CurrencyOption = None,
    rates: RatesOption = None,
    limit: LimitOption = 100,
    fmt: FormatOption = OutputFormat.table,
    explain: ExplainOption = False,
) -> None:
    """The pipeline waterfall between two dates: start, new, ... won, lost, end (adds up exactly)."""
    options = _options(
        pipeline,
        by,
        date_from,
        date_to,
        as_of,
        report_currency,
        rates,
        close_from=parse_day(close_from, "--close-from"),
        close_to=parse_day(close_to, "--close-to"),
        details=details,
        limit=limit,
    )
    _run(app_context(ctx), "changes", options, fmt, explain)


# -- crmctl pipeline ------------------------------------------------------------------------------


@pipeline_app.command(epilog=example("crmctl pipeline show", "crmctl pipeline show --format json"))
def show(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="One pipeline.")] = None,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """List the pipelines and their stages in order, with probability, won/lost and stall days."""
    app_ctx = app_context(ctx)
    db = app_ctx.database()
    with db.session() as session:
        pipelines = config.resolve_pipelines(session, name)
    app_ctx.render_rows(config.stage_rows(pipelines), fmt, title="Pipelines")


@pipeline_app.command(
    "set",
    epilog=example("crmctl pipeline set pipelines.toml", "crmctl pipeline set pipelines.toml --dry-run"),
)
def set_(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="Pipeline file: TOML, or YAML (.yaml/.yml).")],
    dry_run: DryRunOption = False,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Create or update pipelines and their stages from a TOML or YAML file (upsert by name)."""
    app_ctx = app_context(ctx)
    specs = config.parse_pipeline_file(path)
    db = app_ctx.database()
    options = {"file": path.name, "pipelines": len(specs)}
    with (
        app_ctx.job(db, "pipeline set", options, dry_run=dry_run) as record,
        db.session(write=True) as session,
    ):
        result = config.set_pipelines(session, specs)
        record.counts.update(vars(result))
        if dry_run:
            session.rollback()
    app_ctx.render_mapping(vars(result) | {"dry_run": dry_run}, fmt, title="Pipelines set")
