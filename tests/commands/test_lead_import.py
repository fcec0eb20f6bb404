"""crmctl import leads end to end, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import polars as pl

from crmctl.db.engine import make_engine
from crmctl.demo.leads import write_lead_files

WEB = """Submission ID,Email,First Name,utm_campaign
W1,Jo.Smith+news@GoogleMail.com,Jo,spring
W2, josmith@gmail.com ,,spring
W3,ann.lee@acme.com,Ann,ebook
W4,not-an-email,Zed,ebook
"""
DIALLER = """call_id,Full Name,Phone,E-mail
D1,"Smith, Jo",(415) 555-0132,jo.smith@gmail.com
D2,Sam Smith,415.555.0132,
D3,Ann Lee,+1 212 555 0199 x12,ANN.LEE@ACME.COM
"""


def _links(cli) -> dict[tuple[str, str], int]:
    out = cli("sources", "list", "--format", "csv").stdout
    return {
        (r["source"], r["source_record_id"]): int(r["contact_id"]) for r in csv.DictReader(io.StringIO(out))
    }


def _write(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text(body, encoding="utf-8")
    return path


def test_import_resolves_people_and_is_idempotent(cli, tmp_path: Path) -> None:
    web = _write(tmp_path, "web.csv", WEB)
    dialler = _write(tmp_path, "dialler.csv", DIALLER)
    rejects = tmp_path / "rejects.csv"
    first = cli(
        "import",
        "leads",
        str(web),
        "--source",
        "web_form",
        "--id-column",
        "Submission ID",
        "--rejects",
        str(rejects),
        "--format",
        "json",
    )
    summary = json.loads(first.stdout)
    assert (summary["rows_read"], summary["new_contacts"], summary["merged_within_file"]) == (4, 2, 1)
    assert summary["rejected"] == 1 and summary["rules"] == {"email": 1}
    assert "row,column,reason" in rejects.read_text() and "Email,invalid email" in rejects.read_text()
    assert "not-an-email" not in first.stderr  # no personal data in messages
    cli(
        "import",
        "leads",
        str(dialler),
        "--source",
        "dialler",
        "--id-column",
        "call_id",
        "--default-region",
        "US",
    )
    links = _links(cli)
    # gmail dots/+tags/googlemail and a swapped name: one person across both files
    assert links[("web_form", "W1")] == links[("web_form", "W2")] == links[("dialler", "D1")]
    # same household phone, different first name: never merged on the phone alone
    assert links[("dialler", "D2")] != links[("dialler", "D1")]
    assert links[("web_form", "W3")] == links[("dialler", "D3")]
    # the same file again changes nothing
    again = json.loads(
        cli(
            "import",
            "leads",
            str(dialler),
            "--source",
            "dialler",
            "--id-column",
            "call_id",
            "--default-region",
            "US",
            "--format",
            "json",
        ).stdout
    )
    assert again["already_imported"] == 3 and again["new_contacts"] == 0
    assert _links(cli) == links
    merges = json.loads(cli("merges", "list", "--format", "json").stdout)
    decision = json.loads(cli("merges", "show", str(merges[0]["id"]), "--format", "json").stdout)
    assert decision["rule"] in {"email", "phone"} and len(decision["candidates"]) >= 2
    runs = json.loads(cli("imports", "list", "--format", "json").stdout)
    assert [r["status"] for r in runs] == ["completed"] * 3
    results = tmp_path / "results.csv"
    cli("imports", "show", str(runs[-1]["id"]), "--results", str(results))
    assert pl.read_csv(results)["action"].to_list() == ["created", "merged", "created", "rejected"]


def test_dry_run_writes_nothing(cli, tmp_path: Path) -> None:
    web = _write(tmp_path, "web.csv", WEB)
    out = json.loads(
        cli("import", "leads", str(web), "--source", "web_form", "--dry-run", "--format", "json").stdout
    )
    assert out["dry_run"] is True and out["rows_read"] == 4
    assert cli("sources", "list", "--format", "csv").stdout.strip() == "source,source_record_id,contact_id"
    assert json.loads(cli("imports", "list", "--format", "json").stdout) == []
    # scripts read a dry run's summary by the same keys as a real run's
    real = json.loads(
        cli("import", "leads", str(web), "--source", "web_form", "--format", "json").stdout
    )  # fmt: skip
    assert list(out) == list(real) and (out["new_contacts"], out["rejected"]) == (real["new_contacts"], 1)
    # CSV cells as JSON spells them (lists, objects, booleans), not as Python prints them
    as_csv = cli("import", "leads", str(web), "--source", "other", "--dry-run", "--format", "csv").stdout
    row = next(csv.DictReader(io.StringIO(as_csv)))
    assert (row["runs"], row["dry_run"]) == ("[]", "true") and json.loads(row["rules"])["email"] > 0


def test_bad_input_is_one_sentence(cli, tmp_path: Path) -> None:
    empty = _write(tmp_path, "empty.csv", "")
    result = cli("import", "leads", str(empty), "--source", "x", expect=2)
    assert "is empty" in result.stderr and "Traceback" not in result.stderr
    garbage = tmp_path / "garbage.csv"
    garbage.write_bytes(bytes(range(256)) * 10)
    assert "binary" in cli("import", "leads", str(garbage), "--source", "x", expect=2).stderr
    no_keys = _write(tmp_path, "names.csv", "First Name,Last Name\nAnn,Lee\n")
    assert (
        "no email, phone or helpdesk id column"
        in cli("import", "leads", str(no_keys), "--source", "x", expect=2).stderr
    )
    web = _write(tmp_path, "web.csv", WEB)
    missing = cli("import", "leads", str(web), "--source", "x", "--id-column", "nope", expect=2)
    assert "has no column 'nope'" in missing.stderr
    header_only = _write(tmp_path, "header.csv", "Email,Phone\n")
    assert (
        json.loads(cli("import", "leads", str(header_only), "--source", "x", "--format", "json").stdout)[
            "rows_read"
        ]
        == 0
    )
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("Email,First Name\nrene@acme.fr,Ren\xe9e\n".encode("latin-1"))
    assert "--encoding latin-1" in cli("import", "leads", str(latin1), "--source", "x", expect=2).stderr
    cli("import", "leads", str(latin1), "--source", "x", "--encoding", "latin-1")
    bad = _write(tmp_path, "bad.csv", "Email\nnope\nalso nope\nok@acme.com\n")
    result = cli("import", "leads", str(bad), "--source", "y", "--max-reject-rate", "0.5", expect=3)
    assert "2 of 3 rows were rejected" in result.stderr


def test_generated_sources_resolve_accurately(cli, tmp_path: Path) -> None:
    files = write_lead_files(tmp_path / "leads", people=300, seed=3)
    for lead_file in files:
        args = [
            "import",
            "leads",
            str(lead_file.path),
            "--source",
            lead_file.source,
            "--default-region",
            "US",
        ]
        cli(*args, *(["--id-column", lead_file.id_column] if lead_file.id_column else []))
    links = pl.read_csv(io.StringIO(cli("sources", "list", "--format", "csv").stdout), infer_schema=False)
    truth = pl.read_csv(tmp_path / "leads" / "truth.csv", infer_schema=False)
    joined = links.join(truth, on=["source", "source_record_id"])
    assert joined.height > 0.98 * truth.height  # only rejected rows are missing

    def pairs(*cols: str) -> int:
        return joined.group_by(cols).len().select((pl.col("len") * (pl.col("len") - 1) // 2).sum()).item()

    true_pos = pairs("person_id", "contact_id")
    assert true_pos / pairs("contact_id") >= 0.98
    assert true_pos / pairs("person_id") >= 0.7


def test_undo_run_and_review_decisions(cli, tmp_path: Path) -> None:
    web = _write(tmp_path, "web.csv", WEB)
    dialler = _write(tmp_path, "dialler.csv", DIALLER)
    cli("import", "leads", str(web), "--source", "web_form", "--id-column", "Submission ID")
    before = _links(cli)
    cli(
        "import",
        "leads",
        str(dialler),
        "--source",
        "dialler",
        "--id-column",
        "call_id",
        "--default-region",
        "US",
    )
    runs = json.loads(cli("imports", "list", "--format", "json").stdout)
    first_run, second_run = runs[-1]["id"], runs[0]["id"]
    refused = cli("imports", "undo", str(first_run), "--yes", expect=2)
    assert f"later run(s) {second_run} matched rows" in refused.stderr
    assert "Refusing without confirmation" in cli("imports", "undo", str(second_run), expect=2).stderr
    out = json.loads(cli("imports", "undo", str(second_run), "--yes", "--format", "json").stdout)
    assert out["source_records_removed"] == 3 and out["contacts_removed"] == 1  # Sam Smith
    assert _links(cli) == before  # back to exactly the state before the second run
    cli("db", "check")  # the undo left no row naming a contact it deleted
    assert [r["status"] for r in json.loads(cli("imports", "list", "--format", "json").stdout)] == [
        "undone",
        "completed",
    ]
    # a pair in the review band: same email, clearly different names
    review = _write(
        tmp_path,
        "review.csv",
        "id,Email,First Name,Last Name\n1,pat@acme.com,Pat,Lee\n2,pat@acme.com,Zoltan,Kovacs\n",
    )
    cli("import", "leads", str(review), "--source", "crm", "--id-column", "id")
    items = json.loads(cli("review", "list", "--format", "json").stdout)
    assert len(items) == 1 and items[0]["rule"] == "email"
    links = _links(cli)
    assert links[("crm", "1")] != links[("crm", "2")]
    cli("review", "accept", str(items[0]["id"]))
    links = _links(cli)
    assert links[("crm", "1")] == links[("crm", "2")]
    assert cli("review", "reject", str(items[0]["id"]), expect=2).stderr.count("already accepted") == 1


def test_resolve_merges_existing_duplicates_and_merges_undo(cli, tmp_path: Path) -> None:
    first = _write(tmp_path, "a.csv", "id,Email,Full Name\n1,Kofi.Mensah@acme.com,Kofi Mensah\n")
    second = _write(tmp_path, "b.csv", "id,Email,Full Name\n1,kofi.mensah@acme.com,Mensah Kofi\n")
    cli("import", "leads", str(first), "--source", "a", "--id-column", "id")
    # a rule file that stops email matching at import time leaves two contacts for one person
    strict = _write(tmp_path, "strict.toml", "[rules.email]\nexact = 0.1\ncompatible = 0.1\n")
    cli("import", "leads", str(second), "--source", "b", "--id-column", "id", "--config", str(strict))
    assert _links(cli)[("a", "1")] != _links(cli)[("b", "1")]
    dry = json.loads(cli("resolve", "--dry-run", "--format", "json").stdout)
    assert dry["merged"] == 1 and _links(cli)[("a", "1")] != _links(cli)[("b", "1")]
    assert json.loads(cli("resolve", "--format", "json").stdout)["merged"] == 1
    links = _links(cli)
    assert links[("a", "1")] == links[("b", "1")]
    decision = json.loads(cli("merges", "list", "--format", "json").stdout)[0]
    assert decision["kind"] == "contact" and decision["rule"] == "email"
    cli("merges", "undo", str(decision["id"]), "--yes")
    assert _links(cli)[("a", "1")] != _links(cli)[("b", "1")]
    cli("db", "check")
    bad = cli(
        "import", "leads", str(first), "--source", "c", "--config", str(tmp_path / "nope.toml"), expect=2
    )
    assert "Cannot read the resolution config" in bad.stderr


def test_db_check_reports_rows_naming_a_deleted_contact(cli, database_url: str, tmp_path: Path) -> None:
    """Source records, identifiers and merge decisions name contacts without a foreign key
    (models.UNKEYED_REFERENCES): a contact deleted by hand leaves them dangling, and db check says
    so, with counts and no personal data."""
    cli("import", "leads", str(_write(tmp_path, "web.csv", WEB)), "--source", "web_form")
    cli("db", "check")
    engine = make_engine(database_url)
    with engine.begin() as conn:
        contact = conn.exec_driver_sql(
            "SELECT contact_id FROM source_record GROUP BY contact_id HAVING count(*) = 2"
        ).scalar_one()
        conn.exec_driver_sql(f"DELETE FROM contact WHERE id = {contact}")
    engine.dispose()
    result = cli("db", "check", expect=1)
    assert "2 source_record row(s) name a contact that does not exist (contact_id)" in result.stderr
    assert "contact_identifier row(s) name a contact that does not exist (contact_id)" in result.stderr
    assert "1 merge_decision row(s) name a contact that does not exist (winner_contact_id)" in result.stderr
    assert "gmail" not in result.stderr.lower()


def test_the_sources_own_timestamp_is_kept(cli, database_url: str, tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "web.csv",
        "id,Email,Submitted At,utm_campaign\n"
        "A1,a@x.com,2026-06-25T19:57:00+02:00,spring\n"
        "A2,b@x.com,25/06/2026,\n",
    )
    cli("import", "leads", str(path), "--source", "web", "--id-column", "id")
    engine = make_engine(database_url)
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT source_record_id, received_at, campaign FROM source_record ORDER BY source_record_id"
        ).all()
    engine.dispose()
    (a1, a2) = rows
    # SQLite keeps text, PostgreSQL an aware timestamp: both say 17:57 UTC
    assert str(a1[1]).startswith("2026-06-25 17:57:00") and a1[2] == "spring"
    assert a2[1] is None  # not ISO 8601: kept only in the row as received
