"""crmctl report and crmctl pipeline (issue 5)."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Pipeline reports: pipeline, funnel, velocity, forecast, stalled, changes.", no_args_is_help=True
)
pipeline_app = typer.Typer(help="Pipelines and their stages: show, set.", no_args_is_help=True)
