"""Edges in: reading files, mapping columns, rejects; the lead and graph importers."""
