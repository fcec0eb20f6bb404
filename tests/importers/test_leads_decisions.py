"""Lead import merge decisions, written compactly: the records' values stay in their source records,
the contacts' values and the undo snapshot leave null members out; `merges show` and undo read
them back, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crmctl.db.engine import Database
from crmctl.identity.history import merge_decision, source_links
from crmctl.identity.undo import undo_run
from crmctl.importers.leads import LeadImportOptions, import_leads, without_nulls

FIELDS = ("first_name", "last_name", "full_name", "email", "phone", "title", "company", "country")


def _import(db: Database, path: Path, source: str, **options: object) -> list[int]:
    result = import_leads(
        db, LeadImportOptions(paths=[path], source=source, id_column="id", default_region="US", **options)
    )
    return result.run_ids


def _contact(db: Database, contact_id: int) -> dict[str, object]:
    with db.session() as session:
        row = session.connection().exec_driver_sql(
            f"SELECT {', '.join(FIELDS)} FROM contact WHERE id = {int(contact_id)}"
        )
        return dict(zip(FIELDS, row.one(), strict=True))


def _links(db: Database) -> dict[tuple[str, str], int]:
    with db.session() as session:
        return {(s, r): c for s, r, c in source_links(session).iter_rows()}


def _decisions(db: Database) -> list[dict[str, object]]:
    with db.session() as session:
        ids = [
            r[0] for r in session.connection().exec_driver_sql("SELECT id FROM merge_decision ORDER BY id")
        ]
        return [merge_decision(session, i) for i in ids]


def test_show_gives_every_candidate_s_values(db: Database, tmp_path: Path) -> None:
    web = tmp_path / "web.csv"
    web.write_text("id,Email,First Name\nW1,Kofi.Mensah@acme.com,Kofi\n", encoding="utf-8")
    dialler = tmp_path / "dialler.csv"
    dialler.write_text(
        "id,Full Name,Phone,E-mail\nD1,Kofi Mensah,(212) 555-0144,kofi.mensah@acme.com\n"
        "D2,Kofi Mensah,212 555 0144,\n",
        encoding="utf-8",
    )
    _import(db, web, "web")
    _import(db, dialler, "dialler")
    [decision] = _decisions(db)
    records = [c for c in decision["candidates"] if c["type"] == "record"]
    contacts = [c for c in decision["candidates"] if c["type"] == "contact"]
    assert len(decision["source_record_ids"]) == 2
    assert {c["source_record_id"] for c in records} == set(decision["source_record_ids"])
    by_id = {c["source_id"]: c for c in records}
    assert by_id["D1"] == {
        "type": "record",
        "source_record_id": by_id["D1"]["source_record_id"],
        "source_id": "D1",
        "email": "kofi.mensah@acme.com",
        "phone": "(212) 555-0144",
        "first_name": "Kofi",  # the full name split as matching split it
        "last_name": "Mensah",
        "company": None,
    }
    assert by_id["D2"]["email"] is None and by_id["D2"]["phone"] == "212 555 0144"
    assert contacts == [
        {
            "type": "contact",
            "contact_id": _links(db)[("web", "W1")],
            "email": "Kofi.Mensah@acme.com",
            "phone": None,
            "first_name": "Kofi",
            "last_name": None,
            "company": None,
        }
    ]
    # the snapshot for undo: the contact's fields before the fill, its null ones left out
    assert decision["before"]["email"] == "Kofi.Mensah@acme.com" and "phone" not in decision["before"]


def test_undo_restores_a_contact_filled_by_several_batches(db: Database, tmp_path: Path) -> None:
    web = tmp_path / "web.csv"
    web.write_text("id,Email,First Name\nW1,ann.lee@acme.com,Ann\nW2,bo.chan@acme.com,Bo\n", encoding="utf-8")
    _import(db, web, "web")
    contact = _links(db)[("web", "W1")]
    held = _contact(db, contact)
    # one row a batch: the first fills the phone, the third the title
    dialler = tmp_path / "dialler.csv"
    dialler.write_text(
        "id,Phone,E-mail,Job Title\nD1,(212) 555-0199,ann.lee@acme.com,\nD2,,bo.chan@acme.com,\n"
        "D3,,ann.lee@acme.com,CTO\n",
        encoding="utf-8",
    )
    [run] = _import(db, dialler, "dialler", batch_rows=1)
    filled = _contact(db, contact)
    assert filled["phone"] == "(212) 555-0199" and filled["title"] == "CTO"
    unchanged = [d for d in _decisions(db) if d["winner_contact_id"] == _links(db)[("web", "W2")]]
    assert [d["before"] for d in unchanged] == [None]  # nothing was filled: nothing to restore
    with db.session(write=True) as session:
        undo_run(session, run, actor="test")
    assert _contact(db, contact) == held


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.text("abcdefgh_", min_size=1, max_size=5),
        st.none()
        | st.text(max_size=12)
        | st.integers()
        | st.lists(st.none() | st.text(max_size=5), max_size=2),
        max_size=4,
    )
)
def test_without_nulls_drops_only_null_members(member: dict[str, object]) -> None:
    objects = [member, {"type": "contact", **member}]
    encoded = [json.dumps(o, separators=(",", ":"), ensure_ascii=False) for o in objects]
    out = pl.DataFrame({"j": encoded}, schema={"j": pl.String}).select(without_nulls(pl.col("j")))["j"]
    assert [json.loads(j) for j in out] == [{k: v for k, v in o.items() if v is not None} for o in objects]
    as_list = pl.DataFrame({"j": ["[" + ",".join(encoded) + "]"]}).select(without_nulls(pl.col("j")))["j"][0]
    assert json.loads(as_list) == [{k: v for k, v in o.items() if v is not None} for o in objects]
