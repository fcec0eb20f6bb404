from pathlib import Path

from crmctl import __version__
from crmctl.config import load_settings
from crmctl.main import hoist_global_options
from tests.conftest import run_cli


def test_version() -> None:
    assert run_cli("--version").stdout.strip() == f"crmctl {__version__}"


def test_help_lists_every_command_family() -> None:
    out = run_cli("--help").stdout
    for family in ["import", "report", "health", "export", "erasure", "db", "sources", "merges", "review"]:
        assert f" {family} " in out


def test_bad_url_is_a_usage_error_in_one_sentence() -> None:
    result = run_cli("--db", "mysql://x/y", "db", "status", expect=2)
    assert "Unsupported database 'mysql'" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_unreachable_server_exits_5_without_password() -> None:
    result = run_cli("--db", "postgresql://u:s3cret@127.0.0.1:1/x", "db", "status", expect=5)
    assert "Cannot connect to the database" in result.stderr
    assert "s3cret" not in result.stderr


def test_missing_sqlite_folder_is_a_clear_error(tmp_path: Path) -> None:
    result = run_cli("--db", f"sqlite:///{tmp_path}/nope/crm.db", "db", "status", expect=5)
    assert "does not exist" in result.stderr


def test_a_file_that_is_not_a_database_exits_5_in_one_sentence(tmp_path: Path) -> None:
    leads = tmp_path / "leads.csv"
    leads.write_text("email,first_name\nann@example.com,Ann\n" * 200)
    result = run_cli("--db", f"sqlite:///{leads}", "imports", "list", expect=5)
    assert "is not a database" in result.stderr and "ann@" not in result.stderr
    assert "Traceback" not in result.stderr


def test_global_options_can_follow_the_subcommand() -> None:
    assert hoist_global_options(["db", "status", "--db", "sqlite:///x.db", "-q", "--tenant=t"]) == [
        "--db",
        "sqlite:///x.db",
        "-q",
        "--tenant=t",
        "db",
        "status",
    ]
    assert hoist_global_options(["import", "leads", "--", "--db"]) == ["import", "leads", "--", "--db"]


def test_settings_precedence(tmp_path: Path) -> None:
    cfg = tmp_path / "crmctl.toml"
    cfg.write_text(
        'database_url = "sqlite:///file.db"\ntenant = "acme"\n[tenants.acme]\nerasure_key = "k1"\n'
    )
    from_file = load_settings(environ={}, config_path=cfg)
    assert (from_file.database_url, from_file.tenant, from_file.erasure_key) == (
        "sqlite:///file.db",
        "acme",
        "k1",
    )
    env = {"CRMCTL_DATABASE_URL": "sqlite:///env.db", "CRMCTL_TENANT": "other"}
    from_env = load_settings(environ=env, config_path=cfg)
    assert (from_env.database_url, from_env.tenant, from_env.erasure_key) == (
        "sqlite:///env.db",
        "other",
        None,
    )
    from_opt = load_settings(database_url="sqlite:///opt.db", environ=env, config_path=cfg)
    assert from_opt.database_url == "sqlite:///opt.db"
    assert load_settings(environ={}, config_path=None).database_url in {
        "sqlite:///crm.db",
        from_file.database_url,
    }


def test_bad_config_lists_every_problem(tmp_path: Path) -> None:
    cfg = tmp_path / "crmctl.toml"
    cfg.write_text('databse_url = "x"\ntenantt = "y"\n')
    from crmctl.errors import ConfigError

    try:
        load_settings(environ={}, config_path=cfg)
    except ConfigError as exc:
        assert "unknown key 'databse_url'" in str(exc) and "unknown key 'tenantt'" in str(exc)
    else:
        raise AssertionError("an unknown key must be refused")


def test_unreadable_config_in_working_dir_is_one_sentence(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "crmctl.toml").write_text("this is = = not toml")
    result = run_cli("db", "status", expect=2)
    assert "not valid TOML" in result.stderr
