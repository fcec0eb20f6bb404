import datetime as dt
import json

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import errors
from sqlalchemy.exc import DBAPIError
from sqlmodel import select

from crmctl.db.bulk import allocate_ids, insert_frame, read_frame
from crmctl.db.engine import Database
from crmctl.db.models import Account, Contact


def test_insert_frame_round_trips_values_under_rls(db: Database) -> None:
    when = dt.datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=dt.UTC)
    with db.session(write=True) as session:
        ids = allocate_ids(session, "account", 3)
        assert len(set(ids)) == 3
        accounts = pl.DataFrame(
            {
                "id": ids,
                "tenant_id": ["default"] * 3,
                "name": ["Acme, Inc.", "", 'Quote "Co"'],
                "domain": ["acme.com", None, None],
                "employees": [10, None, 3],
                "created_at": [when] * 3,
                "updated_at": [when.replace(tzinfo=None)] * 3,  # naive = UTC
            }
        )
        assert insert_frame(session, "account", accounts) == 3
        contacts = pl.DataFrame(
            {
                "tenant_id": ["default"],
                "account_id": [ids[0]],
                "email": ["a@acme.com"],
                "lifecycle_stage": ["lead"],
                "field_provenance": [json.dumps({"email": {"source": "web"}})],
                "created_at": [when],
                "updated_at": [when],
            }
        )
        insert_frame(session, "contact", contacts)
    with db.session() as session:
        got = session.exec(select(Account).order_by(Account.id)).all()
        assert [a.name for a in got] == ["Acme, Inc.", "", 'Quote "Co"']  # "" stays "", not NULL
        assert [a.domain for a in got] == ["acme.com", None, None]
        assert [a.employees for a in got] == [10, None, 3]
        assert all(a.created_at == when and a.updated_at == when for a in got)
        contact = session.exec(select(Contact)).one()
        assert contact.field_provenance == {"email": {"source": "web"}}
        frame = read_frame(
            session, "SELECT count(*) AS n FROM account WHERE tenant_id = :t", {"t": "default"}
        )
        assert frame["n"].to_list() == [3]
        # ids keep coming after explicit ones
        more = allocate_ids(session, "account", 2)
        assert min(more) > max(ids)


# what COPY's text format escapes, and strings that look like its markers
TRICKY_TEXT = ["\\N", "a\tb", "line\nnext", "cr\rlf\r\n", "\\", "\\.", "\\t literally", "", '"', "é ✓ 😀"]


def _round_trip(db: Database, values: list[str | None]) -> list[str | None]:
    when = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    with db.session(write=True) as session:
        ids = allocate_ids(session, "account", len(values))
        frame = pl.DataFrame(
            {
                "id": ids,
                "tenant_id": ["default"] * len(values),
                "name": ["n"] * len(values),
                "domain": values,
                "created_at": [when] * len(values),
                "updated_at": [when] * len(values),
            },
            schema_overrides={"domain": pl.String},
        )
        insert_frame(session, "account", frame)
    with db.session() as session:
        stored = read_frame(
            session, "SELECT id, domain FROM account WHERE id >= :low ORDER BY id", {"low": min(ids)}
        )
    return stored["domain"].to_list()


def test_insert_frame_keeps_text_that_looks_like_copy_syntax(db: Database) -> None:
    assert _round_trip(db, [*TRICKY_TEXT, None]) == [*TRICKY_TEXT, None]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.none() | st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")),
        min_size=1,
        max_size=12,
    )
)
def test_insert_frame_round_trips_any_text(db: Database, values: list[str | None]) -> None:
    assert _round_trip(db, values) == values


def test_insert_frame_cannot_write_another_tenant_on_postgresql(db: Database, backend: str) -> None:
    if backend != "postgresql":
        return

    frame = pl.DataFrame(
        {
            "tenant_id": ["intruder"],
            "name": ["x"],
            "created_at": [dt.datetime.now(dt.UTC)],
            "updated_at": [dt.datetime.now(dt.UTC)],
        }
    )
    with pytest.raises((DBAPIError, errors.InsufficientPrivilege)), db.session(write=True) as session:
        insert_frame(session, "account", frame)


def test_insert_frame_keeps_row_order_across_multi_row_statements(db: Database) -> None:
    # 1,003 rows: 25 statements of 40 rows on SQLite and 3 single rows; ids follow the frame's order
    # (the stage-history projections rely on it), every value lands in its own row.
    when = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    names = [f"account {i:04d}" for i in range(1003)]
    frame = pl.DataFrame(
        {
            "tenant_id": ["default"] * 1003,
            "name": list(reversed(names)),
            "employees": [i if i % 3 else None for i in range(1003)],
            "created_at": [when] * 1003,
            "updated_at": [when] * 1003,
        }
    )
    with db.session(write=True) as session:
        assert insert_frame(session, "account", frame) == 1003
    with db.session() as session:
        stored = read_frame(session, "SELECT name, employees FROM account ORDER BY id")
    assert stored["name"].to_list() == list(reversed(names))
    assert stored["employees"].to_list() == frame["employees"].to_list()


def test_as_utc_reads_timestamps_however_they_were_written() -> None:
    from crmctl.db.bulk import as_utc

    text = pl.DataFrame(
        {
            "at": [
                "2024-01-01 00:00:00.000000",
                "2023-11-23 23:50:00.123456+00:00",
                "2023-11-23T23:50:00+02:00",
                None,
            ]
        }
    )
    assert text.select(as_utc(text, "at"))["at"].to_list() == [
        dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
        dt.datetime(2023, 11, 23, 23, 50, 0, 123456, tzinfo=dt.UTC),
        dt.datetime(2023, 11, 23, 21, 50, tzinfo=dt.UTC),
        None,
    ]
    berlin = pl.DataFrame({"at": [dt.datetime(2024, 6, 1, 12)]}).with_columns(
        pl.col("at").dt.replace_time_zone("Europe/Berlin")
    )
    assert berlin.select(as_utc(berlin, "at"))["at"].to_list() == [dt.datetime(2024, 6, 1, 10, tzinfo=dt.UTC)]
