import csv
import io
import json
import os
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crmctl.errors import InputError
from crmctl.importers.reader import (
    ROW_COLUMN,
    RejectWriter,
    header_key,
    load_mapping,
    open_table,
    overlong_fields,
    read_ahead,
    resolve_columns,
)


def _rows(path: Path, **kw: object) -> list[dict]:
    return [r for b in open_table(path, **kw).batches() for r in b.to_dicts()]  # type: ignore[arg-type]


def test_bom_semicolon_and_empty_cells(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_bytes("\ufeffEmail ;First Name;Phone\na@b.com;Zoë;+44 20 7946 0958\n;Bob;\n".encode())
    table = open_table(path)
    assert table.columns == ["Email", "First Name", "Phone"] and table.delimiter == ";"
    assert _rows(path) == [
        {ROW_COLUMN: 1, "Email": "a@b.com", "First Name": "Zoë", "Phone": "+44 20 7946 0958"},
        {ROW_COLUMN: 2, "Email": None, "First Name": "Bob", "Phone": None},
    ]


def test_latin1_needs_encoding_and_then_reads(tmp_path: Path) -> None:
    path = tmp_path / "l.csv"
    path.write_bytes("Email,Name\nx@y.com,René\n".encode("latin-1"))
    with pytest.raises(InputError, match="is not UTF-8") as info:
        open_table(path)
    assert "--encoding latin-1" in str(info.value) and "René" not in str(info.value)
    assert _rows(path, encoding="latin-1")[0]["Name"] == "René"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"\x00\x01\x02garbage\x00" * 50, "looks binary"),
        (b"Email,Email\na,b\n", "duplicate column headers: Email"),
        (b"\n\n", "no header row"),
    ],
)
def test_unusable_files_are_one_sentence(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        open_table(path)


def test_header_only_has_no_batches(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    path.write_text("Email,Name\n")
    assert list(open_table(path).batches()) == []


def test_missing_file_and_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        open_table(tmp_path / "nope.csv")
    (tmp_path / "x.doc").write_text("hi")
    with pytest.raises(InputError, match="Cannot tell the format"):
        open_table(tmp_path / "x.doc")


def test_jsonl_parquet_and_excel_read_as_strings(tmp_path: Path) -> None:
    frame = pl.DataFrame({"email": ["a@b.com", None], "n": [1, 2]})
    frame.write_ndjson(tmp_path / "x.jsonl")
    frame.write_parquet(tmp_path / "x.parquet")
    frame.write_excel(tmp_path / "x.xlsx")
    for name in ["x.jsonl", "x.parquet", "x.xlsx"]:
        rows = _rows(tmp_path / name)
        assert [r["email"] for r in rows] == ["a@b.com", None], name
        assert [r["n"] for r in rows] == ["1", "2"], name
        assert [r[ROW_COLUMN] for r in rows] == [1, 2], name


def test_batches_cover_every_row_once(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    path.write_text("id,email\n" + "".join(f"{i},p{i}@x.io\n" for i in range(2500)))
    batches = list(open_table(path, batch_rows=1000).batches())
    assert max(b.height for b in batches) <= 1000
    rows = pl.concat(batches)
    assert rows[ROW_COLUMN].to_list() == list(range(1, 2501))
    assert rows["id"].to_list() == [str(i) for i in range(2500)]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(
            st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=12),
            min_size=3,
            max_size=3,
        ),
        min_size=1,
        max_size=20,
    )
)
def test_csv_round_trip(tmp_path_factory: pytest.TempPathFactory, rows: list[list[str]]) -> None:
    path = tmp_path_factory.mktemp("rt") / "rt.csv"
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_ALL)
    writer.writerow(["a", "b", "c"])
    writer.writerows(rows)
    path.write_text(buf.getvalue(), encoding="utf-8")
    got = [(r["a"], r["b"], r["c"]) for r in _rows(path)]
    # a row with no value at all is a blank line, no row
    assert got == [tuple(v if v != "" else None for v in row) for row in rows if any(row)]


def test_mapping_override_aliases_and_all_problems_at_once(tmp_path: Path) -> None:
    aliases = {
        "email": ["E-mail", "Email Address"],
        "first_name": ["First Name", "fname"],
        "phone": ["Mobile"],
    }
    assert resolve_columns(["E-Mail", "FNAME", "Other"], aliases) == {
        "email": "E-Mail",
        "first_name": "FNAME",
    }
    assert resolve_columns(["Work", "Mobile"], aliases, {"email": "Work"}) == {
        "email": "Work",
        "phone": "Mobile",
    }
    with pytest.raises(InputError) as info:
        resolve_columns(["A"], aliases, {"emial": "A", "phone": "Nope"})
    assert "unknown field 'emial'" in str(info.value) and "'phone' names column 'Nope'" in str(info.value)
    assert header_key("E-mail Address") == "emailaddress"
    toml = tmp_path / "m.toml"
    toml.write_text('[columns]\nemail = "Work Email"\n')
    assert load_mapping(toml) == {"email": "Work Email"}
    js = tmp_path / "m.json"
    js.write_text(json.dumps({"email": 3}))
    with pytest.raises(InputError, match="must map to a header string"):
        load_mapping(js)


def test_reject_writer_and_overlong_fields(tmp_path: Path) -> None:
    batch = pl.DataFrame({ROW_COLUMN: [1, 2, 3], "note": ["ok", "x" * 11, None]})
    rejects = overlong_fields(batch, ["note", "absent"], max_chars=10)
    assert rejects.to_dicts() == [{ROW_COLUMN: 2, "column": "note", "reason": "longer than 10 characters"}]
    path = tmp_path / "rejects.csv"
    with RejectWriter(path) as writer:
        writer.add(rejects)
        writer.add(rejects)
    assert writer.count == 2 and writer.rejected_rows == 1
    assert path.read_text().splitlines() == ["row,column,reason", "2,note,longer than 10 characters"] * 1 + [
        "2,note,longer than 10 characters"
    ]
    with RejectWriter(tmp_path / "none.csv") as writer:
        writer.add(overlong_fields(batch, ["note"], max_chars=100))
    assert not (tmp_path / "none.csv").exists()


@pytest.mark.parametrize("chunk_bytes", ["1024", None])
def test_small_read_chunks_split_no_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk_bytes: str | None
) -> None:
    """CSV is read in bounded chunks (reader.POLARS_CSV_CHUNK_BYTES unless the user set polars'
    own setting): rows with quoted delimiters and line breaks survive every chunk boundary."""
    monkeypatch.setenv("POLARS_CSV_CHUNK_SIZE", "x")  # recorded, so the reader's value is undone
    if chunk_bytes is None:
        monkeypatch.delenv("POLARS_CSV_CHUNK_SIZE")
    else:
        monkeypatch.setenv("POLARS_CSV_CHUNK_SIZE", chunk_bytes)
    path = tmp_path / "quoted.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "note"])
        writer.writerows([[str(i), f'line one, {i}\nline "two"\r\n{"é" * (i % 50)}'] for i in range(3000)])
    rows = pl.concat(list(open_table(path, batch_rows=700).batches()))
    with path.open(newline="", encoding="utf-8") as fh:
        expected = list(csv.DictReader(fh))
    assert rows[ROW_COLUMN].to_list() == list(range(1, 3001))
    assert rows.select("id", "note").to_dicts() == expected
    assert os.environ["POLARS_CSV_CHUNK_SIZE"] == (chunk_bytes or str(4 << 20))


def test_read_ahead_keeps_order_raises_at_the_failing_batch_and_closes_the_source() -> None:
    closed = []

    def source(fail_at: int | None):
        try:
            for i in range(5):
                if i == fail_at:
                    raise InputError("The file could not be read.")
                yield i
        finally:
            closed.append(True)

    assert list(read_ahead(source(None), lambda i: i * 10)) == [0, 10, 20, 30, 40]
    seen = []
    with pytest.raises(InputError):
        for item in read_ahead(source(3), lambda i: i * 10):
            seen.append(item)
    assert seen == [0, 10, 20]
    stopped = read_ahead(source(None), lambda i: i)
    assert next(stopped) == 0
    stopped.close()  # a caller that stops early (an error while writing batch 0)
    assert closed == [True, True, True]
