"""Writing an export folder atomically: a staging folder beside the target, renamed when complete.

An export that fails or is interrupted removes its staging folder and leaves the target as it was
(absent, or the previous export when ``--force`` replaces one). A process killed outright leaves
only a hidden ``.NAME.partial-*`` folder beside the target, never a half-written target.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from crmctl.errors import CrmctlError, UsageError


class ExportWriteError(CrmctlError):
    """The export could not be written (disk full, permission denied, I/O error)."""


def write_error(exc: OSError, target: Path) -> CrmctlError:
    """One sentence for a file-system failure; the target was left untouched."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        reason = "the disk is full"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        reason = "permission denied"
    else:
        reason = f"an I/O error occurred ({errno.errorcode.get(exc.errno or 0, 'unknown')})"
    return ExportWriteError(
        f"Could not write the export to {target}: {reason}; nothing was written there.",
        hint="Free some space or choose another folder with --out.",
    )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def can_write_in(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)


def check_target(target: Path, *, force: bool) -> None:
    if target.exists() and not target.is_dir():
        raise UsageError(f"{target} exists and is not a folder.", hint="Choose another path with --out.")
    if target.exists() and not force:
        raise UsageError(
            f"The folder {target} already exists.",
            hint="Choose a new folder, or pass --force to replace it once the new export is complete.",
        )
    parent = target.parent
    if not parent.is_dir():
        raise UsageError(f"The folder {parent} does not exist.", hint="Create it first.")
    if not can_write_in(parent):
        raise UsageError(f"Cannot write in {parent}: permission denied.", hint="Choose another --out.")


@contextmanager
def staged_folder(target: Path, *, force: bool) -> Iterator[Path]:
    """Yield an empty staging folder; on success it becomes ``target``, on any error it is removed."""
    target = target.expanduser().absolute()
    check_target(target, force=force)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    except OSError as exc:
        raise write_error(exc, target) from exc
    try:
        yield staging
        _fsync_dir(staging)
        if target.exists():  # --force: swap in the new export, then drop the old one
            previous = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            target.rename(previous)
            staging.rename(target)
            shutil.rmtree(previous, ignore_errors=True)
        else:
            staging.rename(target)
        _fsync_dir(target.parent)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise write_error(exc, target) from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
