"""crmctl export (issue 7)."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Consistent-snapshot exports of a tenant, and one person's data.", no_args_is_help=True
)
