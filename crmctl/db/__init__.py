"""Database access: engine and sessions, models, migrations, row-level security, locks, bulk writes."""
