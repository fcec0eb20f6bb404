"""Reading input files for every importer: CSV, JSONL, Parquet and Excel, streamed in batches.

One place decides how a file is decoded and split so the lead importer and the migration importers
behave the same: every batch is a polars frame of strings (empty cells are null) plus ``__row__``,
the 1-based data row number used in reject files. Problems with the file as a whole (empty, binary,
wrong encoding, duplicate headers, unparseable) raise :class:`InputError` with one sentence; problems
with single rows are the importer's to reject. Messages never quote cell values.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import os
import re
import tempfile
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar

import polars as pl

from crmctl.errors import InputError

T = TypeVar("T")
U = TypeVar("U")

ROW_COLUMN = "__row__"
DEFAULT_BATCH_ROWS = 100_000
MAX_FIELD_CHARS = 10_000
SNIFF_BYTES = 64 * 1024
DELIMITERS = ",;\t|"
# polars' streaming CSV reader sizes its read-ahead chunks by the file's size: a 900 MB file kept
# ~500 MB of decoded text in flight, a 90 MB file ~300 MB. Fixed 4 MiB chunks keep it at ~240 MB
# whatever the size, at the same speed (measured with polars 2.1; the knob is polars' own
# environment setting, read at each scan; a value the user set is left alone).
POLARS_CSV_CHUNK_BYTES = 4 << 20

_FORMATS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".xlsx": "excel",
    ".xlsm": "excel",
    ".xls": "excel",
}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class TableFile:
    """An input file, checked and ready to be read in batches."""

    path: Path
    format: str
    columns: list[str]
    sha256: str
    delimiter: str | None = None
    encoding: str = "utf-8"
    batch_rows: int = DEFAULT_BATCH_ROWS
    _utf8_copy: Path | None = field(default=None, repr=False)

    def batches(self) -> Iterator[pl.DataFrame]:
        """All-string frames of at most ``batch_rows`` rows, each with ``__row__``."""
        try:
            yield from self._batches()
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise InputError(
                f"The file {self.path.name} could not be read as {self.format.upper()}"
                f"{f' with delimiter {self.delimiter!r}' if self.delimiter else ''}.",
                hint="Check the delimiter, quoting and encoding (--encoding).",
            ) from exc
        finally:
            if self._utf8_copy is not None:
                self._utf8_copy.unlink(missing_ok=True)

    def _batches(self) -> Iterator[pl.DataFrame]:
        if self.format == "excel":
            frame = _read_excel(self.path).with_row_index(ROW_COLUMN, offset=1)
            batches: Iterable[pl.DataFrame] = (
                frame.slice(start, self.batch_rows).with_columns(pl.col(ROW_COLUMN).cast(pl.Int64))
                for start in range(0, frame.height, self.batch_rows)
            )
        else:
            lazy = (
                self._scan()
                .with_row_index(ROW_COLUMN, offset=1)
                .with_columns(pl.col(ROW_COLUMN).cast(pl.Int64))
            )
            batches = lazy.collect_batches(chunk_size=self.batch_rows)
        for batch in batches:
            rows = _empty_as_null(batch)
            if rows.height:
                yield rows

    def _scan(self) -> pl.LazyFrame:
        if self.format == "csv":
            os.environ.setdefault("POLARS_CSV_CHUNK_SIZE", str(POLARS_CSV_CHUNK_BYTES))
            source = self._utf8_copy or self.path
            return pl.scan_csv(
                source,
                separator=self.delimiter or ",",
                infer_schema=False,
                has_header=True,
                quote_char='"',
                encoding="utf8",
                empty_string_is_null=True,
                new_columns=self.columns,  # headers as checked (trimmed, BOM removed)
            )
        if self.format == "jsonl":
            lazy = pl.scan_ndjson(self.path, infer_schema_length=10_000)
        else:
            lazy = pl.scan_parquet(self.path)
        return lazy.select(_as_strings(lazy.collect_schema()))


_END = object()


def read_ahead(batches: Iterable[T], prepare: Callable[[T], U]) -> Iterator[U]:
    """``prepare`` each batch on a helper thread, one batch ahead of the caller: while the caller
    writes batch N, batch N+1 is read and typed (polars and SQLite release the GIL while they
    work, so on two cores the two overlap). At most one prepared batch waits; an error in reading
    or preparing is raised to the caller at that batch."""
    iterator = iter(batches)

    def step() -> Any:
        batch = next(iterator, _END)
        return _END if batch is _END else prepare(batch)

    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="crmctl-read-ahead") as pool:
            ahead = pool.submit(step)
            while (item := ahead.result()) is not _END:
                ahead = pool.submit(step)
                yield item
    finally:  # the thread is done with it: a caller that stops early closes the source here
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


def _empty_as_null(batch: pl.DataFrame) -> pl.DataFrame:
    """An empty cell is a missing value, whether the file quoted it or not; a row without any value
    (a blank line) is no row at all, not a rejected one (the row numbers still count it)."""
    data = [c for c in batch.columns if c != ROW_COLUMN]
    cleaned = batch.with_columns(
        pl.when(pl.col(c) == "").then(None).otherwise(pl.col(c)).alias(c) for c in data
    )
    return cleaned.filter(~pl.all_horizontal(pl.col(data).is_null())) if data else cleaned


def _as_strings(schema: Mapping[str, pl.DataType]) -> list[pl.Expr]:
    exprs = []
    for name, dtype in schema.items():
        if isinstance(dtype, pl.String):
            exprs.append(pl.col(name))
        elif isinstance(dtype, pl.Struct | pl.List | pl.Array):
            exprs.append(
                pl.col(name).map_elements(lambda v: json.dumps(v, default=str), return_dtype=pl.String)
            )
        else:
            exprs.append(pl.col(name).cast(pl.String))
    return exprs


def _json_cell(value: object) -> str:
    # nested JSONL values are rare: kept as JSON text so nothing is lost
    return json.dumps(value.to_list() if isinstance(value, pl.Series) else value, default=str)


def _read_excel(path: Path) -> pl.DataFrame:
    frame = pl.read_excel(path, infer_schema_length=0)
    return frame.select(_as_strings(frame.schema))


def detect_format(path: Path) -> str:
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputError(
            f"Cannot tell the format of {path.name} from its extension.",
            hint="Use .csv, .tsv, .jsonl, .parquet or .xlsx.",
        )
    return fmt


def open_table(
    path: Path | str, *, encoding: str | None = None, batch_rows: int = DEFAULT_BATCH_ROWS
) -> TableFile:
    """Check ``path`` and return a :class:`TableFile`; raise InputError on an unusable file."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"The file {path} does not exist.")
    if not path.is_file():
        raise InputError(f"{path} is not a file.")
    if not os.access(path, os.R_OK):
        raise InputError(f"The file {path} cannot be read (permission denied).")
    if path.stat().st_size == 0:
        raise InputError(f"The file {path.name} is empty.")
    fmt = detect_format(path)
    table = TableFile(path=path, format=fmt, columns=[], sha256=file_sha256(path), batch_rows=batch_rows)
    if fmt == "csv":
        _inspect_csv(table, encoding)
    else:
        table.columns = _inspect_other(path, fmt)
    if any(_looks_like_data(c) for c in table.columns):
        # the header is echoed in messages and the mapping line: data there would be personal data
        raise InputError(
            f"The first line of {path.name} looks like data (an email address or a phone number), "
            "not like column names.",
            hint="Add a header line naming the columns (e.g. email,phone,full_name).",
        )
    duplicates = sorted({c for c in table.columns if table.columns.count(c) > 1})
    if duplicates:
        raise InputError(
            f"The file {path.name} has duplicate column headers: {', '.join(duplicates)}.",
            hint="Rename or remove the duplicates so every column has one meaning.",
        )
    return table


_EMAIL_LIKE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_PHONE_LIKE = re.compile(r"\+?[\d\s().-]{7,}")


def _looks_like_data(header: str) -> bool:
    """Whether a column header is an email address or a phone number (a file without a header line)."""
    text = header.strip()
    return bool(_EMAIL_LIKE.fullmatch(text)) or (
        bool(_PHONE_LIKE.fullmatch(text)) and sum(ch.isdigit() for ch in text) >= 7
    )


def _inspect_csv(table: TableFile, encoding: str | None) -> None:
    path = table.path
    with path.open("rb") as fh:
        sample = fh.read(SNIFF_BYTES)
    if b"\x00" in sample and not sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise InputError(f"The file {path.name} looks binary, not like a CSV text file.")
    chosen = (encoding or "").lower().replace("_", "-")
    if chosen in {"", "utf-8", "utf8", "utf-8-sig"}:
        text = _decode_utf8_sample(path, sample)
    else:
        try:
            codecs.lookup(chosen)
        except LookupError as exc:
            raise InputError(f"Unknown encoding '{encoding}'.", hint="Try utf-8, latin-1 or cp1252.") from exc
        text = sample.decode(chosen, errors="replace")
        table._utf8_copy = _transcode_to_utf8(path, chosen)
        table.encoding = chosen
    text = text.lstrip("\ufeff")
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise InputError(f"The file {path.name} has no header row.")
    table.delimiter = _sniff_delimiter(text)
    header = next(csv.reader([lines[0]], delimiter=table.delimiter))
    table.columns = [h.strip() for h in header]
    if any(not c for c in table.columns):
        blank = [str(i + 1) for i, c in enumerate(table.columns) if not c]
        raise InputError(f"The file {path.name} has columns without a header (position {', '.join(blank)}).")


def _decode_utf8_sample(path: Path, sample: bytes) -> str:
    # The sample may end inside a multi-byte character: decode incrementally and ignore that tail.
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        return decoder.decode(sample, final=False)
    except UnicodeDecodeError as exc:
        raise InputError(
            f"The file {path.name} is not UTF-8 (invalid byte at offset {exc.start}).",
            hint="Re-run with --encoding latin-1 (or the file's real encoding, e.g. cp1252).",
        ) from None


def _sniff_delimiter(text: str) -> str:
    sample = "\n".join(text.splitlines()[:50])
    try:
        return csv.Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter
    except csv.Error:
        header = text.splitlines()[0]
        counts = {d: header.count(d) for d in DELIMITERS}
        best = max(counts, key=lambda d: counts[d])
        return best if counts[best] else ","


def _transcode_to_utf8(path: Path, encoding: str) -> Path:
    fd, name = tempfile.mkstemp(prefix="crmctl-", suffix=".csv")
    with (
        os.fdopen(fd, "w", encoding="utf-8", newline="") as out,
        path.open(encoding=encoding, newline="") as src,
    ):
        for chunk in iter(lambda: src.read(1 << 20), ""):
            out.write(chunk)
    return Path(name)


def _inspect_other(path: Path, fmt: str) -> list[str]:
    try:
        if fmt == "jsonl":
            with path.open("rb") as fh:
                first = fh.readline()
            try:
                record = json.loads(first)
            except (ValueError, UnicodeDecodeError) as exc:
                raise InputError(f"The first line of {path.name} is not a JSON object.") from exc
            if not isinstance(record, dict):
                raise InputError(f"The first line of {path.name} is not a JSON object.")
            return list(pl.scan_ndjson(path, infer_schema_length=10_000).collect_schema().names())
        if fmt == "parquet":
            return list(pl.read_parquet_schema(path).keys())
        return list(pl.read_excel(path, infer_schema_length=0).columns)
    except InputError:
        raise
    except Exception as exc:  # polars / fastexcel raise many types for a corrupt file
        raise InputError(f"The file {path.name} could not be read as {fmt.upper()}.") from exc


# ---------------------------------------------------------------------------------------------
# Column mapping
# ---------------------------------------------------------------------------------------------


def header_key(header: str) -> str:
    """'E-mail Address' -> 'emailaddress': how headers are compared with aliases."""
    return re.sub(r"[^a-z0-9]", "", header.lower())


def load_mapping(path: Path | str) -> dict[str, str]:
    """A mapping file: TOML or JSON, ``target_field = "Source Header"`` (optionally under [columns])."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"Cannot read the mapping file {path}: {exc.strerror}.") from exc
    try:
        data = json.loads(raw) if path.suffix.lower() == ".json" else tomllib.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(
            f"The mapping file {path.name} is not valid {path.suffix.lstrip('.').upper()}: {exc}."
        ) from exc
    if isinstance(data, dict) and isinstance(data.get("columns"), dict):
        data = data["columns"]
    if not isinstance(data, dict):
        raise InputError(f"The mapping file {path.name} must map field names to column headers.")
    problems = [f"'{k}' must map to a header string" for k, v in data.items() if not isinstance(v, str)]
    if problems:
        raise InputError(f"The mapping file {path.name} has problems: {'; '.join(problems)}.")
    return dict(data)


def resolve_columns(
    headers: Sequence[str],
    aliases: Mapping[str, Sequence[str]],
    override: Mapping[str, str] | None = None,
    *,
    known_fields: Sequence[str] | None = None,
) -> dict[str, str]:
    """Map target fields to the file's headers: ``override`` first, then aliases by header key.

    Raises InputError listing every problem of the override (unknown field, missing header)."""
    override = dict(override or {})
    fields = set(known_fields or aliases)
    problems = [f"unknown field '{k}'" for k in override if k not in fields]
    problems += [
        f"'{k}' names column '{v}', which the file does not have"
        for k, v in override.items()
        if v not in headers
    ]
    if problems:
        raise InputError(f"The column mapping has problems: {'; '.join(problems)}.")
    mapping = dict(override)
    taken = set(mapping.values())
    by_key = {header_key(h): h for h in headers}
    for target, names in aliases.items():
        if target in mapping:
            continue
        for alias in [target, *names]:
            header = by_key.get(header_key(alias))
            if header is not None and header not in taken:
                mapping[target] = header
                taken.add(header)
                break
    return mapping


# ---------------------------------------------------------------------------------------------
# Rejects
# ---------------------------------------------------------------------------------------------

REJECT_SCHEMA = {ROW_COLUMN: pl.Int64, "column": pl.String, "reason": pl.String}


def rejects_for(rows: pl.Series | pl.Expr | Sequence[int], column: str, reason: str) -> pl.DataFrame:
    """Reject rows, all for the same column and reason."""
    series = rows if isinstance(rows, pl.Series) else pl.Series(ROW_COLUMN, rows, dtype=pl.Int64)
    return pl.DataFrame({ROW_COLUMN: series.cast(pl.Int64)}).with_columns(
        pl.lit(column, dtype=pl.String).alias("column"), pl.lit(reason, dtype=pl.String).alias("reason")
    )


def overlong_fields(
    batch: pl.DataFrame, columns: Sequence[str], max_chars: int = MAX_FIELD_CHARS
) -> pl.DataFrame:
    """Rejects for cells longer than ``max_chars`` (one row per offending cell)."""
    parts = [
        rejects_for(
            batch.filter(pl.col(c).str.len_chars() > max_chars)[ROW_COLUMN],
            c,
            f"longer than {max_chars} characters",
        )
        for c in columns
        if c in batch.columns
    ]
    return pl.concat(parts) if parts else pl.DataFrame(schema=REJECT_SCHEMA)


class RejectWriter:
    """Writes ``row,column,reason`` lines to a CSV file as batches are rejected.

    The file is created on the first reject only, so a clean import leaves nothing behind."""

    def __init__(self, path: Path | None) -> None:
        # checked now, before an import writes anything, though the file is created later
        if path is not None and (path.is_dir() or not path.parent.is_dir()):
            raise InputError(
                f"Cannot write the reject file {path}: "
                + ("it is a folder." if path.is_dir() else "its folder does not exist.")
            )
        self.path = path
        self.count = 0
        self.rows: set[int] = set()
        self.batches: list[pl.DataFrame] = []  # row, column, reason: no values, kept for the run
        self._fh: IO[str] | None = None
        self._writer: csv.DictWriter[str] | None = None

    def add(self, rejects: pl.DataFrame) -> None:
        if rejects.height == 0:
            return
        self.rows.update(rejects[ROW_COLUMN].to_list())
        self.count += rejects.height
        self.batches.append(rejects.select(ROW_COLUMN, "column", "reason"))
        if self.path is None:
            return
        if self._fh is None:
            try:
                self._fh = self.path.open("w", encoding="utf-8", newline="")
            except OSError as exc:
                raise InputError(f"Cannot write the reject file {self.path}: {exc.strerror}.") from exc
            self._writer = csv.DictWriter(self._fh, fieldnames=["row", "column", "reason"])
            self._writer.writeheader()
        assert self._writer is not None
        for row, column, reason in rejects.select(ROW_COLUMN, "column", "reason").iter_rows():
            self._writer.writerow({"row": row, "column": column, "reason": reason})

    @property
    def rejected_rows(self) -> int:
        return len(self.rows)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> RejectWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
