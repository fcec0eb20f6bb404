"""crmctl export: consistent-snapshot exports of a tenant, verification, one person's data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from crmctl.commands.common import FormatOption, app_context, example
from crmctl.errors import VerificationFailed
from crmctl.exporters.contact import export_contact, write_bundle
from crmctl.exporters.manifest import verify_export
from crmctl.exporters.sinks import Compression, FileFormat, WrittenFile
from crmctl.exporters.snapshot import SnapshotOptions, export_snapshot
from crmctl.output import OutputFormat, dumps

app = typer.Typer(
    help="Consistent-snapshot exports of a tenant, and one person's data.", no_args_is_help=True
)

OutOption = Annotated[
    Path,
    typer.Option("--out", "-o", help="Folder to create (written beside it first, renamed when complete)."),
]
ForceOption = Annotated[
    bool,
    typer.Option("--force", help="Replace the folder if it exists (only once the new export is complete)."),
]


@app.command(
    epilog=example(
        "crmctl export snapshot --out exports/2026-06-30",
        "crmctl export snapshot --out out --format csv --tables contact,deal --compress gzip",
        "crmctl --db postgresql://app@db/crm export snapshot --out out --jobs 4 --summary json",
    )
)
def snapshot(
    ctx: typer.Context,
    out: OutOption,
    fmt: Annotated[
        FileFormat, typer.Option("--format", help="File format of the export.", case_sensitive=False)
    ] = FileFormat.parquet,
    tables: Annotated[
        str | None, typer.Option("--tables", help="Comma-separated table names (default: every table).")
    ] = None,
    jobs: Annotated[
        int,
        typer.Option("--jobs", "-j", help="Parallel connections sharing the snapshot (PostgreSQL only)."),
    ] = 1,
    compress: Annotated[
        Compression | None,
        typer.Option(
            "--compress",
            help="zstd, gzip or none (default: zstd for parquet, none for csv and jsonl).",
            case_sensitive=False,
        ),
    ] = None,
    neutralise: Annotated[
        bool,
        typer.Option(
            "--neutralise-formulas/--no-neutralise-formulas",
            help="CSV: prefix ' to text cells starting with = + - @ tab or CR (spreadsheet formulas).",
        ),
    ] = True,
    force: ForceOption = False,
    summary: Annotated[
        OutputFormat,
        typer.Option(
            "--summary", help="How to print the summary: table, json, csv, ndjson.", case_sensitive=False
        ),
    ] = OutputFormat.table,
) -> None:
    """Export every table of the tenant as of one instant, with a manifest (rows, bytes, sha256).

    Progress goes to stderr, one line per table; the summary to stdout.
    """
    app_ctx = app_context(ctx)
    options = SnapshotOptions(
        fmt=fmt,
        compression=compress,
        tables=tables.split(",") if tables else None,
        jobs=jobs,
        neutralise_formulas=neutralise,
        force=force,
    )
    db = app_ctx.database()
    if jobs > 1 and not db.is_postgresql:
        app_ctx.warn("--jobs is ignored on SQLite: one connection holds the snapshot.")

    def progress(entry: WrittenFile) -> None:
        app_ctx.message(f"{entry.table}: {entry.rows:,} rows, {entry.bytes:,} bytes")

    audit_options = {
        "out": str(out),
        "format": fmt.value,
        "tables": options.tables,
        "jobs": jobs,
        "compress": options.effective_compression.value,
        "neutralise_formulas": neutralise,
        "force": force,
    }
    with app_ctx.job(db, "export snapshot", audit_options) as record:
        manifest = export_snapshot(db, out, options, on_file=progress)
        record.counts = {"files": len(manifest.files), "rows": manifest.total_rows}
    # people get a recognisable prefix of the digest; scripts get all of it
    digest_chars = 12 if summary is OutputFormat.table else None
    app_ctx.render_rows(
        [
            {
                "table": f.table,
                "file": f.path,
                "rows": f.rows,
                "bytes": f.bytes,
                "sha256": f.sha256[:digest_chars],
            }
            for f in manifest.files
        ],
        summary,
        title=f"Snapshot of tenant {manifest.tenant} at {manifest.snapshot_at}",
        meta={
            "out": str(out),
            "snapshot_at": manifest.snapshot_at,
            "snapshot_id": manifest.snapshot_id,
            "total_rows": manifest.total_rows,
        },
    )


@app.command(
    epilog=example("crmctl export verify exports/2026-06-30", "crmctl export verify out --format json")
)
def verify(
    ctx: typer.Context,
    folder: Annotated[Path, typer.Argument(help="An export folder (with its manifest.json).")],
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Re-read every file of an export against its manifest; exit 1 on any difference."""
    app_ctx = app_context(ctx)
    manifest, checks = verify_export(folder)
    app_ctx.render_rows(
        [
            {
                "file": c.path,
                "table": c.table,
                "rows_expected": c.rows_expected,
                "rows_found": c.rows_found,
                "status": "ok" if c.ok else c.problem,
            }
            for c in checks
        ],
        fmt,
        title=f"Export of tenant {manifest.tenant} at {manifest.snapshot_at}",
    )
    bad = [c for c in checks if not c.ok]
    if bad:
        raise VerificationFailed(f"{len(bad)} of {len(checks)} file(s) differ from the manifest.")
    app_ctx.message(f"All {len(checks)} files match the manifest.")


@app.command(
    epilog=example(
        "crmctl export contact 4711 > contact-4711.json",
        "crmctl export contact --email ada@example.com --out access-request-0042",
    )
)
def contact(
    ctx: typer.Context,
    contact_id: Annotated[int | None, typer.Argument(help="The contact's id.", show_default=False)] = None,
    email: Annotated[
        str | None, typer.Option("--email", help="Find the contact by email (normalised match).")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write a folder (one JSON file per section + manifest) instead."),
    ] = None,
    force: ForceOption = False,
) -> None:
    """One person's data for an access request: the contact, its source records, interactions,
    tickets, deals, health signals, merges and more, as one JSON document on stdout."""
    app_ctx = app_context(ctx)
    db = app_ctx.database()
    options = {"contact_id": contact_id, "email": email, "out": str(out) if out else None}
    with app_ctx.job(db, "export contact", options) as record:
        bundle = export_contact(db, contact_id=contact_id, email=email)
        record.counts = {"contact_id": bundle.contact_id, **bundle.counts}
        if out is not None:
            manifest = write_bundle(db, bundle, out, force=force)
    if out is None:
        typer.echo(dumps(bundle.document()))
        return
    app_ctx.message(
        f"Wrote contact {bundle.contact_id}: {len(manifest.files)} files, {manifest.total_rows:,} records."
    )
