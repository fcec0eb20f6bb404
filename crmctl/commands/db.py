"""crmctl db: schema migrations, status, checks and the PostgreSQL application role."""

from __future__ import annotations

import typer

from crmctl.commands.common import FormatOption, app_context, example
from crmctl.db import migrate
from crmctl.db.engine import describe_url
from crmctl.errors import VerificationFailed
from crmctl.output import OutputFormat

app = typer.Typer(help="Create and migrate the database schema; check it.", no_args_is_help=True)


@app.command(epilog=example("crmctl db upgrade", "crmctl --db postgresql://app@db/crm db upgrade"))
def upgrade(ctx: typer.Context, revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Migrate the schema to the latest revision (creates a new database's tables)."""
    app_ctx = app_context(ctx)
    s = app_ctx.settings
    result = migrate.upgrade(s.database_url, revision=revision, app_role=s.app_role or None)
    app_ctx.message(f"Database {describe_url(s.database_url)} is at revision {result.current}.")


@app.command(epilog=example("crmctl db status", "crmctl db status --format json"))
def status(ctx: typer.Context, fmt: FormatOption = OutputFormat.table) -> None:
    """Show the schema revision of the database against the one crmctl needs."""
    app_ctx = app_context(ctx)
    s = app_ctx.settings
    result = migrate.status(s.database_url)
    app_ctx.render_mapping(
        {
            "database": describe_url(s.database_url),
            "backend": result.backend,
            "current": result.current,
            "head": result.head,
            "up_to_date": result.up_to_date,
        },
        fmt,
        title="Schema status",
    )


@app.command(epilog=example("crmctl db check"))
def check(ctx: typer.Context) -> None:
    """Fail unless the schema is at head and (PostgreSQL) every tenant table has its RLS policy."""
    app_ctx = app_context(ctx)
    problems = migrate.check(app_ctx.settings.database_url)
    if problems:
        for problem in problems:
            app_ctx.err.print(f"- {problem}")
        raise VerificationFailed(f"The database check found {len(problems)} problem(s).")
    app_ctx.message("Database check passed.")


@app.command(epilog=example("crmctl --db postgresql://owner@db/crm db roles"))
def roles(ctx: typer.Context) -> None:
    """(PostgreSQL) Create the application role crmctl switches to and grant it the tables."""
    app_ctx = app_context(ctx)
    s = app_ctx.settings
    migrate.grant_app_role(s.database_url, s.app_role or "crmctl_app")
    app_ctx.message(f"Role '{s.app_role}' is ready.")
