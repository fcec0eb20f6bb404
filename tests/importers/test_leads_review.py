"""Review items from a lead import: every pair in the band is queued once, also against contacts
already in the database, and a person's decision stands for later imports (both backends)."""

from __future__ import annotations

import json
from pathlib import Path

HEADER = "id,email,first_name,last_name,phone,notes\n"
# long enough that a file of a few rows counts as several batches (pipelined: a writer runs one
# batch while the next is resolved)
PAD = "x" * 300


def _file(tmp_path: Path, name: str, *rows: str) -> Path:
    path = tmp_path / name
    path.write_text(HEADER + "".join(f"{row},{PAD}\n" for row in rows), encoding="utf-8")
    return path


def _import(cli, path: Path, source: str, *extra: str) -> dict:
    out = cli(
        "import", "leads", str(path), "--source", source, "--id-column", "id", "--format", "json", *extra
    )
    return json.loads(out.stdout)


def _items(cli, status: str = "all") -> list[dict]:
    return json.loads(cli("review", "list", "--status", status, "--format", "json").stdout)


def test_a_pair_against_an_existing_contact_is_queued(cli, tmp_path: Path) -> None:
    _import(cli, _file(tmp_path, "a.csv", "A1,kx@acme.io,Alice,Wong,"), "a")
    summary = _import(cli, _file(tmp_path, "b.csv", "B1,kx@acme.io,Bob,Park,"), "b")
    items = _items(cli)
    assert summary["sent_to_review"] == 1
    assert [(i["left_contact_id"], i["right_contact_id"], i["status"]) for i in items] == [(1, 2, "open")]
    # what the reviewer judges by: each contact as it stands
    assert (items[0]["left"], items[0]["right"]) == ("Alice Wong · kx@acme.io", "Bob Park · kx@acme.io")


def test_a_rejected_pair_is_not_asked_again(cli, tmp_path: Path) -> None:
    _import(cli, _file(tmp_path, "a.csv", "A1,kx@acme.io,Alice,Wong,"), "a")
    _import(cli, _file(tmp_path, "b.csv", "B1,kx@acme.io,Bob,Park,"), "b")
    (item,) = _items(cli)
    cli("review", "reject", str(item["id"]))
    # Bob again, under the shared address: he joins his own contact, and Alice stays apart
    summary = _import(cli, _file(tmp_path, "c.csv", "C1,kx@acme.io,Bob,Park,"), "c")
    assert summary["sent_to_review"] == 0
    assert [(i["id"], i["status"]) for i in _items(cli)] == [(item["id"], "rejected")]


def test_a_pair_is_queued_once_across_batches_in_flight(cli, tmp_path: Path) -> None:
    # the second batch raises the pair the first (still being written) queued, in either order
    tom = _file(
        tmp_path,
        "tom.csv",
        "T1,t1@gmail.com,Tom,Hill,+1 212 555 0144",
        "T2,t2@yahoo.com,Tom,Hill,+1 212 555 0144",
        "T3,t2@yahoo.com,Tom,Hill,+1 212 555 0144",
        "T4,t1@gmail.com,Tom,Hill,+1 212 555 0144",
    )
    _import(cli, tom, "s", "--batch-rows", "2")
    items = _items(cli)
    assert [(i["left_contact_id"], i["right_contact_id"]) for i in items] == [(1, 2)]
    # the same people from another source: merged into their contacts, the pair still asked once
    _import(cli, tom, "t")
    assert len(_items(cli)) == 1


def test_an_import_does_not_merge_contacts_a_person_kept_apart(cli, tmp_path: Path) -> None:
    # two contacts from a migration, merged by resolve, then taken apart by a person
    crm = tmp_path / "crm.csv"
    crm.write_text(
        "external_id,email,first_name,last_name\nx1,kim.park@gmail.com,Kim,Park\ny1,kimpark@gmail.com,Kim,Park\n"
    )
    cli("import", "contacts", str(crm), "--source", "crm")
    assert json.loads(cli("resolve", "--format", "json").stdout)["merged"] == 1
    (decision,) = json.loads(cli("merges", "list", "--format", "json").stdout)
    cli("merges", "undo", str(decision["id"]), "--yes")
    # a lead with the address both share: it joins one of them, and the two stay apart
    _import(cli, _file(tmp_path, "lead.csv", "L1,kim.park@gmail.com,Kim,Park,"), "web")
    merges = json.loads(cli("merges", "list", "--format", "json").stdout)
    assert [m for m in merges if m["kind"] == "contact" and not m["undone"]] == []
    contacts = json.loads(cli("sources", "list", "--format", "json").stdout)
    assert len(contacts) == 1 and contacts[0]["contact_id"] in (1, 2)


def test_review_and_merge_decisions_have_a_dry_run(cli, tmp_path: Path) -> None:
    _import(cli, _file(tmp_path, "a.csv", "A1,kx@acme.io,Alice,Wong,"), "a")
    _import(cli, _file(tmp_path, "b.csv", "B1,kx@acme.io,Bob,Park,"), "b")
    (item,) = _items(cli)
    for verb in ("accept", "reject"):
        out = json.loads(cli("review", verb, str(item["id"]), "--dry-run", "--format", "json").stdout)
        assert out["dry_run"] is True and out["status"] == f"{verb}ed"
    assert [i["status"] for i in _items(cli)] == ["open"]
    cli("review", "accept", str(item["id"]))
    (decision,) = json.loads(cli("merges", "list", "--format", "json").stdout)
    out = json.loads(cli("merges", "undo", str(decision["id"]), "--dry-run", "--format", "json").stdout)
    assert out["dry_run"] is True
    assert [m["undone"] for m in json.loads(cli("merges", "list", "--format", "json").stdout)] == [False]


def test_review_decisions_stay_true_to_the_contacts(cli, tmp_path: Path) -> None:
    toms = _file(
        tmp_path,
        "tom.csv",
        "T1,tom.k1@gmail.com,Tom,Kowalski,+1 212 555 0144",
        "T2,tom.k2@yahoo.com,Tom,Kowalski,+1 212 555 0144",
        "T3,tom.k3@aol.com,Tom,Kowalski,+1 212 555 0144",
    )
    _import(cli, toms, "s")
    items = {(i["left_contact_id"], i["right_contact_id"]): i["id"] for i in _items(cli)}
    assert set(items) == {(1, 2), (1, 3), (2, 3)}
    cli("review", "accept", str(items[(1, 2)]))
    cli("review", "accept", str(items[(2, 3)]))  # 3 joins 1, the survivor of 1 and 2
    # "different people" for two contacts that are one: refused, not recorded
    refused = cli("review", "reject", str(items[(1, 3)]), expect=2)
    assert "already one contact" in refused.stderr
    # undoing a merge says so on the item whose accept made it
    merges = json.loads(cli("merges", "list", "--format", "json").stdout)
    newest = max(m["id"] for m in merges)
    cli("merges", "undo", str(newest), "--yes")
    status = {(i["left_contact_id"], i["right_contact_id"]): i["status"] for i in _items(cli)}
    assert status[(2, 3)] == "rejected"


def test_imports_undo_refuses_while_an_accepted_merge_stands(cli, tmp_path: Path) -> None:
    _import(cli, _file(tmp_path, "a.csv", "A1,kx@acme.io,Alice,Wong,"), "a")
    _import(cli, _file(tmp_path, "b.csv", "B1,kx@acme.io,Bob,Park,"), "b")
    (item,) = _items(cli)
    cli("review", "accept", str(item["id"]))
    refused = cli("imports", "undo", "2", "--yes", expect=2)
    assert "merge decision(s) 1" in refused.stderr
    (decision,) = json.loads(cli("merges", "list", "--format", "json").stdout)
    cli("merges", "undo", str(decision["id"]), "--yes")
    out = json.loads(cli("imports", "undo", "2", "--yes", "--format", "json").stdout)
    assert out["review_items_removed"] == 1
