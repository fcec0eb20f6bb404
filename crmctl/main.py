"""The crmctl command: assembles the command families and turns errors into exit codes."""

from __future__ import annotations

import sys
import traceback
from typing import Annotated, Any

import typer
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from typer.core import TyperGroup

from crmctl import __version__
from crmctl.commands import db as db_commands
from crmctl.commands import erasure, export, graph_import, health, imports, lead_import, report
from crmctl.commands.common import AppContext
from crmctl.errors import CrmctlError, ExitCode

# Global options may be written anywhere on the line (`crmctl import leads f.csv --db x`): they are
# moved in front of the subcommand before parsing.
_GLOBAL_VALUE_OPTIONS = {"--db", "--tenant", "--actor"}
_GLOBAL_FLAGS = {"--quiet", "-q", "--verbose", "-v"}


def hoist_global_options(args: list[str]) -> list[str]:
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest += args[i:]
            break
        name = arg.split("=", 1)[0]
        if name in _GLOBAL_VALUE_OPTIONS:
            if "=" in arg:
                front.append(arg)
            else:
                front += args[i : i + 2]
                i += 1
        elif arg in _GLOBAL_FLAGS:
            front.append(arg)
        else:
            rest.append(arg)
        i += 1
    return front + rest


class CrmctlGroup(TyperGroup):
    """Root group: hoists global options and maps every error to one sentence and an exit code."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_global_options(list(args)))

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except CrmctlError as exc:
            _report(ctx, str(exc), exc)
            raise typer.Exit(int(exc.exit_code)) from None
        except KeyboardInterrupt:
            _report(ctx, "Interrupted; the current transaction was rolled back.", None)
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
        except OperationalError as exc:
            _report(
                ctx, "The database reported an operational error (unreachable, locked or out of space).", exc
            )
            raise typer.Exit(int(ExitCode.DATABASE)) from None
        except SQLAlchemyError as exc:
            # Driver messages can quote row values: show only the class unless --verbose.
            _report(ctx, f"The database refused the operation ({type(exc).__name__}).", exc)
            raise typer.Exit(int(ExitCode.FAILED)) from None
        except (typer.Exit, typer.Abort):
            raise
        except Exception as exc:
            if _is_usage_error(exc):
                raise
            _report(ctx, f"Unexpected error ({type(exc).__name__}).", exc)
            raise typer.Exit(int(ExitCode.FAILED)) from None
        finally:
            obj = ctx.obj
            if isinstance(obj, AppContext):
                obj.close()


def _is_usage_error(exc: Exception) -> bool:
    # typer's vendored click usage errors carry their own exit code 2 and message
    return hasattr(exc, "exit_code") and hasattr(exc, "show")


def _report(ctx: Any, sentence: str, exc: BaseException | None) -> None:
    obj = ctx.obj if isinstance(ctx.obj, AppContext) else AppContext()
    obj.err.print(f"[red]error:[/red] {sentence}", highlight=False, markup=True)
    if exc is not None and obj.verbose:
        obj.err.print("".join(traceback.format_exception(exc)), markup=False, highlight=False)
    elif exc is not None and not isinstance(exc, CrmctlError):
        obj.err.print("Re-run with --verbose for the details.", style="dim")


app = typer.Typer(
    cls=CrmctlGroup,
    name="crmctl",
    help="A command-line CRM toolkit for data operations.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # locals hold personal data; tracebacks only with --verbose
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Exit codes: 0 ok, 1 failed, 2 usage or bad input, 3 too many rejected rows, "
    "4 another run holds the lock, 5 database unreachable or not upgraded, 130 interrupted.",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"crmctl {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    db: Annotated[
        str | None,
        typer.Option(
            "--db", help="Database URL (sqlite:///crm.db, postgresql://…). Env: CRMCTL_DATABASE_URL."
        ),
    ] = None,
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="Tenant to act on. Env: CRMCTL_TENANT.")
    ] = None,
    actor: Annotated[
        str | None, typer.Option("--actor", help="Who is acting, for the audit log. Env: CRMCTL_ACTOR.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only data and errors; no messages.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks on errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """crmctl: import, resolve, report, score, export and erase CRM data on SQLite or PostgreSQL.

    Configuration comes from options, then CRMCTL_* environment variables, then crmctl.toml.
    """
    ctx.obj = AppContext(database_url=db, tenant=tenant, actor=actor, quiet=quiet, verbose=verbose)


app.add_typer(imports.app, name="import")
app.add_typer(lead_import.sources_app, name="sources")
app.add_typer(lead_import.merges_app, name="merges")
app.add_typer(lead_import.review_app, name="review")
app.add_typer(lead_import.runs_app, name="imports")
lead_import.register_top_level_commands(app)
app.add_typer(report.app, name="report")
app.add_typer(report.pipeline_app, name="pipeline")
app.add_typer(health.app, name="health")
app.add_typer(export.app, name="export")
app.add_typer(erasure.app, name="erasure")
app.add_typer(erasure.retention_app, name="retention")
graph_import.register_top_level_commands(app)
app.add_typer(db_commands.app, name="db")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.stderr.write("Interrupted.\n")
        sys.exit(int(ExitCode.INTERRUPTED))


if __name__ == "__main__":
    main()
