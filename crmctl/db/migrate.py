"""Schema migrations (Alembic, shipped inside the package) and health checks of the schema.

The library is the API: ``crmctl db upgrade`` calls :func:`upgrade`, which calls
``alembic.command.upgrade`` with a connection crmctl opened (as the login role, not the app role).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Index, inspect, text
from sqlalchemy.exc import OperationalError

from crmctl.db import rls
from crmctl.db.engine import Database, connection_error, make_engine
from crmctl.errors import DatabaseError

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Alembic is imported only by the commands that migrate: every other command checks the revision
# with one query and a look at the revision files' assignments (a quarter second less per start).


def alembic_config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


def _revision_ids(path: Path) -> tuple[str, tuple[str, ...]]:
    """(revision, its down revisions) from a revision file's top-level assignments, unexecuted."""
    found: dict[str, object] = {}
    try:
        body = ast.parse(path.read_text(encoding="utf-8")).body
    except SyntaxError as exc:
        raise DatabaseError(f"The migration file {path.name} is not valid Python.") from exc
    for node in body:
        target = node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        if isinstance(target, ast.Name) and target.id in {"revision", "down_revision"} and node.value:
            found[target.id] = ast.literal_eval(node.value)
    revision, down = found.get("revision"), found.get("down_revision")
    if not isinstance(revision, str):
        raise DatabaseError(f"The migration file {path.name} names no revision.")
    downs = (down,) if isinstance(down, str) else tuple(down or ())
    return revision, downs


def head_revision() -> str:
    """The newest revision: the one no other revision names as a ``down_revision``."""
    revisions, parents = set(), set()
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        revision, downs = _revision_ids(path)
        revisions.add(revision)
        parents.update(downs)
    heads = revisions - parents
    if len(heads) != 1:
        raise DatabaseError(f"The migrations have {len(heads)} heads; they must form one line.")
    return heads.pop()


def current_revision(conn: Connection) -> str | None:
    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


@dataclass(frozen=True)
class SchemaStatus:
    backend: str
    current: str | None
    head: str

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


def upgrade(url: str, *, revision: str = "head", app_role: str | None = rls.DEFAULT_APP_ROLE) -> SchemaStatus:
    """Migrate to ``revision``; on PostgreSQL also (re)create the app role and its grants."""
    from alembic import command

    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), revision)
            if conn.dialect.name == "postgresql" and app_role:
                rls.ensure_app_role(conn, app_role)
        with engine.connect() as conn:
            return SchemaStatus(conn.dialect.name, current_revision(conn), head_revision())
    except OperationalError as exc:
        raise connection_error(exc, url) from exc
    finally:
        engine.dispose()


def grant_app_role(url: str, app_role: str = rls.DEFAULT_APP_ROLE) -> None:
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            if conn.dialect.name != "postgresql":
                return
            rls.ensure_app_role(conn, app_role)
    except OperationalError as exc:
        raise connection_error(exc, url) from exc
    finally:
        engine.dispose()


def status(url: str) -> SchemaStatus:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return SchemaStatus(conn.dialect.name, current_revision(conn), head_revision())
    except OperationalError as exc:
        raise connection_error(exc, url) from exc
    finally:
        engine.dispose()


def check(url: str) -> list[str]:
    """Problems with the schema, one sentence each; empty when all is well."""
    engine = make_engine(url)
    problems: list[str] = []
    try:
        with engine.connect() as conn:
            current, head = current_revision(conn), head_revision()
            if current != head:
                problems.append(f"schema is at revision {current or 'none'}, crmctl needs {head}")
            if conn.dialect.name == "postgresql":
                problems += rls.missing_policies(conn)
            else:
                bad = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if bad:
                    problems.append(f"{len(bad)} rows break foreign keys")
            if current == head:
                problems += _missing_index_problems(conn)
                problems += dangling_references(conn)
    except OperationalError as exc:
        raise connection_error(exc, url) from exc
    finally:
        engine.dispose()
    return problems


def missing_indexes(conn: Connection) -> list[Index]:
    """The schema's indexes the database lacks (one catalogue read). A SQLite bulk import drops
    some while it loads and builds them at the end; killed, it leaves them out until the next
    import builds them (``importers.bulk_load``)."""
    from crmctl.db import models  # the models only when asked, not at every command's start

    if conn.dialect.name == "postgresql":
        sql = "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
    else:
        sql = "SELECT name FROM sqlite_master WHERE type = 'index'"
    present = {row[0] for row in conn.exec_driver_sql(sql)}
    return [
        ix
        for table in models.SQLModel.metadata.tables.values()
        for ix in table.indexes
        if ix.name not in present
    ]


def dangling_references(conn: Connection) -> list[str]:
    """The references without a foreign key (``models.UNKEYED_REFERENCES``) that name a row that
    does not exist, one sentence per column; crmctl's own writers never leave one. Counts only,
    never values. PostgreSQL: as the connecting role sees the rows (run it as the owner)."""
    from crmctl.db.models import UNKEYED_REFERENCES

    problems = []
    for table, column, target in UNKEYED_REFERENCES:
        dangling = conn.exec_driver_sql(
            f'SELECT count(*) FROM "{table}" AS r WHERE r."{column}" IS NOT NULL '
            f'AND NOT EXISTS (SELECT 1 FROM "{target}" AS t WHERE t.id = r."{column}")'
        ).scalar()
        if dangling:
            problems.append(f"{dangling} {table} row(s) name a {target} that does not exist ({column})")
    return problems


def _missing_index_problems(conn: Connection) -> list[str]:
    missing = sorted(str(ix.name) for ix in missing_indexes(conn))
    if not missing:
        return []
    count = f"{len(missing)} indexes are" if len(missing) > 1 else "1 index is"
    more = ", …" if len(missing) > 5 else ""
    return [
        f"{count} missing ({', '.join(missing[:5])}{more}): an interrupted bulk import leaves them "
        "out, and the next import builds them"
    ]


def ensure_ready(db: Database, *, app_role: str | None = rls.DEFAULT_APP_ROLE) -> None:
    """Make sure the schema is at head before a command uses it.

    A brand-new SQLite file is migrated on the spot (zero set-up); anything else that is behind
    gets a sentence telling the user to run ``crmctl db upgrade``."""
    try:
        if db.dialect == "sqlite":
            with db.engine.connect() as conn:
                current = current_revision(conn)
                empty = not inspect(conn).get_table_names()
            if current is None and empty:
                upgrade(db.url, app_role=None)
                return
        else:
            admin = make_engine(db.url)
            try:
                with admin.connect() as conn:
                    current = current_revision(conn)
            finally:
                admin.dispose()
    except OperationalError as exc:
        raise connection_error(exc, db.url) from exc
    head = head_revision()
    if current != head:
        raise DatabaseError(
            f"The database schema is at revision {current or 'none'} but crmctl needs {head}.",
            hint="Run 'crmctl db upgrade'.",
        )
