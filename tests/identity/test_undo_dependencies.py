"""Undo that respects what came after it: import runs, contact merges and review decisions, through
the CLI, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from crmctl.db.engine import make_engine


def _write(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text(body, encoding="utf-8")
    return path


def _sql(database_url: str, sql: str) -> list[dict[str, Any]]:
    """Rows read (or written) directly, as the database's owner: to look at state no command prints
    and to stand in for another tool or a person editing a contact."""
    engine = make_engine(database_url)
    with engine.begin() as conn:
        result = conn.exec_driver_sql(sql)
        rows = [dict(r._mapping) for r in result] if result.returns_rows else []
    engine.dispose()
    return rows


def _merged_into(database_url: str) -> dict[int, int | None]:
    return {
        r["id"]: r["merged_into_id"] for r in _sql(database_url, "SELECT id, merged_into_id FROM contact")
    }


def _json(cli, *args: str) -> Any:
    return json.loads(cli(*args, "--format", "json").stdout)


def _import_leads(cli, path: Path, source: str) -> None:
    cli("import", "leads", str(path), "--source", source, "--id-column", "id")


FIELDS = "phone, company, title, country, phone_e164, company_norm, first_name, last_name"


def test_imports_undo_restores_only_what_the_run_filled(cli, database_url: str, tmp_path: Path) -> None:
    _import_leads(
        cli, _write(tmp_path, "g1.csv", "id,email,first_name,last_name\n1,kx@acme.io,Kim,Park\n"), "s1"
    )
    _import_leads(cli, _write(tmp_path, "g2.csv", "id,email,phone\n1,kx@acme.io,+1 212 555 0177\n"), "s2")
    _import_leads(
        cli,
        _write(
            tmp_path,
            "g3.csv",
            "id,email,first_name,last_name,company,title,country\n1,kx@acme.io,Kim,Park,Acme,CTO,US\n",
        ),
        "s3",
    )
    [filled] = _sql(database_url, f"SELECT {FIELDS} FROM contact")
    assert filled["phone"] and filled["company"] == "Acme"
    # run 2 filled the phone only: run 3's company, title and country stay
    assert _json(cli, "imports", "undo", "2", "--yes")["contacts_restored"] == 1
    [after_2] = _sql(database_url, f"SELECT {FIELDS} FROM contact")
    assert after_2 == {**filled, "phone": None, "phone_e164": None}
    # and undoing run 3 does not bring run 2's phone back
    cli("imports", "undo", "3", "--yes")
    [after_3] = _sql(database_url, f"SELECT {FIELDS} FROM contact")
    assert after_3 == {f: None for f in after_3} | {"first_name": "Kim", "last_name": "Park"}
    cli("db", "check")


def test_imports_undo_leaves_a_field_changed_since(cli, database_url: str, tmp_path: Path) -> None:
    _import_leads(
        cli, _write(tmp_path, "g1.csv", "id,email,first_name,last_name\n1,kx@acme.io,Kim,Park\n"), "s1"
    )
    _import_leads(cli, _write(tmp_path, "g2.csv", "id,email,title,country\n1,kx@acme.io,CTO,US\n"), "s2")
    _sql(database_url, "UPDATE contact SET title = 'CEO'")  # a person corrected it after run 2
    cli("imports", "undo", "2", "--yes")
    [contact] = _sql(database_url, "SELECT title, country FROM contact")
    assert contact == {"title": "CEO", "country": None}


CONTACTS = "external_id,email,first_name,last_name,phone\n"


def _chained_merges(cli, tmp_path: Path) -> None:
    """Decision 1: contact 2 into 1 (email); decision 2: contact 3 into 1, only through contact 2's
    phone."""
    first = CONTACTS + "x1,kim.park@gmail.com,Kim,Park,\ny1,kimpark@gmail.com,Kim,Park,+1 212 555 0199\n"
    cli("import", "contacts", str(_write(tmp_path, "c1.csv", first)), "--source", "crm")
    assert _json(cli, "resolve")["merged"] == 1
    cli(
        "import",
        "contacts",
        str(_write(tmp_path, "c2.csv", CONTACTS + "z1,,Kim,Park,+1 212 555 0199\n")),
        "--source",
        "crm",
    )
    assert _json(cli, "resolve")["merged"] == 1


def test_merges_undo_refuses_while_a_later_merge_depends_on_it(
    cli, database_url: str, tmp_path: Path
) -> None:
    _chained_merges(cli, tmp_path)
    assert _merged_into(database_url) == {1: None, 2: 1, 3: 1}
    refused = cli("merges", "undo", "1", "--yes", expect=2)
    assert "later merge decision(s) 2" in refused.stderr and "undo them first" in refused.stderr.lower()
    assert _merged_into(database_url) == {1: None, 2: 1, 3: 1}  # nothing changed
    # newest first, both come back apart
    assert _json(cli, "merges", "undo", "2", "--yes")["undone"] is True
    assert _json(cli, "merges", "undo", "1", "--yes")["undone"] is True
    assert _merged_into(database_url) == {1: None, 2: None, 3: None}
    cli("db", "check")


def test_merges_undo_refuses_when_the_loser_was_moved(cli, database_url: str, tmp_path: Path) -> None:
    _chained_merges(cli, tmp_path)
    cli("merges", "undo", "2", "--yes")
    _sql(database_url, "UPDATE contact SET merged_into_id = 3 WHERE id = 2")  # another tool moved it
    refused = cli("merges", "undo", "1", "--yes", expect=2)
    assert "contact 2 is no longer merged into contact 1 (it is merged into contact 3)" in refused.stderr
    assert [d["undone"] for d in _json(cli, "merges", "list")] == [True, False]


def test_resolve_does_not_merge_again_what_merges_undo_separated(
    cli, database_url: str, tmp_path: Path
) -> None:
    _chained_merges(cli, tmp_path)
    cli("merges", "undo", "2", "--yes")
    cli("merges", "undo", "1", "--yes")
    again = _json(cli, "resolve")
    # 2 and 3 share a phone and were never separated; 1 stays apart from both
    assert again["merged"] == 1 and again["sent_to_review"] == 0
    assert _merged_into(database_url) == {1: None, 2: None, 3: 2}
    assert _json(cli, "resolve")["merged"] == 0
    kept_apart = {
        (r["left_contact_id"], r["right_contact_id"])
        for r in _json(cli, "review", "list", "--status", "rejected")
    }
    assert kept_apart == {(1, 2), (1, 3)}


TRIO = (
    "id,email,first_name,last_name,phone\n1,t1@gmail.com,Tom,Hill,+1 212 555 0144\n"
    "2,t2@yahoo.com,Tom,Hill,+1 212 555 0144\n3,t3@aol.com,Tom,Hill,+1 212 555 0144\n"
)


def test_review_accept_merges_surviving_contacts_and_never_moves_a_merged_one(
    cli, database_url: str, tmp_path: Path
) -> None:
    _import_leads(cli, _write(tmp_path, "tri.csv", TRIO), "s")
    items = {(r["left_contact_id"], r["right_contact_id"]): r["id"] for r in _json(cli, "review", "list")}
    assert set(items) == {(1, 2), (1, 3), (2, 3)}
    cli("review", "accept", str(items[(1, 3)]))
    # 2 joins 3's surviving contact, 1; 3 stays where it is
    accepted = _json(cli, "review", "accept", str(items[(2, 3)]))
    assert _merged_into(database_url) == {1: None, 2: 1, 3: 1}
    assert accepted["merged"] is True and accepted["contact_id"] == 1
    # already one contact: accepted, nothing merged
    same = _json(cli, "review", "accept", str(items[(1, 2)]))
    assert (same["status"], same["merged"], same["merge_decision_id"]) == ("accepted", False, None)
    assert [d["undone"] for d in _json(cli, "merges", "list")] == [False, False]
    assert _merged_into(database_url) == {1: None, 2: 1, 3: 1}


AWAY = "id,email,first_name,last_name\nA1,kx@acme.io,Alice,Wong\n"
BACK = "id,email,first_name,last_name\nB1,kx@acme.io,Bob,Park\n"
# email alone never scores high enough: the pair is left for `resolve` to find
NO_EMAIL = "[rules.email]\nexact = 0.1\ncompatible = 0.1\nconflict = 0.1\n"


def _alice_then_bob(cli, tmp_path: Path) -> None:
    """Two runs whose contacts share an address; the second leaves the pair for `resolve`."""
    _import_leads(cli, _write(tmp_path, "x1.csv", AWAY), "a")
    strict = _write(tmp_path, "strict.toml", NO_EMAIL)
    back = _write(tmp_path, "x2.csv", BACK)
    cli("import", "leads", str(back), "--source", "b", "--id-column", "id", "--config", str(strict))


def test_imports_undo_after_resolve_and_review(cli, database_url: str, tmp_path: Path) -> None:
    _alice_then_bob(cli, tmp_path)
    assert _json(cli, "resolve")["sent_to_review"] == 1
    [item] = _json(cli, "review", "list")
    cli("review", "accept", str(item["id"]))
    # the accepted merge stands on the contact run 2 created: named, nothing changed
    refused = cli("imports", "undo", "2", "--yes", expect=2)
    assert "merge decision(s) 1" in refused.stderr and "crmctl merges undo" in refused.stderr
    assert "IntegrityError" not in refused.stderr
    cli("merges", "undo", "1", "--yes")
    # now clean: resolve's review item (decided, then kept apart by the undo) goes with the contact
    out = _json(cli, "imports", "undo", "2", "--yes")
    assert (out["contacts_removed"], out["review_items_removed"]) == (1, 1)
    assert _merged_into(database_url) == {1: None}
    cli("db", "check")


def test_imports_undo_removes_an_open_question_from_resolve(cli, database_url: str, tmp_path: Path) -> None:
    _alice_then_bob(cli, tmp_path)
    assert _json(cli, "resolve")["sent_to_review"] == 1
    out = _json(cli, "imports", "undo", "2", "--yes")
    assert (out["contacts_removed"], out["review_items_removed"]) == (1, 1)
    assert _json(cli, "review", "list", "--status", "all") == []
    cli("db", "check")
