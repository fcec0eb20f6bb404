"""Contact-to-contact merges (resolve, review accept) fill the survivor's empty fields from the
merged contact, and merges undo puts back what they filled (both backends)."""

from __future__ import annotations

import json
from pathlib import Path

from crmctl.db.engine import make_engine

CONTACTS = "external_id,email,first_name,last_name,phone\n"


def _phones(database_url: str) -> dict[int, tuple[str | None, int | None]]:
    engine = make_engine(database_url)
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT id, phone_e164, merged_into_id FROM contact ORDER BY id").all()
    engine.dispose()
    return {r[0]: (r[1], r[2]) for r in rows}


def _set_phone(database_url: str, contact_id: int, phone: str) -> None:
    engine = make_engine(database_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE contact SET phone_e164 = '{phone}' WHERE id = {contact_id}")
    engine.dispose()


def _resolved_pair(cli, tmp_path: Path) -> int:
    crm = tmp_path / "crm.csv"
    crm.write_text(
        CONTACTS + "x1,kim.park@gmail.com,Kim,Park,\ny1,kimpark@gmail.com,Kim,Park,+1 212 555 0199\n"
    )
    cli("import", "contacts", str(crm), "--source", "crm")
    assert json.loads(cli("resolve", "--format", "json").stdout)["merged"] == 1
    (decision,) = json.loads(cli("merges", "list", "--format", "json").stdout)
    return int(decision["id"])


def test_resolve_fills_the_survivor_and_undo_puts_it_back(cli, database_url: str, tmp_path: Path) -> None:
    decision = _resolved_pair(cli, tmp_path)
    assert _phones(database_url) == {1: ("+12125550199", None), 2: ("+12125550199", 1)}
    out = json.loads(cli("merges", "undo", str(decision), "--yes", "--format", "json").stdout)
    assert out["fields_restored"] == ["phone", "phone_e164"]
    assert _phones(database_url) == {1: (None, None), 2: ("+12125550199", None)}


def test_undo_leaves_a_value_changed_since(cli, database_url: str, tmp_path: Path) -> None:
    decision = _resolved_pair(cli, tmp_path)
    _set_phone(database_url, 1, "+12125550100")  # a person corrected it after the merge
    cli("merges", "undo", str(decision), "--yes")
    assert _phones(database_url)[1] == ("+12125550100", None)


def test_review_accept_fills_the_survivor(cli, database_url: str, tmp_path: Path) -> None:
    leads = tmp_path / "leads.csv"
    leads.write_text(
        "id,email,first_name,last_name,phone\n"
        "A1,kx@acme.io,Alice,Wong,\n"
        "B1,kx@acme.io,Bob,Park,+1 212 555 0177\n"
    )
    cli("import", "leads", str(leads), "--source", "s", "--id-column", "id")
    (item,) = json.loads(cli("review", "list", "--format", "json").stdout)
    cli("review", "accept", str(item["id"]))
    assert _phones(database_url)[1] == ("+12125550177", None)
