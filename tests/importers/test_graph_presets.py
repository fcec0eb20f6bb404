"""One test per CRM preset: small files in the column layout of that CRM's standard CSV export."""

from __future__ import annotations

from pathlib import Path

from crmctl.db.engine import Database
from tests.conftest import Cli
from tests.importers.test_graph_import import query, scalar, write_csv


def test_hubspot_companies_contacts_and_deals(cli: Cli, db: Database, tmp_path: Path) -> None:
    companies = write_csv(
        tmp_path / "hubspot-companies.csv",
        [
            "Record ID",
            "Company name",
            "Company Domain Name",
            "Industry",
            "Number of Employees",
            "Country/Region",
            "Parent Company ID",
            "Company owner",
        ],
        [
            [
                "9001",
                "Acme Widgets, Inc.",
                "acme.com",
                "COMPUTER_SOFTWARE",
                "1200",
                "US",
                "",
                "ana@corp.test",
            ],
            ["9002", "Acme Widgets UK Ltd", "acme.co.uk", "COMPUTER_SOFTWARE", "80", "GB", "9001", ""],
        ],
    )
    contacts = write_csv(
        tmp_path / "hubspot-contacts.csv",
        [
            "Record ID",
            "First Name",
            "Last Name",
            "Email",
            "Phone Number",
            "Lifecycle Stage",
            "Create Date",
            "Associated Company IDs",
        ],
        [
            [
                "501",
                "Jane",
                "Doe",
                "jane@acme.com",
                "+1 415 555 2671",
                "Customer",
                "2024-01-15 10:30",
                "9001",
            ],
            [
                "502",
                "Raj",
                "Patel",
                "raj@acme.co.uk",
                "020 7946 0958",
                "Sales Qualified Lead",
                "",
                "9002;9001",
            ],
        ],
    )
    deals = write_csv(
        tmp_path / "hubspot-deals.csv",
        [
            "Record ID",
            "Deal Name",
            "Deal Stage",
            "Pipeline",
            "Amount",
            "Close Date",
            "Deal probability",
            "Associated Company IDs",
            "Associated Contact IDs",
        ],
        [
            [
                "7001",
                "Acme expansion",
                "Contract Sent",
                "Sales Pipeline",
                "25000",
                "2024-06-30",
                "0.9",
                "9001",
                "501",
            ],
            ["7002", "Acme UK", "Closed Won", "Sales Pipeline", "4000.50", "2024-03-01", "1", "9002", "502"],
        ],
    )
    for kind, path in (("accounts", companies), ("contacts", contacts), ("deals", deals)):
        cli("import", kind, str(path), "--preset", "hubspot")
    assert query(
        db,
        "SELECT a.external_id, a.domain, a.employees, p.external_id FROM account a "
        "LEFT JOIN account p ON p.id = a.parent_id ORDER BY 1",
    ) == [("9001", "acme.com", 1200, None), ("9002", "acme.co.uk", 80, "9001")]
    assert query(
        db,
        "SELECT c.external_id, c.external_source, c.lifecycle_stage, c.phone_e164, a.external_id "
        "FROM contact c JOIN account a ON a.id = c.account_id ORDER BY 1",
    ) == [
        ("501", "hubspot", "customer", "+14155552671", "9001"),
        ("502", "hubspot", "sql", "+442079460958", "9002"),  # the first associated id
    ]
    deals_rows = query(
        db,
        "SELECT d.external_id, s.name, s.probability, s.is_won, p.name, d.amount_cents, c.external_id "
        "FROM deal d JOIN stage s ON s.id = d.stage_id JOIN pipeline p ON p.id = d.pipeline_id "
        "JOIN contact c ON c.id = d.contact_id ORDER BY 1",
    )
    assert [(r[0], r[1], r[2], bool(r[3]), r[4], r[5], r[6]) for r in deals_rows] == [
        ("7001", "Contract Sent", 0.9, False, "Sales Pipeline", 2_500_000, "501"),
        ("7002", "Closed Won", 1.0, True, "Sales Pipeline", 400_050, "502"),
    ]


def test_salesforce_account_contact_lead_opportunity_and_history(
    cli: Cli, db: Database, tmp_path: Path
) -> None:
    files = {
        "accounts": write_csv(
            tmp_path / "Account.csv",
            ["Id", "Name", "Website", "Industry", "NumberOfEmployees", "BillingCountry", "ParentId", "Type"],
            [
                [
                    "001A",
                    "Globex Corporation",
                    "https://www.globex.com",
                    "Energy",
                    "5000",
                    "US",
                    "",
                    "Enterprise",
                ]
            ],
        ),
        "contacts": write_csv(
            tmp_path / "Contact.csv",
            ["Id", "AccountId", "FirstName", "LastName", "Email", "Phone", "MailingCountry", "LeadSource"],
            [["003A", "001A", "Hank", "Scorpio", "hank@globex.com", "(212) 555-0147", "US", "Web"]],
        ),
        "leads": write_csv(
            tmp_path / "Lead.csv",
            ["Id", "FirstName", "LastName", "Company", "Email", "Phone", "Status", "LeadSource"],
            [["00QA", "Frank", "Grimes", "Springfield Power", "frank@spp.example", "", "Open", "Trade Show"]],
        ),
        "deals": write_csv(
            tmp_path / "Opportunity.csv",
            [
                "Id",
                "AccountId",
                "Name",
                "StageName",
                "Amount",
                "CloseDate",
                "Probability",
                "CurrencyIsoCode",
                "ForecastCategoryName",
                "CreatedDate",
            ],
            [
                [
                    "006A",
                    "001A",
                    "Globex platform",
                    "Negotiation/Review",
                    "120000",
                    "2024-09-30",
                    "90",
                    "USD",
                    "Commit",
                    "2024-02-01T09:00:00.000+0000",
                ]
            ],
        ),
        "stage-changes": write_csv(
            tmp_path / "OpportunityHistory.csv",
            ["Id", "OpportunityId", "StageName", "Amount", "CloseDate", "Probability", "CreatedDate"],
            [
                ["008A", "006A", "Prospecting", "100000", "2024-08-31", "10", "2024-02-01T09:00:00.000+0000"],
                [
                    "008B",
                    "006A",
                    "Negotiation/Review",
                    "120000",
                    "2024-09-30",
                    "90",
                    "2024-05-01T09:00:00.000+0000",
                ],
            ],
        ),
    }
    for kind, path in files.items():
        cli("import", "contacts" if kind == "leads" else kind, str(path), "--preset", "salesforce")
    assert query(db, "SELECT external_id, domain, segment FROM account") == [
        ("001A", "globex.com", "enterprise")
    ]
    contacts = query(
        db,
        "SELECT c.external_id, c.company, c.source, a.external_id FROM contact c "
        "LEFT JOIN account a ON a.id = c.account_id ORDER BY 1",
    )
    assert contacts == [("003A", None, "Web", "001A"), ("00QA", "Springfield Power", "Trade Show", None)]
    assert query(
        db,
        "SELECT d.amount_cents, d.forecast_category, s.name, s.probability, a.external_id FROM deal d "
        "JOIN stage s ON s.id = d.stage_id JOIN account a ON a.id = d.account_id",
    ) == [(12_000_000, "commit", "Negotiation/Review", 0.9, "001A")]
    history = query(
        db,
        "SELECT s.name, h.amount_cents FROM stage_change h JOIN stage s ON s.id = h.to_stage_id "
        "ORDER BY h.changed_at",
    )
    assert history == [("Prospecting", 10_000_000), ("Negotiation/Review", 12_000_000)]


def test_pipedrive_organizations_persons_and_deals(cli: Cli, db: Database, tmp_path: Path) -> None:
    organizations = write_csv(
        tmp_path / "organizations.csv",
        ["Organization - ID", "Organization - Name", "Organization - Owner"],
        [["11", "Initech LLC", "Bill Lumbergh"], ["12", "Initrode", ""]],
    )
    persons = write_csv(
        tmp_path / "persons.csv",
        ["Person - ID", "Person - Name", "Person - Email", "Person - Phone", "Person - Organization"],
        [
            ["21", "Peter Gibbons", "peter@initech.example", "", "Initech"],
            ["22", "Ghost", "g@x.example", "", "Nope"],
        ],
    )
    deals = write_csv(
        tmp_path / "deals.csv",
        [
            "Deal - ID",
            "Deal - Title",
            "Deal - Value",
            "Deal - Currency",
            "Deal - Organization",
            "Deal - Stage",
            "Deal - Pipeline",
            "Deal - Expected close date",
            "Person - Email",
        ],
        [
            [
                "31",
                "TPS reports",
                "5000",
                "USD",
                "Initech LLC",
                "Qualified",
                "Pipeline",
                "2024-12-31",
                "peter@initech.example",
            ]
        ],
    )
    cli("import", "accounts", str(organizations), "--preset", "pipedrive")
    cli("import", "contacts", str(persons), "--preset", "pipedrive")
    cli("import", "deals", str(deals), "--preset", "pipedrive")
    assert query(
        db,
        "SELECT c.external_id, c.first_name, c.last_name, a.external_id FROM contact c "
        "JOIN account a ON a.id = c.account_id",
    ) == [("21", "Peter", "Gibbons", "11")]  # the organization by name: 'Initech' = 'Initech LLC'
    assert (tmp_path / "persons.rejects.csv").read_text().splitlines()[1] == (
        "2,Person - Organization,no account with this name"
    )
    assert query(
        db,
        "SELECT d.external_id, a.external_id, c.external_id, s.name, d.close_date IS NOT NULL FROM deal d "
        "JOIN account a ON a.id = d.account_id JOIN contact c ON c.id = d.contact_id "
        "JOIN stage s ON s.id = d.stage_id",
    )[0][:4] == ("31", "11", "21", "Qualified")
    assert scalar(db, "SELECT count(*) FROM pipeline") == 1
