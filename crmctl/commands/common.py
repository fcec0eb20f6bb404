"""What every command shares: the application context, consoles, confirmation, option types.

A command reads ``AppContext`` from ``ctx.obj`` (``app_context(ctx)``), opens the database with
``app.database()``, calls one library function and renders the result with ``app.render_rows``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from crmctl.config import Settings, load_settings
from crmctl.db import audit, locks, migrate
from crmctl.db.engine import Database, open_database
from crmctl.errors import Aborted
from crmctl.output import OutputFormat, render_mapping, render_rows

FormatOption = Annotated[
    OutputFormat,
    typer.Option(
        "--format", "-f", help="table for people; json, csv or ndjson for scripts.", case_sensitive=False
    ),
]
DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Do everything except write; report what would change.")
]
YesOption = Annotated[
    bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (needed without a terminal).")
]


def example(*lines: str) -> str:
    """An epilog with usage examples, shown at the end of ``--help``."""
    body = "\n\n".join(f"  $ {line}" for line in lines)
    return f"[bold]Examples[/bold]\n\n{body}"


@dataclass
class AppContext:
    database_url: str | None = None
    tenant: str | None = None
    actor: str | None = None
    quiet: bool = False
    verbose: bool = False
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    out: Console = field(default_factory=lambda: Console(highlight=False))
    err: Console = field(default_factory=lambda: Console(stderr=True, highlight=False, soft_wrap=True))
    _settings: Settings | None = None
    _databases: list[Database] = field(default_factory=list)

    # -- configuration ---------------------------------------------------------------------
    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(
                database_url=self.database_url, tenant=self.tenant, actor=self.actor, environ=self.environ
            )
        return self._settings

    def database(self, *, ready: bool = True) -> Database:
        """Open the configured database for the configured tenant; migrate a new SQLite file."""
        s = self.settings
        db = open_database(s.database_url, s.tenant, app_role=s.app_role or None)
        self._databases.append(db)
        if ready:
            migrate.ensure_ready(db, app_role=s.app_role or None)
        return db

    def close(self) -> None:
        for db in self._databases:
            db.dispose()
        self._databases.clear()

    # -- jobs ------------------------------------------------------------------------------
    @contextmanager
    def job(
        self,
        db: Database,
        command: str,
        options: Mapping[str, Any],
        *,
        dry_run: bool = False,
        lock: str | None = None,
        lock_wait_seconds: float | None = 0,
    ) -> Iterator[audit.AuditRecord]:
        """Audit a writing command and, when ``lock`` is given, hold that job lock around it."""
        actor = self.settings.actor
        if lock:
            with (
                locks.job_lock(db, lock, actor=actor, wait_seconds=lock_wait_seconds),
                audit.audited(db, actor=actor, command=command, options=options, dry_run=dry_run) as record,
            ):
                yield record
        else:
            with audit.audited(db, actor=actor, command=command, options=options, dry_run=dry_run) as record:
                yield record

    # -- output ----------------------------------------------------------------------------
    def message(self, text: str) -> None:
        """A human message on stderr (suppressed by --quiet)."""
        if not self.quiet:
            self.err.print(text)

    def warn(self, text: str) -> None:
        self.err.print(f"[yellow]warning:[/yellow] {text}")

    @property
    def interactive(self) -> bool:
        return self.err.is_terminal and not self.quiet

    def progress(self, *, transient: bool = True) -> Progress:
        """A progress display on stderr; disabled (invisible) unless stderr is a terminal."""
        return Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.err,
            transient=transient,
            disable=not self.interactive,
        )

    def render_rows(
        self,
        rows: Any,
        fmt: OutputFormat,
        *,
        title: str | None = None,
        columns: Sequence[str] | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        render_rows(rows, fmt, console=self.out, out=sys.stdout, title=title, columns=columns, meta=meta)

    def render_mapping(
        self, mapping: Mapping[str, Any], fmt: OutputFormat, *, title: str | None = None
    ) -> None:
        render_mapping(mapping, fmt, console=self.out, out=sys.stdout, title=title)

    def confirm(self, question: str, *, yes: bool) -> None:
        """Ask before a destructive step; refuse without a terminal unless --yes was given."""
        if yes:
            return
        if not sys.stdin.isatty():
            raise Aborted(f"{question} Refusing without confirmation: re-run with --yes.")
        if not typer.confirm(question, default=False, err=True):
            raise Aborted("Cancelled; nothing was changed.")


def app_context(ctx: typer.Context) -> AppContext:
    obj = ctx.find_object(AppContext)
    if obj is None:  # a command invoked without the root callback (tests of a sub-app)
        obj = AppContext()
        ctx.obj = obj
    return obj
