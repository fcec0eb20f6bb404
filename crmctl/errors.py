"""Named errors and the exit codes they map to.

Library code raises these; the CLI turns each into one plain sentence on stderr and its exit code.
Messages must never contain personal data (emails, phones, names): say *which row* or *which
column*, never the value.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Documented exit statuses (README, "Exit codes")."""

    OK = 0
    FAILED = 1  # the job ran and failed (verification failed, unexpected error)
    USAGE = 2  # bad arguments, bad input file, bad configuration, unknown id
    REJECTS = 3  # completed, but rejected rows exceeded --max-reject-rate
    LOCKED = 4  # another run holds the job lock
    DATABASE = 5  # database unreachable, not initialised or at the wrong schema version
    INTERRUPTED = 130  # Ctrl-C / SIGINT


class CrmctlError(Exception):
    """Base class: a failure the user can understand from one sentence."""

    exit_code: ExitCode = ExitCode.FAILED

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} {self.hint}"


class UsageError(CrmctlError):
    """Bad arguments or options."""

    exit_code = ExitCode.USAGE


class InputError(CrmctlError):
    """An input file (data, mapping, config, model) cannot be used as given."""

    exit_code = ExitCode.USAGE


class ConfigError(InputError):
    """crmctl.toml or a rules/model file is invalid."""


class NotFoundError(UsageError):
    """An id or name given on the command line does not exist in this tenant."""


class RejectRateExceeded(CrmctlError):
    """The job finished, but too many rows were rejected."""

    exit_code = ExitCode.REJECTS


class LockHeldError(CrmctlError):
    """Another run of the same job holds the lock."""

    exit_code = ExitCode.LOCKED


class DatabaseError(CrmctlError):
    """The database cannot be reached or is not at the schema crmctl needs."""

    exit_code = ExitCode.DATABASE


class VerificationFailed(CrmctlError):
    """A job checked its own work and found a difference (export verify, erasure verify)."""

    exit_code = ExitCode.FAILED


class Aborted(CrmctlError):
    """The user declined a confirmation, or confirmation was needed without a terminal."""

    exit_code = ExitCode.USAGE
