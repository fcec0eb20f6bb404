"""Migration importers through the real CLI on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from sqlalchemy import text
from sqlmodel import SQLModel

from crmctl.db.engine import Database
from crmctl.importers.graph_fields import DATETIME, parse_column
from tests.conftest import Cli


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def query(db: Database, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    with db.session() as session:
        return [tuple(r) for r in session.connection().execute(text(sql), params).all()]


def scalar(db: Database, sql: str, **params: Any) -> Any:
    return query(db, sql, **params)[0][0]


def summary(result: Any) -> dict[str, dict[str, Any]]:
    payload = json.loads(result.stdout)
    return {row["table"]: row for row in payload["rows"]}


ACCOUNTS = (
    ["external_id", "name", "website", "segment", "country", "employees", "parent_external_id"],
    [
        ["A2", "Acme Europe GmbH", "https://www.acme.de/about", "Mid Market", "de", "250", "A1"],
        ["A1", "Acme Inc.", "acme.com", "Enterprise", "us", "5,000", ""],
        ["A3", "Globex Ltd", "globex.co.uk", "SMB", "GB", "12", "A9"],
    ],
)


def test_accounts_upsert_link_parents_and_report_a_missing_parent(
    cli: Cli, db: Database, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "accounts.csv", *ACCOUNTS)
    result = cli("import", "accounts", str(path), "--source", "crm", "--format", "json")
    counts = summary(result)["account"]
    assert (counts["created"], counts["updated"], counts["rejected"]) == (3, 0, 1)
    rows = query(
        db,
        "SELECT a.external_id, a.domain, a.segment, a.country, a.employees, p.external_id, a.name_norm "
        "FROM account a LEFT JOIN account p ON p.id = a.parent_id ORDER BY a.external_id",
    )
    assert rows == [
        ("A1", "acme.com", "enterprise", "US", 5000, None, "acme"),
        ("A2", "acme.de", "mid-market", "DE", 250, "A1", "acme europe"),
        ("A3", "globex.co.uk", "smb", "GB", 12, None, "globex"),
    ]
    rejects = (tmp_path / "accounts.rejects.csv").read_text().splitlines()
    assert rejects == [
        "row,column,reason",
        "3,parent_external_id,no parent account with this external id in source 'crm'; "
        "imported without a parent",
    ]
    # Re-import: the same rows are updated, not duplicated; an empty cell keeps the stored value.
    write_csv(
        tmp_path / "accounts2.csv",
        ["external_id", "name", "industry", "employees"],
        [["A1", "Acme Incorporated", "Software", ""]],
    )
    again = summary(
        cli("import", "accounts", str(tmp_path / "accounts2.csv"), "--source", "crm", "-f", "json")
    )
    assert (again["account"]["created"], again["account"]["updated"]) == (0, 1)
    assert query(db, "SELECT name, industry, employees, domain FROM account WHERE external_id = 'A1'") == [
        ("Acme Incorporated", "Software", 5000, "acme.com")
    ]
    assert scalar(db, "SELECT count(*) FROM account") == 3
    # The same external id from another source system is another record.
    cli("import", "accounts", str(tmp_path / "accounts2.csv"), "--source", "billing")
    assert scalar(db, "SELECT count(*) FROM account") == 4


def test_contacts_are_normalised_and_findable_and_references_are_never_guessed(
    cli: Cli, db: Database, tmp_path: Path
) -> None:
    cli("import", "accounts", str(write_csv(tmp_path / "a.csv", *ACCOUNTS)), "--source", "crm")
    path = write_csv(
        tmp_path / "contacts.csv",
        ["Contact ID", "Name", "E-mail Address", "Phone", "country", "account_external_id", "account_domain"],
        [
            ["C1", "Dr. Robert Smith", "Bob.Smith+news@Acme.com", "(415) 555-2671", "US", "A1", ""],
            ["C2", "Zoë Müller", "zoe@acme.de", "+49 30 901820", "DE", "", "www.acme.de"],
            ["C3", "Nobody Known", "n@x.io", "", "", "A404", ""],
            ["C4", "No Account", "solo@gmail.com", "", "", "", ""],
        ],
    )
    result = cli("import", "contacts", str(path), "--source", "crm", "--format", "json")
    assert summary(result)["contact"]["created"] == 3
    rows = query(
        db,
        "SELECT c.external_id, c.first_name, c.last_name, c.email_norm, c.phone_e164, c.company_domain, "
        "a.external_id FROM contact c LEFT JOIN account a ON a.id = c.account_id ORDER BY c.external_id",
    )
    assert rows == [
        ("C1", "Robert", "Smith", "bob.smith+news@acme.com", "+14155552671", "acme.com", "A1"),
        ("C2", "Zoë", "Müller", "zoe@acme.de", "+4930901820", "acme.de", "A2"),
        ("C4", "No", "Account", "solo@gmail.com", None, None, None),
    ]
    identifiers = query(
        db,
        "SELECT c.external_id, i.kind, i.value FROM contact_identifier i "
        "JOIN contact c ON c.id = i.contact_id "
        "ORDER BY 1, 2",
    )
    assert identifiers == [
        ("C1", "email", "bob.smith+news@acme.com"),
        ("C1", "phone", "+14155552671"),
        ("C2", "email", "zoe@acme.de"),
        ("C2", "phone", "+4930901820"),
        ("C4", "email", "solo@gmail.com"),
    ]
    rejects = (tmp_path / "contacts.rejects.csv").read_text()
    assert rejects.splitlines()[1] == "3,account_external_id,no account with this external id in source 'crm'"
    assert "n@x.io" not in rejects and "Nobody" not in rejects  # no personal data in reasons
    # Re-importing adds no second identifier row.
    cli("import", "contacts", str(path), "--source", "crm")
    assert scalar(db, "SELECT count(*) FROM contact_identifier") == 5


def _graph_files(tmp_path: Path) -> dict[str, Path]:
    files = {
        "accounts": write_csv(tmp_path / "accounts.csv", *ACCOUNTS[:1], ACCOUNTS[1][:2]),
        "contacts": write_csv(
            tmp_path / "contacts.csv",
            ["external_id", "first_name", "last_name", "email", "account_external_id"],
            [["C1", "Jo", "Ray", "jo@acme.com", "A1"], ["C2", "Al", "Bo", "al@acme.de", "A2"]],
        ),
        "deals": write_csv(
            tmp_path / "deals.csv",
            [
                "external_id",
                "name",
                "account_domain",
                "contact_email",
                "stage",
                "amount",
                "currency",
                "close_date",
            ],
            [
                ["D1", "Acme renewal", "acme.com", "", "Proposal", "$12,500.50", "usd", "2026-03-31"],
                ["D2", "Acme DE", "", "AL@acme.de", "closed won", "9000", "EUR", "01/15/2026"],
                ["D3", "Mystery", "unknown.example", "", "Proposal", "1", "USD", "2026-01-01"],
                ["D4", "Brand new stage", "acme.com", "", "Verbal Yes", "5", "USD", "2026-01-01"],
            ],
        ),
        "stage-changes": write_csv(
            tmp_path / "history.csv",
            ["deal_external_id", "changed_at", "from_stage", "to_stage", "amount"],
            [
                ["D1", "2026-01-05T09:00:00Z", "", "Prospecting", "10000"],
                ["D1", "2026-02-01 10:30", "Prospecting", "Proposal", "12500.50"],
                ["D9", "2026-02-01 10:30", "", "Proposal", ""],
            ],
        ),
        "interactions": write_csv(
            tmp_path / "activity.csv",
            ["contact_email", "account_external_id", "kind", "occurred_at", "score", "subject"],
            [
                ["jo@acme.com", "", "Email", "2026-02-03T10:00:00+01:00", "", "Hello"],
                ["", "A2", "NPS", "2026-02-04", "9", "NPS survey"],
                ["ghost@acme.com", "", "call", "2026-02-05", "", ""],
                ["", "", "note", "2026-02-05", "", ""],
            ],
        ),
    }
    return files


def test_deals_history_and_append_only_activity_are_idempotent(
    cli: Cli, db: Database, tmp_path: Path
) -> None:
    files = _graph_files(tmp_path)
    for kind in ("accounts", "contacts"):
        cli("import", kind, str(files[kind]))
    deals = summary(cli("import", "deals", str(files["deals"]), "--format", "json"))["deal"]
    assert (deals["created"], deals["rejected"]) == (3, 1)
    rows = query(
        db,
        "SELECT d.external_id, a.external_id, c.external_id, s.name, s.is_won, d.amount_cents, d.currency, "
        "d.close_date, d.closed_at IS NOT NULL, p.name, p.is_default FROM deal d "
        "JOIN stage s ON s.id = d.stage_id JOIN pipeline p ON p.id = d.pipeline_id "
        "LEFT JOIN account a ON a.id = d.account_id LEFT JOIN contact c ON c.id = d.contact_id "
        "ORDER BY d.external_id",
    )
    assert [r[:7] for r in rows] == [
        ("D1", "A1", None, "Proposal", False, 1250050, "USD"),
        ("D2", "A2", "C2", "Closed Won", True, 900000, "EUR"),  # account from the contact
        ("D4", "A1", None, "Verbal Yes", False, 500, "USD"),  # a new stage appended to the pipeline
    ]
    assert [str(r[7]) for r in rows] == ["2026-03-31", "2026-01-15", "2026-01-01"]
    assert [bool(r[8]) for r in rows] == [False, True, False]
    assert {(r[9], bool(r[10])) for r in rows} == {("Sales", True)}
    assert scalar(db, "SELECT count(*) FROM stage") == 7

    history = summary(cli("import", "stage-changes", str(files["stage-changes"]), "-f", "json"))[
        "stage_change"
    ]
    assert (history["created"], history["rejected"]) == (2, 1)
    # The import writes the reports' projections of each deal's history itself.
    assert scalar(db, "SELECT count(*) FROM stage_change WHERE entered_pipeline_at IS NULL") == 0
    (stamps,) = query(db, "SELECT entered_stage_at, entered_pipeline_at FROM deal WHERE external_id = 'D1'")
    assert [str(v)[:16] for v in stamps] == ["2026-02-01 10:30", "2026-01-05 09:00"]
    activity = summary(cli("import", "interactions", str(files["interactions"]), "-f", "json"))["interaction"]
    assert (activity["created"], activity["rejected"]) == (2, 2)
    reasons = (tmp_path / "activity.rejects.csv").read_text().splitlines()[1:]
    assert reasons == [
        "3,contact_email,no contact with this email",
        "4,contact_external_id,no contact or account given",
    ]
    nps = query(
        db, "SELECT i.kind, i.score, a.external_id FROM interaction i JOIN account a ON a.id = i.account_id"
    )
    assert sorted(nps) == [("email", None, "A1"), ("nps", 9.0, "A2")]
    last = scalar(db, "SELECT last_interaction_at FROM contact WHERE external_id = 'C1'")
    assert str(last).startswith("2026-02-03 09:00:00")

    # Re-importing the same files adds nothing (idempotency keys), even without external ids.
    for kind in ("stage-changes", "interactions"):
        again = summary(cli("import", kind, str(files[kind]), "-f", "json"))
        table = next(iter(again.values()))
        assert (table["created"], table["skipped"]) == (0, 2)
    assert scalar(db, "SELECT count(*) FROM stage_change") == 2
    assert scalar(db, "SELECT count(*) FROM interaction") == 2


def test_dry_run_reports_and_writes_nothing(cli: Cli, db: Database, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "accounts.csv", *ACCOUNTS)
    result = cli("import", "accounts", str(path), "--dry-run", "--format", "json")
    payload = json.loads(result.stdout)
    assert payload["dry_run"] is True
    assert payload["rows"][0]["would_create"] == 3
    assert payload["rejects"][0]["column"] == "parent_external_id"
    assert scalar(db, "SELECT count(*) FROM account") == 0
    assert scalar(db, "SELECT count(*) FROM import_run") == 0
    assert query(db, "SELECT command, outcome FROM audit_event") == [("import accounts", "dry_run")]
    table = cli("import", "accounts", str(path), "--dry-run")
    assert "Validation report (dry run: nothing was written)" in table.stdout


def test_contracts_create_then_update_their_renewal(cli: Cli, db: Database, tmp_path: Path) -> None:
    cli("import", "accounts", str(write_csv(tmp_path / "a.csv", *ACCOUNTS)))
    header = ["external_id", "account_external_id", "start_date", "end_date", "arr", "currency", "auto_renew"]
    header += ["features", "seats"]
    path = write_csv(
        tmp_path / "contracts.csv",
        header,
        [
            ["K1", "A1", "2025-07-01", "2026-06-30", "120000", "usd", "yes", "sso; api", "50"],
            ["K2", "A2", "2025-07-01", "2025-06-30", "1", "EUR", "no", "", ""],
        ],
    )
    result = summary(cli("import", "contracts", str(path), "-f", "json"))
    assert (result["contract"]["created"], result["contract"]["rejected"]) == (1, 1)
    assert result["renewal"]["created"] == 1
    stored = query(db, "SELECT arr_cents, auto_renew, entitlements FROM contract")
    assert stored[0][0] == 12_000_000 and bool(stored[0][1]) is True
    entitlements = stored[0][2] if isinstance(stored[0][2], dict) else json.loads(stored[0][2])
    assert entitlements == {"features": ["sso", "api"], "seats": 50}
    with db.session(write=True) as session:
        session.connection().execute(text("UPDATE renewal SET stage = 'in_progress'"))
    write_csv(
        tmp_path / "contracts.csv",
        header,
        [["K1", "A1", "2025-07-01", "2027-06-30", "150000", "", "", "", ""]],
    )
    again = summary(cli("import", "contracts", str(path), "-f", "json"))
    assert (again["contract"]["updated"], again["renewal"]["updated"]) == (1, 1)
    renewal = query(db, "SELECT due_date, arr_cents, stage, currency FROM renewal")
    assert [(str(r[0]), r[1], r[2], r[3]) for r in renewal] == [
        ("2027-06-30", 15_000_000, "in_progress", "USD")
    ]


def test_tickets_and_product_usage(cli: Cli, db: Database, tmp_path: Path) -> None:
    files = _graph_files(tmp_path)
    for kind in ("accounts", "contacts"):
        cli("import", kind, str(files[kind]))
    tickets = write_csv(
        tmp_path / "tickets.csv",
        [
            "ticket id",
            "requester email",
            "subject",
            "status",
            "priority",
            "sentiment",
            "created at",
            "solved at",
        ],
        [
            [
                "T1",
                "jo@acme.com",
                "Login",
                "Resolved",
                "Medium",
                "-0.4",
                "2026-02-01T08:00:00Z",
                "2026-02-02",
            ],
            ["T2", "", "Billing", "new", "critical", "2", "2026-02-03", ""],
        ],
    )
    cli(
        "import",
        "tickets",
        str(tickets),
        "--mapping",
        str(_mapping(tmp_path, contact_email="requester email")),
    )
    rows = query(
        db,
        "SELECT t.external_id, a.external_id, t.status, t.priority, t.sentiment, t.closed_at IS NOT NULL "
        "FROM support_ticket t LEFT JOIN account a ON a.id = t.account_id ORDER BY 1",
    )
    assert [(r[0], r[1], r[2], r[3], r[4], bool(r[5])) for r in rows] == [
        ("T1", "A1", "solved", "normal", -0.4, True),
        ("T2", None, "open", "urgent", 1.0, False),
    ]
    usage = write_csv(
        tmp_path / "usage.csv",
        ["account_domain", "day", "event", "count"],
        [
            ["acme.com", "2026-02-01", "login", "12"],
            ["acme.com", "2026-02-02", "login", ""],
            ["", "2026-02-02", "x", ""],
        ],
    )
    result = summary(cli("import", "product-usage", str(usage), "-f", "json"))["product_usage"]
    assert (result["created"], result["rejected"]) == (2, 1)
    assert sorted(r[0] for r in query(db, "SELECT quantity FROM product_usage")) == [1.0, 12.0]


def _mapping(tmp_path: Path, **fields: str) -> Path:
    path = tmp_path / "mapping.toml"
    path.write_text("".join(f'{k} = "{v}"\n' for k, v in fields.items()))
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--preset", "zoho"], "Unknown preset 'zoho'."),
        (["--preset", "hubspot", "--mapping", "m.toml"], "Use either --mapping or --preset, not both."),
    ],
)
def test_bad_options_are_usage_errors(cli: Cli, tmp_path: Path, args: list[str], message: str) -> None:
    path = write_csv(tmp_path / "accounts.csv", *ACCOUNTS)
    result = cli("import", "accounts", str(path), *args, expect=2)
    assert message in result.stderr


def test_a_file_without_a_required_column_is_refused_in_one_sentence(
    cli: Cli, db: Database, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "deals.csv", ["external_id", "name"], [["D1", "x"]])
    result = cli("import", "deals", str(path), expect=2)
    assert "The file deals.csv has no column for 'stage' (needed to import deals)." in result.stderr
    assert "Traceback" not in result.stderr
    missing = cli("import", "deals", str(tmp_path / "nope.csv"), expect=2)
    assert "does not exist" in missing.stderr
    bad_mapping = _mapping(tmp_path, stage="Deal Stage")
    result = cli("import", "deals", str(path), "--mapping", str(bad_mapping), expect=2)
    assert "names column 'Deal Stage', which the file does not have" in result.stderr
    assert scalar(db, "SELECT count(*) FROM deal") == 0


def test_too_many_rejects_exit_3_after_importing_the_good_rows(
    cli: Cli, db: Database, tmp_path: Path
) -> None:
    path = write_csv(
        tmp_path / "accounts.csv",
        ["external_id", "name", "employees"],
        [["A1", "Good", "10"], ["A2", "Bad", "many"], ["A3", "", "3"]],
    )
    result = cli("import", "accounts", str(path), "--max-reject-rate", "0.5", expect=3)
    assert "2 of 3 rows of accounts.csv were rejected" in result.stderr
    assert scalar(db, "SELECT count(*) FROM account") == 1
    assert (tmp_path / "accounts.rejects.csv").read_text().splitlines()[1:] == [
        "2,employees,not a whole number",
        "3,name,required value missing",
    ]
    assert query(db, "SELECT status FROM import_run") == [("completed",)]


def test_several_files_jsonl_and_a_rejects_folder(cli: Cli, db: Database, tmp_path: Path) -> None:
    first = write_csv(tmp_path / "one.csv", ["external_id", "name", "employees"], [["A1", "One", "x"]])
    second = tmp_path / "two.jsonl"
    second.write_text(
        json.dumps({"external_id": "A2", "name": "Two", "employees": 7})
        + "\n"
        + json.dumps({"external_id": "A3", "name": None})
        + "\n"
    )
    folder = tmp_path / "rejects"
    folder.mkdir()
    result = cli("import", "accounts", str(first), str(second), "--rejects", str(folder), "-f", "json")
    assert [(r["file"], r["created"], r["rejected"]) for r in json.loads(result.stdout)["rows"]] == [
        ("one.csv", 0, 1),
        ("two.jsonl", 1, 1),
    ]
    assert sorted(p.name for p in folder.iterdir()) == ["one.rejects.csv", "two.rejects.csv"]
    assert query(db, "SELECT external_id, employees FROM account") == [("A2", 7)]
    refused = cli(
        "import", "accounts", str(first), str(second), "--rejects", str(tmp_path / "r.csv"), expect=2
    )
    assert "pass a folder instead" in refused.stderr


def test_every_stored_reference_resolves_after_imports_with_dangling_references(
    cli: Cli, db: Database, tmp_path: Path
) -> None:
    # SQLite imports skip per-row foreign key probes (the importer resolves every reference itself):
    # the rows it rejects for dangling references must be the only ones that had any.
    files = _graph_files(tmp_path)
    for kind in ("accounts", "contacts", "deals", "stage-changes", "interactions"):
        cli("import", kind, str(files[kind]))
    tables = ("account", "contact", "deal", "stage", "stage_change", "interaction")
    for name in tables:
        for fk in SQLModel.metadata.tables[name].foreign_keys:
            child, parent = fk.parent.name, fk.column
            orphans = scalar(
                db,
                f"SELECT count(*) FROM {name} t LEFT JOIN {parent.table.name} p "
                f"ON p.{parent.name} = t.{child} WHERE t.{child} IS NOT NULL AND p.{parent.name} IS NULL",
            )
            assert orphans == 0, f"{name}.{child}"
    assert scalar(db, "SELECT count(*) FROM interaction") == 2
    if db.dialect == "sqlite":
        assert query(db, "PRAGMA foreign_key_check") == []
        with db.session(write=True) as session:  # later transactions check foreign keys again
            assert session.connection().exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_references_repeated_across_batches_resolve_like_in_one_batch(
    cli: Cli, db: Database, tmp_path: Path
) -> None:
    # Normalised reference keys computed in one batch are reused by later ones (a per-run memo).
    files = _graph_files(tmp_path)
    for kind in ("accounts", "contacts"):
        cli("import", kind, str(files[kind]))
    deals = summary(cli("import", "deals", str(files["deals"]), "--batch-rows", "1", "-f", "json"))["deal"]
    assert (deals["created"], deals["rejected"]) == (3, 1)
    accounts = query(
        db, "SELECT d.external_id, a.external_id FROM deal d JOIN account a ON a.id = d.account_id ORDER BY 1"
    )
    assert accounts == [("D1", "A1"), ("D2", "A2"), ("D4", "A1")]
    activity = write_csv(
        tmp_path / "repeat.csv",
        ["contact_email", "kind", "occurred_at"],
        [
            ["jo@acme.com", "email", "2026-02-03"],
            ["ghost@acme.com", "call", "2026-02-04"],
            ["JO@Acme.com ", "call", "2026-02-05"],
            ["ghost@acme.com", "call", "2026-02-06"],
            ["al@acme.de", "call", "2026-02-07"],
        ],
    )
    result = cli("import", "interactions", str(activity), "--batch-rows", "2", "-f", "json")
    counts = summary(result)["interaction"]
    assert (counts["created"], counts["rejected"]) == (3, 2)
    people = query(
        db,
        "SELECT c.external_id, count(*) FROM interaction i JOIN contact c ON c.id = i.contact_id GROUP BY 1",
    )
    assert sorted(people) == [("C1", 2), ("C2", 1)]


def test_timestamps_with_z_offset_or_no_zone_parse_to_the_same_utc_instants() -> None:
    raw = pl.Series(
        "at",
        [
            "2025-05-28T16:12:32Z",
            "2025-05-28T16:12:32z",
            "2025-05-28T18:12:32+02:00",
            "2025-05-28T18:12:32+02",
            "2025-05-28T16:12:32.000Z",
            "2025-05-28 16:12:32",
            "2025-05-28T16:12:32Zx",
            None,
        ],
    )
    parsed = parse_column(raw, DATETIME).to_list()
    at = datetime(2025, 5, 28, 16, 12, 32, tzinfo=UTC)
    assert parsed == [at, at, at, at, at, at, None, None]
