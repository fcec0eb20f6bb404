"""Pipelines and pipeline reports (issue 5)."""
