"""Lead import with identity resolution, and the commands that inspect and undo it (issue 3)."""

from __future__ import annotations

import typer

sources_app = typer.Typer(help="What each imported row resolved to.", no_args_is_help=True)
merges_app = typer.Typer(help="Merge decisions: list, show, undo.", no_args_is_help=True)
review_app = typer.Typer(help="Candidate pairs waiting for a person.", no_args_is_help=True)
runs_app = typer.Typer(help="Import runs: list, show, undo.", no_args_is_help=True)


def register_import_commands(import_app: typer.Typer) -> None:
    """Add `import leads` to the import group."""


def register_top_level_commands(app: typer.Typer) -> None:
    """Add `crmctl resolve`."""
