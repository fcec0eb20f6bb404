"""After ``imports undo`` no id of a removed row is given to a new one (both backends): decisions
and review items of the undone run keep naming rows that are gone, never a later run's rows."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path


def _links(cli) -> dict[tuple[str, str], int]:
    out = cli("sources", "list", "--format", "csv").stdout
    return {
        (r["source"], r["source_record_id"]): int(r["contact_id"]) for r in csv.DictReader(io.StringIO(out))
    }


def test_an_undone_runs_ids_are_not_given_again(cli, tmp_path: Path) -> None:
    first = tmp_path / "a.csv"
    first.write_text("id,email,first_name\nA1,a@x.com,Ann\nA2,b@x.com,Bo\n")
    second = tmp_path / "b.csv"
    second.write_text("id,email,first_name\nB1,c@x.com,Cy\nB2,a@x.com,Ann\n")
    cli("import", "leads", str(first), "--source", "a", "--id-column", "id")
    cli("import", "leads", str(second), "--source", "b", "--id-column", "id")
    created = _links(cli)[("b", "B1")]
    decisions = json.loads(cli("merges", "list", "--format", "json").stdout)
    runs = json.loads(cli("imports", "list", "--format", "json").stdout)
    cli("imports", "undo", str(runs[0]["id"]), "--yes")
    cli("import", "leads", str(second), "--source", "b", "--id-column", "id")
    assert _links(cli)[("b", "B1")] > created
    # the undone run's decisions stay listed, marked undone; the new ones have new ids
    before = {d["id"] for d in decisions}
    added = {d["id"] for d in json.loads(cli("merges", "list", "--format", "json").stdout)} - before
    assert added and min(added) > max(before)
