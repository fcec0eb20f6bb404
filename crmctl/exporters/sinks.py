"""Export files written incrementally: bytes are counted and hashed on their way to disk.

A sink takes batches (polars frames, Arrow batches or, for the PostgreSQL CSV fast path, raw CSV
bytes from ``COPY``) and appends them to one file, so memory holds one batch at a time. The
sha256 and byte count in the manifest are of the final file (after compression), computed while
writing rather than by reading the file back.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from crmctl.exporters.columns import CSV_DATETIME_FORMAT, TableSpec, neutralise_formulas

FLUSH_BYTES = 4 << 20  # text formats: write in blocks of about this size


class FileFormat(StrEnum):
    parquet = "parquet"
    csv = "csv"
    jsonl = "jsonl"


class Compression(StrEnum):
    zstd = "zstd"
    gzip = "gzip"
    none = "none"


def file_name(table: str, fmt: FileFormat, compression: Compression) -> str:
    if fmt is FileFormat.parquet or compression is Compression.none:
        return f"{table}.{fmt.value}"
    suffix = {Compression.gzip: "gz", Compression.zstd: "zst"}[compression]
    return f"{table}.{fmt.value}.{suffix}"


def compression_of(path: Path) -> Compression:
    """The stream compression of a text export file, from its name."""
    return {".gz": Compression.gzip, ".zst": Compression.zstd}.get(path.suffix, Compression.none)


@dataclass(frozen=True)
class WrittenFile:
    table: str
    path: str  # relative to the export folder
    rows: int
    bytes: int
    sha256: str
    columns: list[str]


class HashingFile(io.RawIOBase):
    """A write-only file that hashes and counts every byte it writes (and fsyncs on close)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._file: BinaryIO = open(path, "xb")  # noqa: SIM115 - closed in close()
        self.sha256 = hashlib.sha256()
        self.size = 0
        self._abandoned = False

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(data)
        if self._abandoned:
            return view.nbytes
        self._file.write(view)
        self.sha256.update(view)
        self.size += view.nbytes
        return view.nbytes

    def tell(self) -> int:
        return self.size

    def close(self) -> None:
        if not self.closed:
            try:
                self._file.flush()
                os.fsync(self._file.fileno())
            finally:
                self._file.close()
        super().close()

    def abandon(self) -> None:
        """Close without syncing (after an error; the whole staging folder is removed)."""
        self._abandoned = True
        if not self.closed:
            self._file.close()
        super().close()


class TableSink:
    """One table's file in one format; ``close()`` returns what was written."""

    def __init__(
        self,
        folder: Path,
        spec: TableSpec,
        fmt: FileFormat,
        compression: Compression,
        *,
        neutralise: bool,
    ) -> None:
        self.spec = spec
        self.fmt = fmt
        self.neutralise = neutralise and fmt is FileFormat.csv
        self.name = file_name(spec.name, fmt, compression)
        self.rows = 0
        self._raw = HashingFile(folder / self.name)
        self._parquet: pq.ParquetWriter | None = None
        self._stream: pa.NativeFile | None = None
        self._header_written = False
        if fmt is FileFormat.parquet:
            codec = None if compression is Compression.none else compression.value
            self._parquet = pq.ParquetWriter(
                pa.PythonFile(self._raw, mode="w"), spec.arrow_schema, compression=codec
            )
        elif compression is not Compression.none:
            self._stream = pa.CompressedOutputStream(pa.PythonFile(self._raw, mode="w"), compression.value)

    # -- input ---------------------------------------------------------------------------------
    def write_frame(self, frame: pl.DataFrame) -> None:
        """Append a batch whose columns are the table's, typed as ``spec.polars_schema``."""
        if self._parquet is not None:
            self._parquet.write_table(frame.to_arrow().cast(self.spec.arrow_schema))
        else:
            buffer = io.BytesIO()
            if self.fmt is FileFormat.csv:
                if self.neutralise:
                    frame = neutralise_formulas(frame, self.spec)
                frame.write_csv(
                    buffer,
                    include_header=not self._header_written,
                    datetime_format=CSV_DATETIME_FORMAT,
                    date_format="%Y-%m-%d",
                )
                self._header_written = True
            else:
                frame.write_ndjson(buffer)
            self._write_text(buffer.getbuffer())
        self.rows += frame.height

    def write_arrow(self, batch: pa.RecordBatch) -> None:
        if self._parquet is not None:
            self._parquet.write_batch(batch.cast(self.spec.arrow_schema))
            self.rows += batch.num_rows
        else:
            frame = pl.from_arrow(batch)
            assert isinstance(frame, pl.DataFrame)
            self.write_frame(frame)

    def write_csv_bytes(self, block: bytes | bytearray | memoryview) -> None:
        """A block of raw CSV (the header included in the first) from PostgreSQL COPY."""
        self._header_written = True
        self._write_text(block)

    def set_rows(self, rows: int) -> None:
        self.rows = rows

    def _write_text(self, data: bytes | bytearray | memoryview) -> None:
        if self._stream is not None:
            self._stream.write(data)
        else:
            self._raw.write(data)

    # -- output --------------------------------------------------------------------------------
    def close(self) -> WrittenFile:
        if self._parquet is not None:
            self._parquet.close()
        else:
            if self.fmt is FileFormat.csv and not self._header_written:  # an empty table: header only
                self._write_text((",".join(self.spec.column_names) + "\n").encode())
            if self._stream is not None:
                self._stream.close()
        self._raw.close()
        return WrittenFile(
            table=self.spec.name,
            path=self.name,
            rows=self.rows,
            bytes=self._raw.size,
            sha256=self._raw.sha256.hexdigest(),
            columns=self.spec.column_names,
        )

    def abandon(self) -> None:
        self._raw.abandon()
        if self._parquet is not None:
            # close now so that its finaliser does not write to the closed file later
            with contextlib.suppress(OSError, ValueError, pa.ArrowException):
                self._parquet.close()
