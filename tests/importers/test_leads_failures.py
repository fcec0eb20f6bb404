"""Lead files a lead import cannot take as they are: one sentence, no personal data, an honest run
record, and no reject for what is not a row (both backends)."""

from __future__ import annotations

import json
from pathlib import Path


def _runs(cli) -> list[dict]:
    return json.loads(cli("imports", "list", "--format", "json").stdout)


def test_a_file_without_a_header_line_is_refused_without_echoing_its_data(cli, tmp_path: Path) -> None:
    path = tmp_path / "nohead.csv"
    path.write_text("john.doe@secret.com,+44 20 7946 0999,John Doe\njane@x.com,+44 20 7946 0998,Jane\n")
    for extra in ((), ("--id-column", "id")):
        result = cli("import", "leads", str(path), "--source", "s", *extra, expect=2)
        assert "looks like data" in result.stderr
        assert "secret.com" not in result.output + result.stderr and "7946" not in result.stderr
    assert _runs(cli) == []


def test_an_unwritable_reject_file_is_refused_before_anything_is_written(cli, tmp_path: Path) -> None:
    path = tmp_path / "leads.csv"
    path.write_text("email,first_name\na@x.com,A\nnot-an-email,B\n")
    for rejects, reason in (
        (tmp_path / "missing" / "r.csv", "its folder does not exist"),
        (tmp_path, "folder"),
    ):
        result = cli("import", "leads", str(path), "--source", "s", "--rejects", str(rejects), expect=2)
        assert reason in result.stderr
    assert _runs(cli) == []


def test_a_run_that_fails_midway_is_recorded_as_failed(cli, tmp_path: Path) -> None:
    path = tmp_path / "ragged.csv"
    path.write_text("email,first_name\na@x.com,A\nb@x.com,B,EXTRA\n")
    result = cli("import", "leads", str(path), "--source", "s", expect=2)
    assert "could not be read" in result.stderr
    (run,) = _runs(cli)
    assert run["status"] == "failed"


def test_blank_lines_are_no_rows(cli, tmp_path: Path) -> None:
    path = tmp_path / "blanks.csv"
    path.write_bytes(b"Email,Name\r\na1@x.com,A\r\n\r\n,\r\na2@x.com,B\r\n\r\n")
    rejects = tmp_path / "rejects.csv"
    out = cli(
        "import", "leads", str(path), "--source", "s", "--max-reject-rate", "0",
        "--rejects", str(rejects), "--format", "json",
    )  # fmt: skip
    summary = json.loads(out.stdout)
    assert (summary["rows_read"], summary["new_contacts"], summary["rejected"]) == (2, 2, 0)
    assert not rejects.exists()


def test_an_unwritable_results_file_is_one_sentence(cli, tmp_path: Path) -> None:
    path = tmp_path / "leads.csv"
    path.write_text("email,first_name\na@x.com,A\n")
    cli("import", "leads", str(path), "--source", "s")
    (run,) = _runs(cli)
    missing = tmp_path / "missing" / "results.csv"
    result = cli("imports", "show", str(run["id"]), "--results", str(missing), expect=2)
    assert "Cannot write the results file" in result.stderr and "Traceback" not in result.stderr


def test_the_results_list_rejected_rows_with_reasons_and_no_values(cli, tmp_path: Path) -> None:
    path = tmp_path / "leads.csv"
    path.write_text("id,email,first_name\nA1,a@x.com,Ann\nA2,not-an-email,Bo\nA3,,Cy\nA4,b@x.com,Di\n")
    cli("import", "leads", str(path), "--source", "s", "--id-column", "id")
    (run,) = _runs(cli)
    results = tmp_path / "results.csv"
    cli("imports", "show", str(run["id"]), "--results", str(results))
    text = results.read_text()
    lines = text.splitlines()
    assert lines[0] == "row,source_record_id,contact_id,action,reason"
    assert [line.split(",")[:4] for line in lines[1:]] == [
        ["1", "A1", "1", "created"],
        ["2", "", "", "rejected"],
        ["3", "", "", "rejected"],
        ["4", "A4", "2", "created"],
    ]
    assert "invalid email" in lines[2] and "no email, phone or helpdesk id" in lines[3]
    assert "not-an-email" not in text and "Bo" not in text
