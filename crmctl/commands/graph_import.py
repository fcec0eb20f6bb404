"""Migration importers for the customer graph and CRM presets (issue 4)."""

from __future__ import annotations

import typer


def register_import_commands(import_app: typer.Typer) -> None:
    """Add `import accounts|contacts|deals|stage-changes|interactions|product-usage|contracts|tickets`."""


def register_top_level_commands(app: typer.Typer) -> None:
    """Add `crmctl demo`."""
