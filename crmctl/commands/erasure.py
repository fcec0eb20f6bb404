"""crmctl erasure and crmctl retention (issue 8)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from crmctl.commands.common import AppContext, DryRunOption, FormatOption, YesOption, app_context, example
from crmctl.erasure.replay import completed_in_database, read_log, replay_erasures
from crmctl.erasure.report import SUMMARY_COLUMNS, erasure_report
from crmctl.erasure.requests import create_request
from crmctl.erasure.retention import apply_retention
from crmctl.erasure.run import BATCH_SIZE, ErasureOptions, preview_erasures, run_erasures
from crmctl.errors import VerificationFailed
from crmctl.output import OutputFormat

app = typer.Typer(help="GDPR erasure: request, run, status, report, replay.", no_args_is_help=True)
retention_app = typer.Typer(help="Apply each contact's retention policy.", no_args_is_help=True)


def _options(app_ctx: AppContext) -> ErasureOptions:
    s = app_ctx.settings
    return ErasureOptions(
        erasure_key=s.erasure_key,
        backup_retention_days=s.backup_retention_days,
        default_region=s.default_region,
    )


@app.command(
    epilog=example(
        "crmctl erasure request --email jo@example.com --requestor dpo@acme.test --reason 'Art. 17 request'",
        "crmctl erasure request --contact 4711 --requestor support --reason 'ticket 991'",
    )
)
def request(
    ctx: typer.Context,
    contact: Annotated[int | None, typer.Option("--contact", help="Contact id to erase.")] = None,
    email: Annotated[str | None, typer.Option("--email", help="Email address of the person.")] = None,
    phone: Annotated[str | None, typer.Option("--phone", help="Phone number of the person.")] = None,
    requestor: Annotated[str, typer.Option("--requestor", help="Who asked (for the record).")] = ...,
    reason: Annotated[str, typer.Option("--reason", help="Why (for the record).")] = ...,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Record an erasure request (only keyed hashes of the email / phone are kept)."""
    app_ctx = app_context(ctx)
    s = app_ctx.settings
    db = app_ctx.database()
    options = {"contact": contact, "email": email, "phone": phone, "requestor": requestor, "reason": reason}
    with app_ctx.job(db, "erasure request", options) as record, db.session(write=True) as session:
        created = create_request(
            session,
            key=s.erasure_key,
            requestor=requestor,
            reason=reason,
            contact_id=contact,
            email=email,
            phone=phone,
            default_region=s.default_region,
        )
        record.counts = {"request_id": created.request_id, "matched_contacts": created.matched_contacts}
    if created.matched_contacts:
        app_ctx.message(
            f"Erasure request {created.request_id} recorded; "
            f"it matches {created.matched_contacts} contact(s)."
        )
    else:
        app_ctx.message(
            f"Erasure request {created.request_id} recorded; it matches no contact. The next run will "
            "suppress the identity and verify that nothing holds it."
        )
    app_ctx.render_mapping(
        {
            "request_id": created.request_id,
            "status": created.status,
            "contact_id": created.contact_id,
            "matched_contacts": created.matched_contacts,
        },
        fmt,
        title="Erasure request",
    )


@app.command(
    epilog=example(
        "crmctl erasure run --dry-run", "crmctl erasure run --limit 500", "crmctl erasure run --retry-failed"
    )
)
def run(
    ctx: typer.Context,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Process at most N requests.")] = None,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Also retry requests whose verification failed.")
    ] = False,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Requests per batch (one verification pass each).")
    ] = BATCH_SIZE,
    dry_run: DryRunOption = False,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Process pending erasure requests (cron): erase, suppress, verify, keep the evidence."""
    app_ctx = app_context(ctx)
    db = app_ctx.database()
    options = {"limit": limit, "retry_failed": retry_failed, "batch_size": batch_size, "dry_run": dry_run}
    with app_ctx.job(db, "erasure run", options, dry_run=dry_run, lock="erasure-run") as record:
        if dry_run:
            preview = preview_erasures(db, _options(app_ctx), limit=limit)
            record.counts = {"requests": len({r["request_id"] for r in preview.preview})}
            app_ctx.render_rows(
                preview.preview,
                fmt,
                title="Erasure run (dry run): rows per request and table",
                columns=["request_id", "table", "action", "rows"],
            )
            return
        result = run_erasures(
            db, _options(app_ctx), limit=limit, retry_failed=retry_failed, batch_size=batch_size
        )
        record.counts = {status: result.count(status) for status in ("completed", "no_match", "failed")}
    app_ctx.render_rows(
        [
            {
                "request_id": o.request_id,
                "status": o.status,
                "contacts": o.contacts,
                "rows_changed": o.rows_changed,
                "remaining": ", ".join(f"{t} ({n})" for t, n in sorted(o.remaining.items())),
            }
            for o in result.outcomes
        ],
        fmt,
        title="Erasure run",
        columns=["request_id", "status", "contacts", "rows_changed", "remaining"],
    )
    app_ctx.message(
        f"{result.count('completed')} completed, {result.count('no_match')} matched no contact, "
        f"{result.count('failed')} failed verification."
    )
    failed = [o for o in result.outcomes if o.status == "failed"]
    if failed:
        ids = ", ".join(str(o.request_id) for o in failed[:20]) + (" …" if len(failed) > 20 else "")
        tables = sorted({t for o in failed for t in o.remaining})
        raise VerificationFailed(
            f"{len(failed)} erasure request(s) failed verification (ids {ids}): the person's data is still "
            f"in {', '.join(tables)}.",
            hint="See 'crmctl erasure status ID'; fix the cause, then 'crmctl erasure run --retry-failed'.",
        )


@app.command(epilog=example("crmctl erasure status", "crmctl erasure status 12 --format json"))
def status(
    ctx: typer.Context,
    request_id: Annotated[int | None, typer.Argument(help="One request, with its steps.")] = None,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Show erasure requests (or one request and its steps)."""
    app_ctx = app_context(ctx)
    db = app_ctx.database()
    with db.session() as session:
        rows = erasure_report(session, request_id)
    if request_id is None:
        app_ctx.render_rows(rows, fmt, title="Erasure requests", columns=SUMMARY_COLUMNS)
        return
    (item,) = rows
    if fmt is not OutputFormat.table:
        app_ctx.render_mapping(item, fmt)
        return
    app_ctx.render_mapping(
        {k: v for k, v in item.items() if k != "steps"}, fmt, title=f"Erasure request {request_id}"
    )
    app_ctx.render_rows(
        item["steps"], fmt, title="Steps", columns=["name", "started_at", "finished_at", "rows", "outcome"]
    )


@app.command(epilog=example("crmctl erasure report --format json > erasure-log.json"))
def report(ctx: typer.Context, fmt: FormatOption = OutputFormat.table) -> None:
    """The compliance report: every request, its steps, counts, verification, backup rotation date."""
    app_ctx = app_context(ctx)
    db = app_ctx.database()
    with db.session() as session:
        rows = erasure_report(session)
    if fmt is OutputFormat.table:
        app_ctx.render_rows(
            [
                {
                    **{k: r[k] for k in SUMMARY_COLUMNS},
                    "steps": " ".join(f"{s['name']}={s['rows']}" for s in r["steps"]),
                }
                for r in rows
            ],
            fmt,
            title="Erasure report",
        )
        return
    app_ctx.render_rows(rows, fmt, meta={"requests": len(rows)})


@app.command(
    epilog=example(
        "crmctl erasure replay --log erasure-log.json --dry-run",
        "crmctl erasure replay --log erasure-log.json --yes",
        "crmctl erasure replay --yes   # re-apply the completed requests recorded in this database",
    )
)
def replay(
    ctx: typer.Context,
    log: Annotated[
        Path | None,
        typer.Option("--log", help="A saved 'erasure report --format json' (kept outside the backups)."),
    ] = None,
    dry_run: DryRunOption = False,
    yes: YesOption = False,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Re-apply every completed erasure after restoring a backup taken before them."""
    app_ctx = app_context(ctx)
    db = app_ctx.database()
    items = read_log(log) if log is not None else completed_in_database(db)
    if not dry_run and items:
        app_ctx.confirm(f"Erase again the people of {len(items)} completed request(s)?", yes=yes)
    options = {"log": str(log) if log else None, "dry_run": dry_run}
    with app_ctx.job(db, "erasure replay", options, dry_run=dry_run, lock="erasure-run") as record:
        planned, result = replay_erasures(db, _options(app_ctx), items, dry_run=dry_run)
        record.counts = {"replayed": len(planned), "completed": result.count("completed")}
    status = {o.request_id: o.status for o in result.outcomes}
    rows = [{**p, "status": status.get(p.get("request_id"), "planned")} for p in planned]
    app_ctx.render_rows(
        rows, fmt, title="Erasure replay", columns=["replay_of", "request_id", "contacts", "status"]
    )
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        raise VerificationFailed(
            f"{len(failed)} replayed erasure(s) failed verification.",
            hint="See 'crmctl erasure status ID' for where data remains.",
        )


@retention_app.command(
    "run", epilog=example("crmctl retention run --dry-run", "crmctl retention run --format json")
)
def retention_run(
    ctx: typer.Context, dry_run: DryRunOption = False, fmt: FormatOption = OutputFormat.table
) -> None:
    """Apply retention policies: li-<N>m without interaction → pseudonymise; consent withdrawn →
    erasure request (processed by the next 'erasure run')."""
    app_ctx = app_context(ctx)
    db = app_ctx.database()
    with app_ctx.job(
        db, "retention run", {"dry_run": dry_run}, dry_run=dry_run, lock="retention-run"
    ) as record:
        result = apply_retention(db, key=app_ctx.settings.erasure_key, dry_run=dry_run)
        record.counts = {
            "pseudonymised": result.count("pseudonymise"),
            "erasure_requests": result.count("erasure request"),
        }
    for policy, n in sorted(result.unknown_policies.items()):
        app_ctx.warn(
            f"{n} contact(s) have the unknown retention policy '{policy}' (expected li-<N>m); skipped."
        )
    verb = "would be" if dry_run else "were"
    app_ctx.render_rows(
        result.actions,
        fmt,
        title="Retention run" + (" (dry run)" if dry_run else ""),
        columns=["contact_id", "policy", "action"],
    )
    app_ctx.message(
        f"{result.count('pseudonymise')} contact(s) {verb} pseudonymised; "
        f"{result.count('erasure request')} erasure request(s) {verb} recorded."
    )
