"""crmctl erasure and crmctl retention (issue 8)."""

from __future__ import annotations

import typer

app = typer.Typer(help="GDPR erasure: request, run, status, report, replay.", no_args_is_help=True)
retention_app = typer.Typer(help="Apply each contact's retention policy.", no_args_is_help=True)
