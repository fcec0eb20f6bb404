import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crmctl.db.engine import Database
from crmctl.erasure.identifiers import email_key, email_keys_of_tokens, phone_digit_forms
from crmctl.erasure.keys import MissingErasureKey, keyed_hash, require_key
from crmctl.erasure.suppression import add_suppressions, find_suppressed
from crmctl.erasure.verify import EMAIL_PATTERN as EMAIL_TOKEN

KEY = "a-test-key-that-is-long-enough"


@given(st.text(), st.text())
def test_keyed_hash_depends_on_key_kind_and_value(kind: str, value: str) -> None:
    key = require_key(KEY)
    assert keyed_hash(key, kind, value) == keyed_hash(key, kind, value)
    assert keyed_hash(key, kind, value) != keyed_hash(require_key(KEY + "x"), kind, value)
    assert keyed_hash(key, kind, value) != keyed_hash(key, kind, value + "x")


@pytest.mark.parametrize("key", [None, "", "   ", "short"])
def test_missing_or_guessable_key_is_refused(key: str | None) -> None:
    with pytest.raises(MissingErasureKey):
        require_key(key)


def _list(db: Database, kind: str, value: str) -> None:
    entry = pl.DataFrame(
        {"kind": [kind], "value_hash": [keyed_hash(require_key(KEY), kind, value)], "request_id": [None]}
    )
    with db.session(write=True) as session:
        add_suppressions(session, entry)


def test_find_suppressed_marks_listed_emails_and_phones(db: Database) -> None:
    _list(db, "email", "gone@example.com")
    _list(db, "phone", "+441632960961")
    _list(db, "phone", "+441632960961")  # listing twice is a no-op
    emails = pl.Series(["gone@example.com", "kept@example.com", None, None])
    phones = pl.Series([None, "+441632960961", "+441632960000", None], dtype=pl.String)
    with db.session() as session:
        mask = find_suppressed(session, key=KEY, emails=emails, phones=phones)
        assert mask.to_list() == [True, True, False, False]
        # another key cannot read the list
        other = find_suppressed(session, key=KEY + "-other", emails=emails, phones=phones)
        assert other.to_list() == [False, False, False, False]
        count = session.connection().exec_driver_sql("SELECT count(*) FROM suppression").scalar()
    assert count == 2


def test_without_key_empty_list_passes_and_non_empty_list_refuses(db: Database) -> None:
    emails = pl.Series(["a@example.com"])
    phones = pl.Series([None], dtype=pl.String)
    with db.session() as session:
        assert find_suppressed(session, key=None, emails=emails, phones=phones).to_list() == [False]
    _list(db, "email", "a@example.com")
    with db.session() as session, pytest.raises(MissingErasureKey):
        find_suppressed(session, key=None, emails=emails, phones=phones)


@given(st.lists(st.from_regex(EMAIL_TOKEN, fullmatch=True), min_size=1, max_size=20))
def test_fast_token_keys_match_email_key_wherever_it_gives_a_key(tokens: list[str]) -> None:
    fast = email_keys_of_tokens(pl.Series(tokens, dtype=pl.String)).to_list()
    for token, key in zip(tokens, fast, strict=True):
        exact = email_key(token)
        if exact is not None:
            assert key == exact
        else:  # a token email_key rejects must not look like any valid key
            assert key is None or email_key(key) != key


def test_fast_token_keys_apply_provider_rules() -> None:
    tokens = pl.Series(["J.Doe+news@GoogleMail.com", "Jo.Doe+x@Example.COM", "a.b@gmail.com"])
    assert email_keys_of_tokens(tokens).to_list() == [
        "jdoe@gmail.com",
        "jo.doe+x@example.com",
        "ab@gmail.com",
    ]


def test_phone_digit_forms_cover_international_national_and_trunk_writing() -> None:
    assert phone_digit_forms(["+442079460958"]) == {"442079460958", "2079460958", "02079460958"}
    assert phone_digit_forms(["+14155550123"]) == {"14155550123", "4155550123"}


@given(st.integers(min_value=2_000_000_000, max_value=2_099_999_999))
def test_phone_written_nationally_in_text_is_one_of_the_forms(number: int) -> None:
    e164 = f"+44{number}"
    national = f"0{str(number)[:2]} {str(number)[2:6]} {str(number)[6:]}"
    digits = "".join(ch for ch in national if ch.isdigit())
    assert digits in phone_digit_forms([e164])
