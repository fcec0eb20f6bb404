"""Settings: where the database is, which tenant, who acts, and per-domain options.

Resolution order for each setting: command-line option, environment variable, ``crmctl.toml`` in
the working directory, ``crmctl.toml`` in the user config dir (platformdirs), built-in default.
Only this module and ``commands/`` read the environment; library code receives a ``Settings``.
"""

from __future__ import annotations

import getpass
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

import platformdirs

from crmctl.errors import ConfigError

CONFIG_FILE_NAME = "crmctl.toml"
DEFAULT_DATABASE_URL = "sqlite:///crm.db"
DEFAULT_TENANT = "default"


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    tenant: str = DEFAULT_TENANT
    actor: str = "unknown"
    # PostgreSQL role crmctl switches to after connecting, so row-level security binds it even
    # when the login role is a superuser or the tables' owner. Empty string: stay as the login role.
    app_role: str = "crmctl_app"
    # Secret for keyed hashes (erasure pseudonyms, suppression list). Per tenant in [tenants.X].
    erasure_key: str | None = None
    backup_retention_days: int = 35
    default_region: str | None = None
    config_path: Path | None = field(default=None, compare=False)


_ENV = {
    "database_url": "CRMCTL_DATABASE_URL",
    "tenant": "CRMCTL_TENANT",
    "actor": "CRMCTL_ACTOR",
    "app_role": "CRMCTL_APP_ROLE",
    "erasure_key": "CRMCTL_ERASURE_KEY",
    "default_region": "CRMCTL_DEFAULT_REGION",
}
_FILE_KEYS = {f.name for f in fields(Settings)} - {"config_path"}
_TENANT_KEYS = {"erasure_key", "backup_retention_days", "default_region"}


def find_config_file(cwd: Path | None = None) -> Path | None:
    candidates = [
        (cwd or Path.cwd()) / CONFIG_FILE_NAME,
        Path(platformdirs.user_config_dir("crmctl")) / CONFIG_FILE_NAME,
    ]
    return next((p for p in candidates if p.is_file()), None)


def read_config_file(path: Path) -> dict[str, object]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"Cannot read the config file {path}: {exc.strerror}.") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"The config file {path} is not valid TOML: {exc}.") from exc
    problems = [f"unknown key '{k}'" for k in data if k not in _FILE_KEYS and k != "tenants"]
    for name, section in (data.get("tenants") or {}).items():
        if not isinstance(section, dict):
            problems.append(f"[tenants.{name}] must be a table")
            continue
        problems += [f"unknown key '{k}' in [tenants.{name}]" for k in section if k not in _TENANT_KEYS]
    if problems:
        raise ConfigError(f"The config file {path} has problems: {'; '.join(problems)}.")
    return data


def load_settings(
    *,
    database_url: str | None = None,
    tenant: str | None = None,
    actor: str | None = None,
    environ: Mapping[str, str] | None = None,
    config_path: Path | None = None,
) -> Settings:
    """Merge options > environment > config file > defaults into one ``Settings``."""
    env = os.environ if environ is None else environ
    path = config_path or find_config_file()
    file_values: dict[str, object] = read_config_file(path) if path else {}

    def pick(name: str, option: object | None) -> object | None:
        if option is not None:
            return option
        if name in _ENV and env.get(_ENV[name]):
            return env[_ENV[name]]
        return file_values.get(name)

    values: dict[str, object] = {}
    for name in _FILE_KEYS:
        option = {"database_url": database_url, "tenant": tenant, "actor": actor}.get(name)
        value = pick(name, option)
        if value is not None:
            values[name] = value
    values.setdefault("actor", _os_user())
    chosen_tenant = str(values.get("tenant", DEFAULT_TENANT))
    tenant_section = (file_values.get("tenants") or {}).get(chosen_tenant, {})  # type: ignore[union-attr]
    for key in _TENANT_KEYS:
        if key in tenant_section and not (key in _ENV and env.get(_ENV[key])):
            values[key] = tenant_section[key]
    try:
        values["backup_retention_days"] = int(values.get("backup_retention_days", 35))  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise ConfigError("backup_retention_days must be a whole number of days.") from exc
    if not str(chosen_tenant).strip():
        raise ConfigError("The tenant name must not be empty.")
    return Settings(**values, config_path=path)  # type: ignore[arg-type]


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
