"""``manifest.json``: what an export folder holds, and checking a folder against it.

The manifest is written last, into the staging folder, just before the folder is renamed into
place: a folder with a manifest is a complete export. ``verify_export`` re-reads every file and
compares its byte count, sha256 and row count with the manifest.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from crmctl.errors import InputError
from crmctl.exporters.sinks import Compression, WrittenFile, compression_of

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
READ_BLOCK = 8 << 20


@dataclass
class Manifest:
    kind: str  # "snapshot" | "contact"
    tool_version: str
    schema_version: str | None
    backend: str
    tenant: str
    snapshot_at: str  # ISO 8601 UTC
    snapshot_id: str | None  # PostgreSQL pg_export_snapshot() id
    isolation: str
    format: str
    compression: str
    neutralised_formulas: bool
    files: list[WrittenFile] = field(default_factory=list)
    manifest_version: int = MANIFEST_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False) + "\n"

    @property
    def total_rows(self) -> int:
        return sum(f.rows for f in self.files)


def write_manifest(folder: Path, manifest: Manifest) -> None:
    path = folder / MANIFEST_NAME
    with open(path, "x", encoding="utf-8") as handle:
        handle.write(manifest.to_json())


def read_manifest(folder: Path) -> Manifest:
    path = folder / MANIFEST_NAME
    if not folder.is_dir():
        raise InputError(f"The export folder {folder} does not exist.")
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        files = [WrittenFile(**entry) for entry in data.pop("files")]
        return Manifest(**data, files=files)
    except FileNotFoundError as exc:
        raise InputError(
            f"The folder {folder} has no {MANIFEST_NAME}: it is not a complete crmctl export."
        ) from exc
    except (ValueError, TypeError, KeyError) as exc:
        raise InputError(f"{path} is not a valid crmctl export manifest.") from exc


@dataclass(frozen=True)
class FileCheck:
    path: str
    table: str
    rows_expected: int
    rows_found: int | None
    bytes_ok: bool
    sha256_ok: bool
    problem: str | None

    @property
    def ok(self) -> bool:
        return self.problem is None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(READ_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _text_stream(path: Path) -> pa.NativeFile:
    compression = compression_of(path)
    raw = pa.OSFile(str(path), "rb")
    if compression is Compression.none:
        return raw
    return pa.CompressedInputStream(raw, compression.value)


def _blocks(stream: pa.NativeFile) -> Iterator[bytes]:
    with stream:
        while block := stream.read(READ_BLOCK):
            yield block


def count_rows(path: Path, entry: WrittenFile) -> int:
    """Rows in an export file, read back in its own format (CSV records may span lines)."""
    name = path.name
    if name.endswith(".parquet"):
        return pq.ParquetFile(path).metadata.num_rows
    if ".csv" in name:
        first = entry.columns[0]
        reader = pacsv.open_csv(
            _text_stream(path),
            read_options=pacsv.ReadOptions(block_size=READ_BLOCK),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(include_columns=[first], column_types={first: pa.string()}),
        )
        return sum(batch.num_rows for batch in reader)
    if ".jsonl" in name:
        return sum(block.count(b"\n") for block in _blocks(_text_stream(path)))
    if name.endswith(".json"):
        document = json.loads(path.read_text(encoding="utf-8"))
        return len(document) if isinstance(document, list) else 1
    raise InputError(f"{name} has an unknown file type.")


def check_file(folder: Path, entry: WrittenFile) -> FileCheck:
    path = folder / entry.path
    if not path.is_file():
        return FileCheck(entry.path, entry.table, entry.rows, None, False, False, "missing")
    bytes_ok = path.stat().st_size == entry.bytes
    sha_ok = _sha256(path) == entry.sha256
    try:
        rows = count_rows(path, entry)
    except (pa.ArrowException, ValueError, OSError):
        return FileCheck(entry.path, entry.table, entry.rows, None, bytes_ok, sha_ok, "unreadable")
    problems = [
        label
        for label, ok in (
            ("size differs", bytes_ok),
            ("sha256 differs", sha_ok),
            ("row count differs", rows == entry.rows),
        )
        if not ok
    ]
    return FileCheck(entry.path, entry.table, entry.rows, rows, bytes_ok, sha_ok, "; ".join(problems) or None)


def verify_export(folder: Path) -> tuple[Manifest, list[FileCheck]]:
    """Check every file listed in the manifest, and flag files the manifest does not list."""
    manifest = read_manifest(folder)
    checks = [check_file(folder, entry) for entry in manifest.files]
    listed = {entry.path for entry in manifest.files} | {MANIFEST_NAME}
    for extra in sorted(p.name for p in folder.iterdir() if p.name not in listed):
        checks.append(FileCheck(extra, "", 0, None, False, False, "not in the manifest"))
    return manifest, checks
