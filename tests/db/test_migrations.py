from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import SQLModel

from crmctl.db import migrate
from crmctl.db.engine import make_engine
from crmctl.db.sqlite_ddl import sqlite_columns
from crmctl.errors import DatabaseError


def test_models_and_migrations_agree(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(
                MigrationContext.configure(conn, opts={"compare_type": True}), SQLModel.metadata
            )
    finally:
        engine.dispose()
    if database_url.startswith("sqlite"):
        diff = _without_sqlite_column_order(diff)
    assert diff == [], f"models and migrations disagree: {diff}"


def _without_sqlite_column_order(diff: list) -> list:
    """Drop the remove/add pairs that only say SQLite lists tenant_id last (crmctl.db.sqlite_ddl)."""
    columns = {
        op: {d[1].name: [c.name for c in d[1].columns] for d in diff if d[0] == op}
        for op in ("add_index", "remove_index")
    }
    moved = {
        name
        for name, declared in columns["add_index"].items()
        if columns["remove_index"].get(name) == sqlite_columns(declared)
    }
    return [d for d in diff if not (d[0] in columns and d[1].name in moved)]


def test_upgrade_then_status_via_cli(empty_database_url: str) -> None:
    from tests.conftest import run_cli

    before = run_cli("--db", empty_database_url, "db", "status", "--format", "json")
    assert '"current": null' in before.stdout and '"up_to_date": false' in before.stdout
    run_cli("--db", empty_database_url, "db", "upgrade")
    after = run_cli("--db", empty_database_url, "db", "status", "--format", "json")
    assert f'"current": "{migrate.head_revision()}"' in after.stdout
    assert '"up_to_date": true' in after.stdout
    run_cli("--db", empty_database_url, "db", "check")
    # idempotent
    run_cli("--db", empty_database_url, "db", "upgrade")


def test_commands_refuse_a_database_behind_head(empty_database_url: str, backend: str) -> None:
    from crmctl.commands.common import AppContext
    from crmctl.errors import DatabaseError

    engine = make_engine(empty_database_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE unrelated (x integer)")
    engine.dispose()
    ctx = AppContext(database_url=empty_database_url, environ={})
    try:
        try:
            ctx.database()
        except DatabaseError as exc:
            assert "crmctl db upgrade" in str(exc)
        else:
            raise AssertionError("a database without the schema must be refused")
    finally:
        ctx.close()


def test_new_sqlite_file_is_migrated_on_first_use(tmp_path) -> None:
    from crmctl.commands.common import AppContext

    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    ctx = AppContext(database_url=url, environ={})
    ctx.database()
    ctx.close()
    assert migrate.status(url).up_to_date


def test_head_revision_read_from_the_files_agrees_with_alembic() -> None:
    # Commands check the revision without importing Alembic; both must name the same head.
    from alembic.script import ScriptDirectory

    assert migrate.head_revision() == ScriptDirectory.from_config(migrate.alembic_config()).get_current_head()


def test_revision_files_are_read_however_they_quote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Alembic's template writes repr() (single quotes); a merge revision has a tuple of parents.
    versions = tmp_path / "versions"
    versions.mkdir()
    (versions / "0001_a.py").write_text('revision: str = "0001"\ndown_revision: str | None = None\n')
    (versions / "0002_b.py").write_text("revision = '0002'\ndown_revision = '0001'\n")
    (versions / "0003_c.py").write_text("revision = '0003'\ndown_revision = '0001'\n")
    monkeypatch.setattr(migrate, "MIGRATIONS_DIR", tmp_path)
    with pytest.raises(DatabaseError, match="2 heads"):
        migrate.head_revision()
    (versions / "0004_merge.py").write_text("revision = '0004'\ndown_revision = ('0002', '0003')\n")
    assert migrate.head_revision() == "0004"


def test_db_check_names_missing_indexes(database_url: str) -> None:
    """A killed SQLite bulk import leaves indexes out until the next import; db check says so."""
    from tests.conftest import run_cli

    run_cli("--db", database_url, "db", "check")
    engine = make_engine(database_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP INDEX ix_interaction_tenant_account_at")
    engine.dispose()
    assert migrate.check(database_url) == [
        "1 index is missing (ix_interaction_tenant_account_at): an interrupted bulk import "
        "leaves them out, and the next import builds them"
    ]
    result = run_cli("--db", database_url, "db", "check", expect=1)
    assert "ix_interaction_tenant_account_at" in result.stderr
