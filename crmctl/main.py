"""The crmctl command: assembles the command families and turns errors into exit codes."""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from typing import Annotated, Any

import typer
from sqlalchemy.exc import DatabaseError, OperationalError, SQLAlchemyError
from typer.core import TyperGroup

from crmctl import __version__
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


# Command families, loaded on first use so that a cron job running one command does not import
# every other family (and its dependencies). name -> (module, attribute): a Typer app, or a
# ``register_top_level_commands(app)`` function that adds a single command of that name.
FAMILIES: dict[str, tuple[str, str]] = {
    "import": ("crmctl.commands.imports", "app"),
    "sources": ("crmctl.commands.lead_import", "sources_app"),
    "resolve": ("crmctl.commands.lead_import", "register_top_level_commands"),
    "merges": ("crmctl.commands.lead_import", "merges_app"),
    "review": ("crmctl.commands.lead_import", "review_app"),
    "imports": ("crmctl.commands.lead_import", "runs_app"),
    "report": ("crmctl.commands.report", "app"),
    "pipeline": ("crmctl.commands.report", "pipeline_app"),
    "health": ("crmctl.commands.health", "app"),
    "export": ("crmctl.commands.export", "app"),
    "erasure": ("crmctl.commands.erasure", "app"),
    "retention": ("crmctl.commands.erasure", "retention_app"),
    "demo": ("crmctl.commands.graph_import", "register_top_level_commands"),
    "db": ("crmctl.commands.db", "app"),
}


def load_family(name: str) -> Any:
    module_name, attribute = FAMILIES[name]
    target = getattr(importlib.import_module(module_name), attribute)
    if isinstance(target, typer.Typer):
        group = typer.main.get_group(target)
        group.name = name
        return group
    holder = typer.Typer()
    target(holder)
    return typer.main.get_group(holder).commands[name]


class CrmctlGroup(TyperGroup):
    """Root group: hoists global options, loads command families lazily, and maps every error to
    one sentence and an exit code."""

    def list_commands(self, ctx: Any) -> list[str]:
        return list(FAMILIES) if self.name == "crmctl" else super().list_commands(ctx)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in self.commands and cmd_name in FAMILIES and self.name == "crmctl":
            self.commands[cmd_name] = load_family(cmd_name)
        return super().get_command(ctx, cmd_name)

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_global_options(list(args)))

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except CrmctlError as exc:
            _report(ctx, str(exc), exc)
            raise typer.Exit(int(exc.exit_code)) from None
        except BrokenPipeError:
            # the reader of stdout went away (`crmctl report pipeline | head`): stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(0) from None
        except KeyboardInterrupt:
            _report(ctx, "Interrupted; the current transaction was rolled back.", None)
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
        except OperationalError as exc:
            _report(
                ctx, "The database reported an operational error (unreachable, locked or out of space).", exc
            )
            raise typer.Exit(int(ExitCode.DATABASE)) from None
        except DatabaseError as exc:
            if not _not_a_database(exc):
                _report(ctx, f"The database refused the operation ({type(exc).__name__}).", exc)
                raise typer.Exit(int(ExitCode.FAILED)) from None
            _report(ctx, "The SQLite file given with --db is not a database (or is damaged).", exc)
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


def _not_a_database(exc: DatabaseError) -> bool:
    """SQLite's "file is not a database" (a CSV given as --db, say): the driver's fixed text, no data."""
    return "file is not a database" in str(getattr(exc, "orig", "") or "")


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


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.stderr.write("Interrupted.\n")
        sys.exit(int(ExitCode.INTERRUPTED))


if __name__ == "__main__":
    main()
