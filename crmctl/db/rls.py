"""PostgreSQL row-level security: one policy per tenant table, an application role bound by it."""

from __future__ import annotations

from sqlalchemy import Connection, text

POLICY_NAME = "tenant_isolation"
DEFAULT_APP_ROLE = "crmctl_app"

_TENANT_TABLES_SQL = text(
    """
    SELECT c.table_name
    FROM information_schema.columns c
    JOIN information_schema.tables t
      ON t.table_schema = c.table_schema AND t.table_name = c.table_name
    WHERE c.table_schema = current_schema() AND c.column_name = 'tenant_id'
      AND t.table_type = 'BASE TABLE'
    ORDER BY c.table_name
    """
)


def tenant_tables(conn: Connection) -> list[str]:
    return [row[0] for row in conn.execute(_TENANT_TABLES_SQL)]


def apply_policies(conn: Connection) -> list[str]:
    """Enable and force RLS with the tenant policy on every table that has ``tenant_id``.

    Idempotent; later migrations call it again after adding tables."""
    tables = tenant_tables(conn)
    predicate = "tenant_id = current_setting('app.tenant_id', true)"
    for table in tables:
        conn.exec_driver_sql(f'ALTER TABLE "{table}" ENABLE ROW LEVEL SECURITY')
        conn.exec_driver_sql(f'ALTER TABLE "{table}" FORCE ROW LEVEL SECURITY')
        conn.exec_driver_sql(f'DROP POLICY IF EXISTS {POLICY_NAME} ON "{table}"')
        conn.exec_driver_sql(
            f'CREATE POLICY {POLICY_NAME} ON "{table}" USING ({predicate}) WITH CHECK ({predicate})'
        )
    return tables


def ensure_app_role(conn: Connection, role: str = DEFAULT_APP_ROLE) -> None:
    """Create the (NOLOGIN, non-superuser) application role if needed and grant it the tables.

    Roles are cluster-wide, so concurrent migrations of different databases may race to create it:
    the DO block treats "already exists" as success."""
    conn.exec_driver_sql(
        f"""
        DO $$
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
                CREATE ROLE "{role}" NOLOGIN NOSUPERUSER NOBYPASSRLS;
            END IF;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
        END $$;
        """
    )
    conn.exec_driver_sql(f'GRANT USAGE ON SCHEMA public TO "{role}"')
    conn.exec_driver_sql(f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "{role}"')
    conn.exec_driver_sql(f'GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO "{role}"')
    is_super = conn.exec_driver_sql("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").scalar()
    if not is_super:
        conn.exec_driver_sql(
            f"""
            DO $$
            BEGIN
                IF NOT pg_has_role(current_user, '{role}', 'MEMBER') THEN
                    EXECUTE format('GRANT %I TO %I', '{role}', current_user);
                END IF;
            EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
            END $$;
            """
        )


def missing_policies(conn: Connection) -> list[str]:
    """Problems, one sentence each: tenant tables without RLS enabled, forced, or a policy."""
    rows = conn.execute(
        text(
            """
            SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
                   EXISTS (SELECT 1 FROM pg_policies p
                           WHERE p.schemaname = n.nspname AND p.tablename = c.relname
                             AND p.policyname = :policy) AS has_policy
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = current_schema() AND c.relkind = 'r'
            """
        ),
        {"policy": POLICY_NAME},
    ).all()
    state = {r[0]: r for r in rows}
    problems = []
    for table in tenant_tables(conn):
        _, enabled, forced, has_policy = state[table]
        if not enabled:
            problems.append(f"table {table} does not have row-level security enabled")
        if not forced:
            problems.append(f"table {table} does not force row-level security on its owner")
        if not has_policy:
            problems.append(f"table {table} has no {POLICY_NAME} policy")
    return problems
