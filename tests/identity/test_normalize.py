import unicodedata

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crmctl.identity import normalize as n

text = st.text(max_size=80)
emailish = st.builds(
    lambda user, dom: f"{user}@{dom}",
    st.text(alphabet="abcABC.+_-1 ", max_size=12),
    st.sampled_from(["gmail.com", "GoogleMail.com", "acme.co.uk", "outlook.com", "x", "b..c"]),
)
phoneish = st.text(alphabet="0123456789 +()-.x", max_size=25)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (" J.Smith+news@GoogleMail.com ", "jsmith@gmail.com"),
        ("mailto:<Ann@Acme.CO.UK>", "ann@acme.co.uk"),
        ("ann+crm@outlook.com", "ann@outlook.com"),
        ("ann+crm@acme.com", "ann+crm@acme.com"),  # unknown provider: the tag may be a real mailbox
        ("a.b@acme.com", "a.b@acme.com"),
        ("not an email", None),
        ("x@localhost", None),
        ("a..b@acme.com", None),
        ("+tag@gmail.com", None),
        (None, None),
    ],
)
def test_email_key(raw: str | None, expected: str | None) -> None:
    assert n.email_key(raw) == expected


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("+1 (415) 555-0132", None, ("+14155550132", None)),
        ("(415) 555-0132 ext. 12", "US", ("+14155550132", "12")),
        ("1-415-555-0132", "US", ("+14155550132", None)),
        ("020 7946 0958", "GB", ("+442079460958", None)),
        ("020 7946 0958", "uk", ("+442079460958", None)),
        ("020 7946 0958", None, (None, None)),  # no country: cannot be placed
        ("555-0132", "US", (None, None)),
        ("call me", "US", (None, None)),
    ],
)
def test_phone_parts(raw: str, region: str | None, expected: tuple[str | None, str | None]) -> None:
    assert n.phone_parts(raw, region) == expected
    assert n.phone_key(raw, region) == expected[0]


def test_names_and_companies() -> None:
    assert n.split_full_name("Smith, Bob") == ("Bob", "Smith")
    assert n.split_full_name("Dr. Jo Ann Smith Jr.") == ("Jo", "Smith")
    assert n.name_norm("  O'Néill ") == "oneill"
    assert n.first_name_canonical(n.name_norm("Bobby")) == "robert"
    assert n.name_tokens("robert", "smith") == n.name_tokens("smith", "bob")
    assert n.company_norm("The Acme Widgets, Inc.") == "acme widgets"
    assert n.company_token(n.company_norm("Acme-Widgets GmbH")) == n.domain_label("acme-widgets.co.uk")
    assert n.company_domain("j@mail.acme.co.uk") == "acme.co.uk"
    assert n.company_domain("j@gmail.com") is None  # free mail is never a company
    assert n.region_of_email("a@acme.de") == "DE" and n.region_of_email("a@acme.co.uk") == "GB"


@settings(max_examples=300, deadline=None)
@given(st.one_of(text, emailish))
def test_email_key_idempotent_and_total(raw: str) -> None:
    key = n.email_key(raw)
    assert key is None or n.email_key(key) == key


@settings(max_examples=300, deadline=None)
@given(st.one_of(text, phoneish), st.sampled_from([None, "US", "GB", "DE", "zz"]))
def test_phone_key_idempotent_and_total(raw: str, region: str | None) -> None:
    key = n.phone_key(raw, region)
    assert key is None or (key.startswith("+") and n.phone_key(key, region) == key)


@settings(max_examples=300, deadline=None)
@given(text)
def test_name_and_company_normalisers_idempotent(raw: str) -> None:
    for func in (n.name_norm, n.company_norm):
        once = func(raw)
        assert once is None or func(once) == once
    n.split_full_name(raw)
    n.registered_domain(raw)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.one_of(st.none(), emailish, phoneish), max_size=30))
def test_vectorised_forms_agree_with_scalars(values: list[str | None]) -> None:
    series = pl.Series("v", values, dtype=pl.String)
    assert n.email_keys(series).to_list() == [n.email_key(v) for v in values]
    phones = n.phone_keys(series, "US")
    assert list(zip(phones["phone_e164"], phones["phone_ext"], strict=True)) == [
        n.phone_parts(v, "US") if v is not None else (None, None) for v in values
    ]


def test_north_american_fast_path_agrees_with_phonenumbers() -> None:
    import random

    rng = random.Random(5)
    values = []
    for _ in range(3000):
        digits = "".join(rng.choice("0123456789") for _ in range(10))
        values += [digits, "1" + digits, "+1" + digits, f"+1 ({digits[:3]}) {digits[3:6]}-{digits[6:]} x7"]
    series = pl.Series("v", values)
    for region in ("US", "CA", "GB", None):
        fast = n.phone_keys(series, region)
        assert list(zip(fast["phone_e164"], fast["phone_ext"], strict=True)) == [
            n.phone_parts(v, region) for v in values
        ]


def _international_corpus() -> list[str]:
    """'+CC ...' numbers of every region: each type's example number, near misses of it (a digit
    changed, dropped or added, a national prefix written after the country code) and random digits
    after each country code."""
    import random

    import phonenumbers

    rng = random.Random(11)
    values = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        code = str(phonenumbers.country_code_for_region(region))
        for kind in range(12):  # every PhoneNumberType but UNKNOWN
            example = phonenumbers.example_number_for_type(region, kind)
            if example is None:
                continue
            nsn = phonenumbers.national_significant_number(example)
            i = rng.randrange(len(nsn))
            changed = nsn[:i] + str((int(nsn[i]) + rng.randrange(1, 10)) % 10) + nsn[i + 1 :]
            for national in (nsn, changed, nsn[:-1], nsn + rng.choice("0123456789"), "0" + nsn, "00" + nsn):
                values.append(f"+{code} {national}")
        for length in range(3, 14):
            values.append(f"+{code}" + "".join(rng.choice("0123456789") for _ in range(length)))
    return values


def test_international_fast_path_agrees_with_phonenumbers() -> None:
    values = _international_corpus()
    series = pl.Series("v", values)
    for region in (None, "GB", "DE"):
        fast = n.phone_keys(series, region)
        slow = [n.phone_parts(v, region) for v in values]
        pairs = zip(fast["phone_e164"], fast["phone_ext"], strict=True)
        mismatches = [(v, f, s) for v, f, s in zip(values, pairs, slow, strict=True) if f != s]
        assert not mismatches, mismatches[:10]
        assert sum(s[0] is not None for s in slow) > len(values) / 4  # the corpus holds valid numbers too


@given(st.sampled_from(sorted(sum(n._COUNTRY_CODES.values(), []))), st.text("0123456789", max_size=16))
def test_international_fast_path_property(code: int, national: str) -> None:
    value = f"+{code}{national}"
    fast = n.phone_keys(pl.Series("v", [value]), None)
    assert (fast["phone_e164"][0], fast["phone_ext"][0]) == n.phone_parts(value, None)


@given(st.text(alphabet=st.characters(max_codepoint=127)))
def test_fold_of_ascii_is_the_full_decomposition(raw: str) -> None:
    decomposed = unicodedata.normalize("NFKD", raw.lower())
    assert n.fold(raw) == "".join(ch for ch in decomposed if not unicodedata.combining(ch)).lower()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-06-25T19:57:00+02:00", "2026-06-25 17:57:00"),
        (" 2026-06-25 19:57:00 ", "2026-06-25 19:57:00"),  # no offset: read as UTC
        ("2026-06-25T19:57:00.5Z", "2026-06-25 19:57:00.500000"),
        ("2026-06-25", "2026-06-25 00:00:00"),
        ("25/06/2026", None),  # day or month first: not guessed
        ("2026-13-45", None),
        ("", None),
    ],
)
def test_timestamps(raw: str, expected: str | None) -> None:
    (got,) = n.timestamps(pl.Series([raw])).to_list()
    assert (
        got.strftime("%Y-%m-%d %H:%M:%S" + (".%f" if got.microsecond else "")) if got else None
    ) == expected
    assert got is None or got.utcoffset().total_seconds() == 0


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.one_of(text, st.datetimes(timezones=st.just(None)).map(lambda d: d.isoformat())), max_size=20)
)
def test_timestamps_never_raise_and_read_their_own_output(values: list[str]) -> None:
    parsed = n.timestamps(pl.Series(values, dtype=pl.String))
    assert parsed.len() == len(values)
    # what it read, written back in ISO 8601, reads the same again
    again = n.timestamps(parsed.dt.strftime("%Y-%m-%dT%H:%M:%S%.f%:z"))
    assert again.to_list() == parsed.to_list()
