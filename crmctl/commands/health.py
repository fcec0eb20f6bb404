"""crmctl health (issue 6)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Account health scores: score, show, changes, history.", no_args_is_help=True)
