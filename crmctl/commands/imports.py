"""crmctl import: one group for every importer (leads with identity resolution, the graph)."""

from __future__ import annotations

import typer

from crmctl.commands import graph_import, lead_import

app = typer.Typer(
    help="Import files: leads (with identity resolution) and the customer graph.", no_args_is_help=True
)
lead_import.register_import_commands(app)
graph_import.register_import_commands(app)
