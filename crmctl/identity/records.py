"""From mapped input rows to normalised records and the keys they can be matched by."""

from __future__ import annotations

import polars as pl

from crmctl.identity import normalize as n

# target field -> header names recognised automatically (compared without case and punctuation)
FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "email": ("E-mail", "Email Address", "email_address", "Mail", "Work Email",
              "Requester Email", "Contact Email"),
    "phone": ("Mobile", "Phone Number", "Telephone", "Tel", "Cell", "Mobile Phone", "Work Phone"),
    "first_name": ("First Name", "fname", "firstname", "Given Name", "Forename"),
    "last_name": ("Last Name", "lname", "lastname", "Surname", "Family Name"),
    "full_name": ("Full Name", "Name", "Requester Name", "Contact Name", "Contact"),
    "company": ("Organisation", "Organization", "Company Name", "Employer", "Account Name"),
    "website": ("Company Website", "URL", "Web", "Domain"),
    "title": ("Job Title", "Position", "Role"),
    "country": ("Country Code", "country_iso"),
    "helpdesk_id": ("helpdesk_user_id", "Helpdesk ID", "requester_id", "zendesk_user_id",
                    "Help Desk User ID"),
    "campaign": ("utm_campaign", "Campaign Name"),
    "medium": ("utm_medium",),
    "timestamp": ("Submitted At", "created_at", "Created", "Timestamp", "called_at", "Registered At", "Date"),
    "consent_evidence": ("consent", "opt_in", "gdpr_consent", "Consent Evidence"),
}  # fmt: skip
FIELDS = tuple(FIELD_ALIASES)
IDENTITY_FIELDS = ("email", "phone", "helpdesk_id")
KEY_KINDS = ("email", "phone", "helpdesk_id", "name_company")


def normalise_records(rows: pl.DataFrame, *, source: str, default_region: str | None) -> pl.DataFrame:
    """``rows`` has one column per target field (null where absent); adds the normalised columns."""
    for field in FIELDS:
        if field not in rows.columns:
            rows = rows.with_columns(pl.lit(None, dtype=pl.String).alias(field))
    email_norm = n.email_keys(rows["email"])
    email_host = email_norm.str.split("@").list.last()  # distinct domains are few: map those
    region_from_email = n.map_distinct(email_host, lambda host: n.region_of_email(f"x@{host}"), pl.String())
    country = n.map_distinct(rows["country"], _country, pl.String())
    region = country.fill_null(default_region).fill_null(region_from_email) if default_region else None
    if region is None:
        region = country.fill_null(region_from_email)
    phones = n.phone_keys(rows["phone"], region)

    split = n.split_full_names(rows["full_name"])
    first_raw = rows["first_name"].fill_null(split["first"])
    last_raw = rows["last_name"].fill_null(split["last"])
    first_norm = n.name_norms(first_raw)
    last_norm = n.name_norms(last_raw)
    first_c = n.map_distinct(first_norm, n.first_name_canonical, pl.String())

    company_norm = n.company_norms(rows["company"])
    domain_from_email = n.company_domains(email_host)
    domain_from_site = n.company_domains(rows["website"])
    company_domain = domain_from_email.fill_null(domain_from_site)
    company_tok = n.map_distinct(company_norm, n.company_token, pl.String()).fill_null(
        n.map_distinct(company_domain, n.domain_label, pl.String())
    )
    out = rows.with_columns(
        email_norm.alias("email_norm"),
        phones["phone_e164"].alias("phone_e164"),
        phones["phone_ext"].alias("phone_ext"),
        first_raw.alias("first_raw"),
        last_raw.alias("last_raw"),
        first_norm.alias("first_name_norm"),
        first_c.alias("first_c"),
        last_norm.alias("last_name_norm"),
        company_norm.alias("company_norm"),
        company_domain.alias("company_domain"),
        company_tok.alias("company_tok"),
        pl.when(pl.col("helpdesk_id").is_not_null())
        .then(pl.lit(f"{source}:") + pl.col("helpdesk_id").str.strip_chars())
        .alias("helpdesk_key"),
        country.alias("country_code"),
        n.map_distinct(last_norm, _last_canonical, pl.String()).alias("last_c"),
        n.timestamps(rows["timestamp"]).alias("received_at"),
    )
    first_key = pl.col("first_c").str.replace_all(" ", "")
    last_key = pl.col("last_c")
    ordered = pl.concat_list(first_key, last_key).list.sort()
    return out.with_columns(
        pl.when(first_key.is_not_null() & last_key.is_not_null())
        .then(ordered.list.join("|"))
        .alias("name_key"),
    ).with_columns(
        pl.when(pl.col("name_key").is_not_null() & pl.col("company_tok").is_not_null())
        .then(pl.col("name_key") + "|" + pl.col("company_tok"))
        .alias("company_key")
    )


def _last_canonical(norm: str) -> str:
    # a surname that is really a nickname means the name was written swapped ('Smith Bob')
    squeezed = norm.replace(" ", "")
    return n.NICKNAME_TO_CANONICAL.get(squeezed, squeezed)


def _country(raw: str) -> str | None:
    code = raw.strip().upper()
    aliases = {"UK": "GB", "USA": "US", "UNITED STATES": "US", "UNITED KINGDOM": "GB", "GERMANY": "DE"}
    code = aliases.get(code, code)
    return code if len(code) == 2 and code.isalpha() else None


def record_keys(records: pl.DataFrame, node: str = "node") -> pl.DataFrame:
    """(node, kind, value) for every key a normalised record carries."""
    parts = [
        records.select(pl.col(node).alias("node"), pl.lit(kind).alias("kind"), pl.col(column).alias("value"))
        for kind, column in (
            ("email", "email_norm"),
            ("phone", "phone_e164"),
            ("helpdesk_id", "helpdesk_key"),
            ("name_company", "company_key"),
        )
    ]
    return pl.concat(parts).drop_nulls("value")
