"""Lead import with identity resolution, and the commands that inspect and undo it (issue 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from crmctl.commands.common import DryRunOption, FormatOption, YesOption, app_context, example
from crmctl.errors import InputError, RejectRateExceeded, UsageError
from crmctl.identity import history
from crmctl.identity.rules import load_rules
from crmctl.importers.leads import LeadImportOptions, import_leads
from crmctl.importers.reader import DEFAULT_BATCH_ROWS
from crmctl.output import OutputFormat

sources_app = typer.Typer(help="What each imported row resolved to.", no_args_is_help=True)
merges_app = typer.Typer(help="Merge decisions: list, show, undo.", no_args_is_help=True)
review_app = typer.Typer(help="Candidate pairs waiting for a person.", no_args_is_help=True)
runs_app = typer.Typer(help="Import runs: list, show, undo.", no_args_is_help=True)


def leads(
    ctx: typer.Context,
    files: Annotated[list[Path], typer.Argument(help="CSV, TSV, JSONL, Parquet or Excel files.")],
    source: Annotated[str, typer.Option("--source", help="Where the rows come from, e.g. web_form.")],
    id_column: Annotated[
        str | None,
        typer.Option("--id-column", help="Column with the source's own record id (else the row number)."),
    ] = None,
    mapping: Annotated[
        Path | None,
        typer.Option("--mapping", help='TOML/JSON file: field = "Header" to override the automatic mapping.'),
    ] = None,
    default_region: Annotated[
        str | None,
        typer.Option("--default-region", help="Country (ISO alpha-2) for phones without a country code."),
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help="Resolution rules (TOML).")] = None,
    dry_run: DryRunOption = False,
    rejects: Annotated[
        Path | None, typer.Option("--rejects", help="Write rejected rows (row,column,reason) here.")
    ] = None,
    max_reject_rate: Annotated[
        float | None,
        typer.Option("--max-reject-rate", help="Exit 3 when more than this share of rows is rejected."),
    ] = None,
    encoding: Annotated[
        str | None, typer.Option("--encoding", help="Text encoding of CSV files (default UTF-8).")
    ] = None,
    allow_suppressed: Annotated[
        bool,
        typer.Option(
            "--allow-suppressed", help="Import suppressed people when the row carries consent evidence."
        ),
    ] = False,
    batch_rows: Annotated[
        int, typer.Option("--batch-rows", min=1, help="Rows per batch; each batch commits on its own.")
    ] = DEFAULT_BATCH_ROWS,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Import lead files, match every row against the file and the database, merge duplicates."""
    app = app_context(ctx)
    if max_reject_rate is not None and not 0 <= max_reject_rate <= 1:
        raise UsageError("--max-reject-rate must be between 0 and 1 (e.g. 0.05 for 5%).")
    rules = load_rules(config)
    settings = app.settings
    region = default_region or settings.default_region
    db = app.database()
    options = LeadImportOptions(
        paths=list(files),
        source=source,
        id_column=id_column,
        mapping_path=mapping,
        default_region=region,
        rules=rules,
        dry_run=dry_run,
        rejects_path=rejects,
        encoding=encoding,
        allow_suppressed=allow_suppressed,
        erasure_key=settings.erasure_key,
        actor=settings.actor,
        batch_rows=batch_rows,
    )
    audit_options = {
        "files": [f.name for f in files],
        "source": source,
        "id_column": id_column,
        "default_region": region,
        "config": str(config) if config else None,
        "max_reject_rate": max_reject_rate,
    }
    with app.job(
        db, "import leads", audit_options, dry_run=dry_run, lock="import", lock_wait_seconds=None
    ) as rec:
        result = import_leads(db, options)
        rec.counts.update({k: v for k, v in result.counts.items() if k != "rules"})
    for name, used in result.mappings.items():
        app.message(f"{name}: " + ", ".join(f"{field} <- {header}" for field, header in used.items()))
    counts = result.counts
    summary = {
        "runs": result.run_ids if not dry_run else [],
        "dry_run": dry_run,
        "rows_read": counts["rows_read"],
        "new_contacts": counts["new_contacts"],
        "merged_into_existing": counts["merged_into_existing"],
        "merged_within_file": counts["merged_within_file"],
        "sent_to_review": counts["sent_to_review"],
        "rejected": counts["rejected"],
        "already_imported": counts["already_imported"],
        "contacts_merged": counts["contacts_merged"],
        "rules": counts["rules"],
        "seconds": result.seconds,
    }
    if fmt is OutputFormat.table and dry_run:
        # for people, each outcome says it would happen; scripts get the same keys as a real run
        outcomes = set(summary) - {"runs", "dry_run", "rows_read", "seconds"}
        shown = {f"{key} (would)" if key in outcomes else key: value for key, value in summary.items()}
        app.render_mapping(shown, fmt, title="Lead import (dry run: nothing written)")
    elif fmt is OutputFormat.table:
        app.render_mapping(summary, fmt, title="Lead import (done)")
    else:
        app.render_mapping(summary, fmt)
    if rejects is not None and counts["rejected"]:
        app.message(f"Rejected rows and reasons: {rejects}")
    rate = counts["rejected"] / counts["rows_read"] if counts["rows_read"] else 0.0
    if max_reject_rate is not None and rate > max_reject_rate:
        raise RejectRateExceeded(
            f"{counts['rejected']} of {counts['rows_read']} rows were rejected ({rate:.1%}), "
            f"more than --max-reject-rate {max_reject_rate:.1%}."
        )


def register_import_commands(import_app: typer.Typer) -> None:
    """Add `import leads` to the import group."""
    import_app.command(
        "leads",
        epilog=example(
            "crmctl import leads web.csv --source web_form",
            "crmctl import leads calls.csv --source dialler --id-column call_id --default-region US",
            "crmctl import leads events.xlsx --source event --dry-run --format json",
        ),
    )(leads)


@sources_app.command(
    "list", epilog=example("crmctl sources list --format csv", "crmctl sources list --source dialler")
)
def sources_list(
    ctx: typer.Context,
    source: Annotated[str | None, typer.Option("--source", help="Only this source.")] = None,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Every imported row: source, source_record_id and the contact it resolved to."""
    app = app_context(ctx)
    with app.database().session() as session:
        rows = history.source_links(session, source)
    app.render_rows(rows, fmt, title="Source records")


@merges_app.command("list", epilog=example("crmctl merges list", "crmctl merges list --run 3 --format json"))
def merges_list(
    ctx: typer.Context,
    run: Annotated[int | None, typer.Option("--run", help="Only merges of this import run.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many (newest first).")] = 100,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Merge decisions with their rule and score (newest first)."""
    app = app_context(ctx)
    with app.database().session() as session:
        rows = history.merge_decisions(session, run_id=run, limit=limit)
    app.render_rows(rows, fmt, title="Merge decisions")


@merges_app.command("show", epilog=example("crmctl merges show 42 --format json"))
def merges_show(
    ctx: typer.Context,
    decision_id: Annotated[int, typer.Argument(help="Merge decision id.")],
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """One merge decision: rule, score, levels and the values every candidate held."""
    app = app_context(ctx)
    with app.database().session() as session:
        decision = history.merge_decision(session, decision_id)
    app.render_mapping(decision, fmt, title=f"Merge decision {decision_id}")


@review_app.command(
    "list", epilog=example("crmctl review list", "crmctl review list --status all --format csv")
)
def review_list(
    ctx: typer.Context,
    status: Annotated[str, typer.Option("--status", help="open, accepted, rejected or all.")] = "open",
    limit: Annotated[int, typer.Option("--limit")] = 100,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Pairs too close to call, waiting for a person."""
    app = app_context(ctx)
    with app.database().session() as session:
        rows = history.review_items(session, status=None if status == "all" else status, limit=limit)
    app.render_rows(rows, fmt, title="Review queue")


@runs_app.command("list", epilog=example("crmctl imports list", "crmctl imports list --format json"))
def runs_list(ctx: typer.Context, fmt: FormatOption = OutputFormat.table) -> None:
    """Lead import runs, newest first, with their counts."""
    app = app_context(ctx)
    with app.database().session() as session:
        rows = history.import_runs(session)
    app.render_rows(rows, fmt, title="Import runs")


@runs_app.command("show", epilog=example("crmctl imports show 3", "crmctl imports show 3 --results run3.csv"))
def runs_show(
    ctx: typer.Context,
    run_id: Annotated[int, typer.Argument(help="Import run id.")],
    results: Annotated[
        Path | None,
        typer.Option("--results", help="Write row,source_record_id,contact_id,action,reason to this CSV."),
    ] = None,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """One run's counts; --results writes what every input row became."""
    app = app_context(ctx)
    with app.database().session() as session:
        summary, rows = history.import_run(session, run_id)
    if results is not None:
        try:
            rows.write_csv(results)
        except OSError as exc:
            raise InputError(
                f"Cannot write the results file {results}.",
                hint="Check that its folder exists and is writable.",
            ) from exc
        summary["results_file"] = str(results)
    app.render_mapping(summary, fmt, title=f"Import run {run_id}")


@runs_app.command("undo", epilog=example("crmctl imports undo 3 --yes"))
def runs_undo(
    ctx: typer.Context,
    run_id: Annotated[int, typer.Argument(help="Import run id.")],
    yes: YesOption = False,
    dry_run: DryRunOption = False,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Take a whole import run back: the contacts it created, its records, its merges and fills."""
    from crmctl.identity.undo import undo_run

    app = app_context(ctx)
    db = app.database()
    if not dry_run:
        app.confirm(f"Undo import run {run_id}?", yes=yes)
    with app.job(
        db, "imports undo", {"run": run_id}, dry_run=dry_run, lock="import", lock_wait_seconds=None
    ) as rec:
        with db.session(write=True) as session:
            result = undo_run(session, run_id, actor=app.settings.actor)
            if dry_run:
                session.rollback()
        rec.counts.update({"source_records_removed": result.source_records_removed})
    app.render_mapping(
        {"dry_run": dry_run, **result.__dict__},
        fmt,
        title=f"Import run {run_id} undone" + (" (dry run)" if dry_run else ""),
    )


def _decide(ctx: typer.Context, item_id: int, accept: bool, dry_run: bool, fmt: OutputFormat) -> None:
    from crmctl.identity.undo import decide_review

    app = app_context(ctx)
    db = app.database()
    command = "review accept" if accept else "review reject"
    with (
        app.job(db, command, {"item": item_id}, dry_run=dry_run, lock="import", lock_wait_seconds=None),
        db.session(write=True) as session,
    ):
        result = decide_review(session, item_id, accept=accept, actor=app.settings.actor)
        if dry_run:
            session.rollback()
    title = f"Review item {item_id}" + (" (dry run: nothing written)" if dry_run else "")
    app.render_mapping({"dry_run": dry_run, **result}, fmt, title=title)


@review_app.command("accept", epilog=example("crmctl review accept 7", "crmctl review accept 7 --dry-run"))
def review_accept(
    ctx: typer.Context,
    item_id: Annotated[int, typer.Argument(help="Review item id.")],
    dry_run: DryRunOption = False,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Same person: merge the two contacts (a merge decision records it)."""
    _decide(ctx, item_id, True, dry_run, fmt)


@review_app.command("reject", epilog=example("crmctl review reject 7"))
def review_reject(
    ctx: typer.Context,
    item_id: Annotated[int, typer.Argument(help="Review item id.")],
    dry_run: DryRunOption = False,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Different people: keep the two contacts apart."""
    _decide(ctx, item_id, False, dry_run, fmt)


@merges_app.command("undo", epilog=example("crmctl merges undo 42 --yes", "crmctl merges undo 42 --dry-run"))
def merges_undo(
    ctx: typer.Context,
    decision_id: Annotated[int, typer.Argument(help="Merge decision id (a contact-to-contact merge).")],
    yes: YesOption = False,
    dry_run: DryRunOption = False,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Take back a contact merge; record-level merges are taken back with `imports undo RUN`."""
    from crmctl.identity.undo import undo_merge

    app = app_context(ctx)
    db = app.database()
    if not dry_run:
        app.confirm(f"Undo merge decision {decision_id}?", yes=yes)
    with (
        app.job(
            db,
            "merges undo",
            {"decision": decision_id},
            dry_run=dry_run,
            lock="import",
            lock_wait_seconds=None,
        ),
        db.session(write=True) as session,
    ):
        result = undo_merge(session, decision_id, actor=app.settings.actor)
        if dry_run:
            session.rollback()
    title = f"Merge decision {decision_id}" + (" (dry run: nothing written)" if dry_run else "")
    app.render_mapping({"dry_run": dry_run, **result}, fmt, title=title)


def resolve_command(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option("--config", help="Resolution rules (TOML).")] = None,
    dry_run: DryRunOption = False,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Run resolution again over the contacts in the database and merge the duplicates it finds."""
    from crmctl.identity.reresolve import resolve_existing

    app = app_context(ctx)
    rules = load_rules(config)
    db = app.database()
    options = {"config": str(config) if config else None}
    with (
        app.job(db, "resolve", options, dry_run=dry_run, lock="import", lock_wait_seconds=None) as rec,
        db.session(write=True) as session,
    ):
        result = resolve_existing(session, rules, actor=app.settings.actor)
        rec.counts.update({k: v for k, v in result.items() if k != "rules"})
        if dry_run:
            session.rollback()
    app.render_mapping(
        {"dry_run": dry_run, **result},
        fmt,
        title="Resolve" + (" (dry run: nothing written)" if dry_run else ""),
    )


def register_top_level_commands(app: typer.Typer) -> None:
    """Add `crmctl resolve`."""
    app.command(
        "resolve", epilog=example("crmctl resolve --dry-run", "crmctl resolve --config resolution.toml")
    )(resolve_command)
