"""crmctl health: score accounts with a health model; show, explain and follow the scores."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from crmctl.commands.common import DryRunOption, FormatOption, app_context, example
from crmctl.errors import UsageError
from crmctl.health import history as health_history
from crmctl.health import manual
from crmctl.health.model import load_model
from crmctl.health.scoring import score as run_score
from crmctl.output import OutputFormat

app = typer.Typer(help="Account health scores: score, show, changes, history.", no_args_is_help=True)
signal_app = typer.Typer(
    help="Manual signals: a CSM's judgement of an account, until it expires.", no_args_is_help=True
)
app.add_typer(signal_app, name="signal")

BAND_STYLES = {"green": "green", "amber": "yellow", "red": "red"}


def _parse_date(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{option} must be a date like 2026-06-30.") from None


AsOfOption = Annotated[
    str | None,
    typer.Option("--as-of", help="Score as the data stood at the end of this day (UTC). Default: today."),
]
AccountArgument = Annotated[str, typer.Argument(help="Account id, external id or exact name.")]


@app.command(
    epilog=example(
        "crmctl health score",
        "crmctl health score --as-of 2026-06-30 --model my-model.toml",
        "crmctl health score --dry-run --format json",
    )
)
def score(
    ctx: typer.Context,
    model_file: Annotated[
        Path | None, typer.Option("--model", help="A health model, TOML or YAML (default: packaged).")
    ] = None,
    as_of: AsOfOption = None,
    dry_run: DryRunOption = False,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Score every account and store a snapshot per account (re-running a date replaces it).

    Takes the 'health-score' job lock: a second concurrent run exits with code 4."""
    app_ctx = app_context(ctx)
    day = _parse_date(as_of, "--as-of") or datetime.now(UTC).date()
    model = load_model(model_file)  # validated before anything is opened or written
    db = app_ctx.database()
    options = {
        "model": model.name,
        "model_version": model.version,
        "as_of": day.isoformat(),
        "dry_run": dry_run,
    }
    with app_ctx.job(db, "health score", options, dry_run=dry_run, lock="health-score") as record:
        result = run_score(db, model, day, actor=app_ctx.settings.actor, dry_run=dry_run)
        record.counts.update(
            {
                "accounts": result.accounts,
                "transitions": result.transitions,
                "replaced": result.replaced,
                **result.bands,
            }
        )
    summary: dict[str, Any] = {
        "as_of": result.as_of.isoformat(),
        "model": result.model_name,
        "model_version": result.model_version,
        "accounts": result.accounts,
        **result.bands,
        "transitions": result.transitions,
        "replaced": result.replaced,
        "dry_run": result.dry_run,
        "seconds": result.timings,
    }
    if fmt is OutputFormat.table:
        counts = ", ".join(f"{n} {band}" for band, n in result.bands.items())
        verb = "Would score" if dry_run else "Scored"
        app_ctx.message(
            f"{verb} {result.accounts} accounts as of {result.as_of} with model {result.model_name} "
            f"({result.model_version}): {counts}; {result.transitions} transitions."
        )
    app_ctx.render_mapping(summary, fmt, title="Health score")


def _styled_band(band: str | None) -> Text:
    return Text(band or "-", style=BAND_STYLES.get(band or "", "dim"))


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


WATERFALL_WIDTH = 40


def _bar(start: float, amount: float, style: str) -> Text:
    """A waterfall step on a 0..100 scale: blank up to the running total, then the contribution."""
    scale = WATERFALL_WIDTH / 100
    lead = round(start * scale)
    length = max(1 if amount > 0 else 0, round((start + amount) * scale) - lead)
    bar = Text(" " * lead)
    bar.append("█" * length, style=style)
    return bar


@app.command(epilog=example("crmctl health show 42", "crmctl health show 'Acme Ltd' --format json"))
def show(
    ctx: typer.Context,
    account: AccountArgument,
    as_of: AsOfOption = None,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Why an account scores what it does: a waterfall of its signals, and what changed since the
    previous snapshot (the signal that drove the change first)."""
    app_ctx = app_context(ctx)
    day = _parse_date(as_of, "--as-of")
    db = app_ctx.database()
    with db.session() as session:
        result = health_history.breakdown(session, account, day)
    if fmt is not OutputFormat.table:
        app_ctx.render_mapping(
            {
                "account_id": result.account.id,
                "account": result.account.name,
                "as_of": result.as_of.isoformat(),
                "model_version": result.model_version,
                "segment": result.segment,
                "composite": result.composite,
                "band": result.band,
                "signals": result.signals,
                "previous": result.previous,
                "changes": result.changes,
            },
            fmt,
        )
        return
    style = BAND_STYLES.get(result.band, "")
    table = Table(
        title=Text.assemble(
            f"{result.account.name} (#{result.account.id}) · {result.as_of} · ",
            (f"{result.composite:.1f} {result.band}", f"bold {style}"),
            f" · segment {result.segment} · model {result.model_version}",
        ),
        header_style="bold",
    )
    for column, justify in [
        ("signal", "left"),
        ("raw", "right"),
        ("normalised", "right"),
        ("weight", "right"),
        ("contribution", "right"),
        ("waterfall 0..100", "left"),
    ]:
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    running = 0.0
    for s in sorted(result.signals, key=lambda r: (-(r["contribution"] or 0.0), r["signal"])):
        band_style = BAND_STYLES.get(s["band"] or "", "dim")
        contribution = s["contribution"] or 0.0
        table.add_row(
            s["signal"],
            _num(s["raw_value"]),
            Text(_num(s["normalised_value"], 1), style=band_style),
            f"{(s['weight'] or 0) * 100:.1f}%",
            _num(contribution),
            _bar(running, contribution, band_style),
        )
        running += contribution
    table.add_row(
        Text("composite", style="bold"),
        "",
        "",
        "",
        Text(f"{result.composite:.2f}", style=f"bold {style}"),
        "",
    )
    app_ctx.out.print(table)
    if result.previous is None:
        app_ctx.out.print("No earlier snapshot to compare with.")
        return
    prev = result.previous
    delta = result.composite - prev["composite"]
    app_ctx.out.print(
        Text.assemble(
            f"Since {prev['as_of']}: ",
            _styled_band(prev["band"]),
            f" {prev['composite']:.1f} -> ",
            _styled_band(result.band),
            f" {result.composite:.1f} ({delta:+.1f})",
        )
    )
    changes = Table(header_style="bold")
    for column in ("signal", "raw before", "raw now", "contribution change"):
        changes.add_column(column, justify="left" if column == "signal" else "right")
    for c in result.changes:
        if abs(c["change"]) < 0.005:
            continue
        changes.add_row(
            c["signal"],
            _num(c["raw_before"]),
            _num(c["raw_now"]),
            Text(f"{c['change']:+.2f}", style="green" if c["change"] > 0 else "red"),
        )
    app_ctx.out.print(changes)


@app.command(
    epilog=example(
        "crmctl health changes --since 2026-06-01",
        "crmctl health changes --to red --format json | jq '.[].account_id'",
    )
)
def changes(
    ctx: typer.Context,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Transitions scored on or after this date. Default: 7 days ago."),
    ] = None,
    to_band: Annotated[
        str | None, typer.Option("--to", help="Only transitions into this band (green, amber, red).")
    ] = None,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Band transitions (green -> amber, ...) with the signals that drove them."""
    app_ctx = app_context(ctx)
    day = _parse_date(since, "--since") or (datetime.now(UTC).date() - timedelta(days=7))
    if to_band is not None and to_band not in BAND_STYLES:
        raise UsageError("--to must be green, amber or red.")
    db = app_ctx.database()
    with db.session() as session:
        rows = health_history.changes(session, day, to_band)
    if fmt is OutputFormat.table:
        rows = [
            {
                **r,
                "drivers": ", ".join(f"{d['signal']} {d['change']:+.1f}" for d in r["drivers"]),
                "composite": round(r["composite"], 1) if r["composite"] is not None else None,
                "previous_composite": round(r["previous_composite"], 1)
                if r["previous_composite"] is not None
                else None,
            }
            for r in rows
        ]
    app_ctx.render_rows(
        rows,
        fmt,
        title=f"Health transitions since {day}",
        columns=[
            "account_id",
            "account",
            "as_of",
            "from",
            "to",
            "previous_composite",
            "composite",
            "drivers",
        ],
    )


@app.command(epilog=example("crmctl health history 42", "crmctl health history 42 --format csv"))
def history(ctx: typer.Context, account: AccountArgument, fmt: FormatOption = OutputFormat.table) -> None:
    """The account's composite over time (a sparkline on a 0..100 scale in the terminal)."""
    app_ctx = app_context(ctx)
    db = app_ctx.database()
    with db.session() as session:
        ref, frame = health_history.history(session, account)
    spark = health_history.sparkline(frame["composite"].to_list()) if frame.height else ""
    if fmt is OutputFormat.table:
        app_ctx.out.print(Text.assemble(f"{ref.name} (#{ref.id}) ", (spark, "bold")))
    app_ctx.render_rows(
        frame, fmt, title="Health history", meta={"sparkline": spark} if fmt is OutputFormat.json else None
    )


@signal_app.command(
    "set",
    epilog=example(
        "crmctl health signal set 42 30 --note 'Champion left' --expires 2026-09-30",
    ),
)
def signal_set(
    ctx: typer.Context,
    account: AccountArgument,
    value: Annotated[float, typer.Argument(help="The judgement, 0 (about to churn) .. 100 (thriving).")],
    note: Annotated[str | None, typer.Option("--note", help="Why (kept with the signal).")] = None,
    expires: Annotated[
        str | None, typer.Option("--expires", help="Last day it counts (default: until replaced).")
    ] = None,
    dry_run: DryRunOption = False,
) -> None:
    """Record a CSM's judgement of an account; scoring uses the latest one until it expires."""
    app_ctx = app_context(ctx)
    until = _parse_date(expires, "--expires")
    db = app_ctx.database()
    options = {"account": account, "expires": expires, "dry_run": dry_run}
    with (
        app_ctx.job(db, "health signal set", options, dry_run=dry_run) as record,
        db.session(write=not dry_run) as session,
    ):
        ref, row = manual.set_signal(
            session, account, value, author=app_ctx.settings.actor, note=note, expires=until
        )
        record.counts["signals"] = 1
        if dry_run:
            session.rollback()
    until_text = f" until the end of {until}" if until else ""
    verb = "Would record" if dry_run else "Recorded"
    app_ctx.message(f"{verb} a manual signal of {row.value:g} for account #{ref.id}{until_text}.")


@signal_app.command("list", epilog=example("crmctl health signal list 42"))
def signal_list(ctx: typer.Context, account: AccountArgument, fmt: FormatOption = OutputFormat.table) -> None:
    """The account's manual signals, newest first."""
    app_ctx = app_context(ctx)
    db = app_ctx.database()
    with db.session() as session:
        ref, rows = manual.list_signals(session, account)
    app_ctx.render_rows(
        [r.__dict__ for r in rows],
        fmt,
        title=f"Manual signals of #{ref.id}",
        columns=["id", "value", "author", "note", "created_at", "expires_at"],
    )
