"""Column presets for the standard CSV exports of other CRMs.

A preset file (``<name>.toml``) has one table per exported object, e.g. ``[Opportunity]``, with the
crmctl import kind it feeds and, per field, the headers that object's export uses (several when the
CRM's export wording varies between report and data exports). Headers match case-, space- and
punctuation-insensitively (``reader.header_key``). When a kind has several objects (Salesforce
Contact and Lead both import as contacts), the object whose headers the file matches best is used.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

from crmctl.errors import InputError, UsageError
from crmctl.importers.reader import header_key

PRESETS = ("hubspot", "salesforce", "pipedrive")


@cache
def load_preset(name: str) -> dict[str, dict[str, Any]]:
    """The preset's objects: object name -> {"kind": ..., field: [headers...]}."""
    if name not in PRESETS:
        raise UsageError(f"Unknown preset '{name}'.", hint=f"Use one of: {', '.join(PRESETS)}.")
    text = resources.files(__package__).joinpath(f"{name}.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


def preset_objects(name: str, kind: str) -> dict[str, dict[str, list[str]]]:
    """The objects of preset ``name`` that import as ``kind``: object -> field -> headers."""
    objects = {}
    for obj, table in load_preset(name).items():
        if table.get("kind") == kind:
            objects[obj] = {
                f: list(h) if isinstance(h, list) else [h] for f, h in table.items() if f != "kind"
            }
    return objects


def preset_aliases(name: str, kind: str, headers: Sequence[str]) -> tuple[str, dict[str, list[str]]]:
    """(object name, field -> headers) of the preset object that best matches the file's headers."""
    objects = preset_objects(name, kind)
    if not objects:
        kinds = sorted({t.get("kind", "") for t in load_preset(name).values()})
        raise InputError(
            f"The {name} preset has no export that imports as {kind}.",
            hint=f"It covers: {', '.join(kinds)}. Use --mapping FILE for other files.",
        )
    have = {header_key(h) for h in headers}

    def score(fields: dict[str, list[str]]) -> int:
        return sum(1 for names in fields.values() if any(header_key(n) in have for n in names))

    best = max(objects, key=lambda obj: score(objects[obj]))
    return best, objects[best]
