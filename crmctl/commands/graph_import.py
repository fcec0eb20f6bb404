"""Migration importers for the customer graph and CRM presets, and `crmctl demo` (issue 4)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from crmctl.commands.common import AppContext, DryRunOption, FormatOption, app_context, example
from crmctl.db.engine import Database, describe_url
from crmctl.errors import UsageError
from crmctl.importers import graph
from crmctl.importers.presets import PRESETS
from crmctl.importers.reader import load_mapping
from crmctl.output import OutputFormat

HELP = {
    "accounts": "Import accounts (companies), upserted on (source, external id); parents by external id.",
    "contacts": "Import contacts, normalised like leads; their account by external id, domain or name.",
    "deals": "Import deals; account by external id, domain or name, contact by external id or email.",
    "stage-changes": "Import deal stage history (append-only: re-importing adds nothing).",
    "interactions": "Import emails, calls, meetings, notes, NPS and CSAT (append-only).",
    "product-usage": "Import product usage events or daily rollups per account (append-only).",
    "contracts": "Import contracts (start, end, ARR, auto-renew, entitlements); creates their renewals.",
    "tickets": "Import support tickets with priority, status, sentiment and CSAT.",
}
EXAMPLES = {
    "accounts": ("crmctl import accounts companies.csv --preset hubspot",),
    "contacts": ("crmctl import contacts Contact.csv --preset salesforce --rejects rejects.csv",),
    "deals": ("crmctl import deals deals.csv --preset pipedrive --dry-run",),
    "stage-changes": ("crmctl import stage-changes OpportunityHistory.csv --preset salesforce",),
    "interactions": ("crmctl import interactions activities.csv --source zendesk --mapping cols.toml",),
    "product-usage": ("crmctl import product-usage usage-*.parquet --source segment",),
    "contracts": ("crmctl import contracts contracts.csv --source billing",),
    "tickets": ("crmctl import tickets tickets.csv --source zendesk --dry-run --format json",),
}

FilesArgument = Annotated[
    list[Path], typer.Argument(help="CSV, TSV, JSONL, Parquet or Excel files.", show_default=False)
]
MappingOption = Annotated[
    Path | None,
    typer.Option(
        "--mapping", help='TOML/JSON file mapping fields to your headers: email = "E-mail Address".'
    ),
]
PresetOption = Annotated[
    str | None, typer.Option("--preset", help=f"Column names of a CRM export: {', '.join(PRESETS)}.")
]
SourceOption = Annotated[
    str | None,
    typer.Option(
        "--source", help="Source system the external ids belong to (default: the preset, or 'import')."
    ),
]
RejectsOption = Annotated[
    Path | None,
    typer.Option("--rejects", help="Reject file (row,column,reason), or a folder for one file per input."),
]
EncodingOption = Annotated[
    str | None, typer.Option("--encoding", help="Text encoding of CSV files (default UTF-8).")
]
BatchOption = Annotated[int, typer.Option("--batch-rows", min=1, help="Rows per batch and transaction.")]
RejectRateOption = Annotated[
    float | None,
    typer.Option(
        "--max-reject-rate", min=0.0, max=1.0, help="Exit 3 when more than this share of rows is rejected."
    ),
]


def register_import_commands(import_app: typer.Typer) -> None:
    """Add `import accounts|contacts|deals|stage-changes|interactions|product-usage|contracts|tickets`."""
    for kind in graph.KINDS:
        import_app.command(kind, help=HELP[kind], epilog=example(*EXAMPLES[kind]))(_import_command(kind))


def register_top_level_commands(app: typer.Typer) -> None:
    """Add `crmctl demo`."""
    app.command(
        "demo",
        epilog=example(
            "crmctl --db sqlite:///demo.db demo",
            "crmctl --db sqlite:///demo.db demo --people 20000 --seed 7 --out demo-data",
            "crmctl --db postgresql://app@db/crm_demo demo --people 5000",
        ),
    )(demo)


def _import_command(kind: str) -> Callable[..., None]:
    def command(
        ctx: typer.Context,
        files: FilesArgument,
        mapping: MappingOption = None,
        preset: PresetOption = None,
        source: SourceOption = None,
        dry_run: DryRunOption = False,
        rejects: RejectsOption = None,
        encoding: EncodingOption = None,
        batch_rows: BatchOption = graph.DEFAULT_BATCH_ROWS,
        max_reject_rate: RejectRateOption = None,
        fmt: FormatOption = OutputFormat.table,
    ) -> None:
        app = app_context(ctx)
        if mapping is not None and preset is not None:
            raise UsageError("Use either --mapping or --preset, not both.")
        preset_name = preset.lower() if preset else None
        if preset_name is not None and preset_name not in PRESETS:
            raise UsageError(f"Unknown preset '{preset}'.", hint=f"Use one of: {', '.join(PRESETS)}.")
        options = graph.ImportOptions(
            source=source,
            preset=preset_name,
            mapping=load_mapping(mapping) if mapping else None,
            dry_run=dry_run,
            encoding=encoding,
            batch_rows=batch_rows,
            max_reject_rate=max_reject_rate,
            erasure_key=app.settings.erasure_key,
            default_region=getattr(app.settings, "default_region", None),
            actor=app.settings.actor,
        )
        db = app.database()
        results = run_imports(app, db, kind, files, options, rejects=rejects)
        render_results(app, results, fmt)

    return command


def _rejects_path(rejects: Path | None, path: Path, many: bool) -> Path:
    """Where a file's rejects go: --rejects as given (a folder gets one file per input); by
    default beside the input as <name>.rejects.csv (created only when a row is rejected)."""
    if rejects is None:
        return path.with_name(f"{path.stem}.rejects.csv")
    if rejects.is_dir():
        return rejects / f"{path.stem}.rejects.csv"
    if many:
        raise UsageError(
            "--rejects names one file but several input files were given: pass a folder instead."
        )
    return rejects


def run_imports(
    app: AppContext,
    db: Database,
    kind: str,
    files: Sequence[Path],
    options: graph.ImportOptions,
    *,
    rejects: Path | None = None,
) -> list[graph.ImportResult]:
    """Import each file in turn inside one audited job (imports wait for each other's lock)."""
    audit_options: dict[str, Any] = {
        "files": [p.name for p in files],
        "preset": options.preset,
        "source": options.source_system,
        "mapping": bool(options.mapping),
        "batch_rows": options.batch_rows,
    }
    results: list[graph.ImportResult] = []
    with app.job(
        db, f"import {kind}", audit_options, dry_run=options.dry_run, lock="import", lock_wait_seconds=None
    ) as record:
        for path in files:
            options.rejects_path = _rejects_path(rejects, path, len(files) > 1)
            result = graph.import_file(db, kind, path, options)
            results.append(result)
            record.counts[path.name] = {"rows": result.rows, **result.counts()}
    return results


def render_results(app: AppContext, results: Sequence[graph.ImportResult], fmt: OutputFormat) -> None:
    dry_run = any(r.dry_run for r in results)
    rows = [row for r in results for row in r.summary_rows()]
    if dry_run:
        for row in rows:
            row["would_create"], row["would_update"] = row.pop("created"), row.pop("updated")
    reasons = [
        {"file": r.file, "column": column, "reason": reason, "rows": n}
        for r in results
        for (column, reason), n in sorted(r.reasons.items(), key=lambda item: -item[1])
    ]
    title = "Validation report (dry run: nothing was written)" if dry_run else "Import summary"
    columns = ["file", "table", *(("would_create", "would_update") if dry_run else ("created", "updated"))]
    columns += ["skipped", "rejected"]
    app.render_rows(rows, fmt, title=title, columns=columns, meta={"dry_run": dry_run, "rejects": reasons})
    if fmt is OutputFormat.table and reasons:
        app.render_rows(reasons, fmt, title="Rejected rows by reason")
    for r in results:
        if r.rejects_path is not None:
            app.message(f"{r.file}: {r.rejected_rows} row(s) rejected; see {r.rejects_path}.")
        if r.preset_object:
            app.message(f"{r.file}: read as a {r.preset_object} export.")


# ---------------------------------------------------------------------------------------------
# crmctl demo
# ---------------------------------------------------------------------------------------------


def demo(
    ctx: typer.Context,
    people: Annotated[int, typer.Option("--people", min=20, help="How many contacts to generate.")] = 2000,
    seed: Annotated[int, typer.Option("--seed", help="Same seed and date, same data.")] = 42,
    out: Annotated[Path, typer.Option("--out", help="Folder for the generated files.")] = Path("demo-data"),
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="The day the data ends (YYYY-MM-DD). Default: today (UTC).")
    ] = None,
) -> None:
    """Generate a realistic, seeded dataset, import it through the real importers, show a tour.

    Accounts across segments with parent/child groups, contacts, 18 months of deals with stage
    histories, interactions (NPS, CSAT), product usage that is healthy, declining or churning,
    contracts with renewals, support tickets, and lead files with duplicates for identity resolution.
    """
    from crmctl.demo.run import DemoOptions, generate_and_import

    app = app_context(ctx)
    try:
        day = date.fromisoformat(as_of) if as_of else datetime.now(UTC).date()
    except ValueError:
        raise UsageError(f"--as-of must be a date like 2026-06-30, not '{as_of}'.") from None
    db = app.database()
    options = DemoOptions(people=people, seed=seed, out=out, as_of=day)
    app.message(f"Generating the demo dataset ({people:,} people, seed {seed}, data up to {day}) in {out}/ …")
    with app.job(db, "demo", options.audit(), lock="import", lock_wait_seconds=None) as record:
        summary = generate_and_import(db, options, erasure_key=app.settings.erasure_key)
        record.counts.update(summary.counts())
    app.render_rows(summary.rows(), OutputFormat.table, title="Demo import")
    _import_demo_leads(app, options)
    _tour(app)


def _invoke(app: AppContext, *args: str) -> int:
    """Run another crmctl command in this process, on the same database, tenant and actor."""
    from typer.main import get_command

    from crmctl.main import app as root

    s = app.settings
    argv = [
        "--db",
        s.database_url,
        "--tenant",
        s.tenant,
        "--actor",
        s.actor,
        *(["--quiet"] if app.quiet else []),
        *args,
    ]
    try:
        result = get_command(root).main(args=argv, prog_name="crmctl", standalone_mode=False)
    except SystemExit as exc:  # a command that exits through sys.exit
        return int(exc.code or 0)
    except Exception:  # the tour must never fail the demo
        return 1
    return int(result or 0) if isinstance(result, int) else 0


def _has_command(*path: str) -> bool:
    from typer.main import get_command

    from crmctl.main import app as root

    command: Any = get_command(root)
    for name in path:
        # families load on first use (crmctl.main.FAMILIES): ask the group, not its .commands
        command = command.get_command(None, name) if hasattr(command, "get_command") else None
        if command is None:
            return False
    return True


def _import_demo_leads(app: AppContext, options: Any) -> None:
    """The lead files in their four source shapes, through `crmctl import leads` (identity resolution)."""
    try:
        from crmctl.demo.leads import write_lead_files  # type: ignore[import-not-found]
    except ImportError:
        app.warn("The lead-file generator is not available in this build; skipping the lead import.")
        return
    if not _has_command("import", "leads"):
        app.warn("`crmctl import leads` is not available in this build; skipping the lead import.")
        return
    lead_files = write_lead_files(options.out / "leads", people=options.people, seed=options.seed)
    for lead in lead_files:
        app.message(f"Importing leads from {lead.path.name} (source {lead.source}) …")
        code = _invoke(
            app, "import", "leads", str(lead.path), "--source", lead.source, "--id-column", lead.id_column
        )
        if code != 0:
            app.warn(f"The lead import of {lead.path.name} exited with {code}; the demo carries on.")


def _tour(app: AppContext) -> None:
    """What to try next; runs the report and health commands when this build has them."""
    app.message("")
    app.message("[bold]Tour[/bold]")
    if _has_command("report", "pipeline"):
        app.message("The open pipeline by stage ([cyan]crmctl report pipeline[/cyan]):")
        if _invoke(app, "report", "pipeline") != 0:
            app.message("[dim](the pipeline report is not available here)[/dim]")
    if _has_command("health", "score"):
        app.message("Account health, scored now ([cyan]crmctl health score[/cyan]):")
        if _invoke(app, "health", "score") != 0:
            app.message("[dim](health scoring is not available here)[/dim]")
    db_option = f"--db {describe_url(app.settings.database_url)}"
    hints = [
        f"crmctl {db_option} report pipeline --by owner",
        f"crmctl {db_option} health score && crmctl {db_option} health changes --to red",
        f"crmctl {db_option} export snapshot --out demo-export",
        f"crmctl {db_option} erasure request --contact 1 --requestor dpo --reason 'Art. 17 request'",
        f"crmctl {db_option} import deals demo-data/deals.csv --source demo --dry-run",
    ]
    app.message("Try next:")
    for hint in hints:
        app.message(f"  $ {' '.join(hint.split())}")
