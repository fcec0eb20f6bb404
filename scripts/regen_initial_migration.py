"""Regenerate migration 0001 from the models.

Pre-release only (no database has been deployed with 0001 yet): it lets the schema settle without
a pile of tiny migrations. Once released, add new revisions with ``alembic revision --autogenerate``
and never rewrite 0001 again.
"""

import subprocess
import sys
import tempfile

from alembic import command

from crmctl.db.engine import make_engine
from crmctl.db.migrate import MIGRATIONS_DIR, alembic_config

RLS_HOOK = """    # ### end Alembic commands ###
    if op.get_bind().dialect.name == "postgresql":
        rls.apply_policies(op.get_bind())


def downgrade"""


def main() -> None:
    for old in (MIGRATIONS_DIR / "versions").glob("0001_*.py"):
        old.unlink()
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{tmp}/gen.db")
        with engine.begin() as conn:
            command.revision(alembic_config(conn), message="initial schema", autogenerate=True, rev_id="0001")
    path = next((MIGRATIONS_DIR / "versions").glob("0001_*.py"))
    src = path.read_text()
    src = src.replace("    # ### end Alembic commands ###\n\n\ndef downgrade", RLS_HOOK, 1)
    src = src.replace("from alembic import op\n", "from alembic import op\n\nfrom crmctl.db import rls\n", 1)
    src = src.replace("astext_type=Text()", "astext_type=sa.Text()")
    path.write_text(src)
    subprocess.run([sys.executable, "-m", "ruff", "check", "--fix", "-q", str(path)], check=False)
    subprocess.run([sys.executable, "-m", "ruff", "format", "-q", str(path)], check=False)


if __name__ == "__main__":
    main()
