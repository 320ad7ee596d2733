"""The root Typer app and the entry point that renders every error as one line."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from sqlalchemy.exc import SQLAlchemyError
from typer._click import exceptions as click_exc  # Typer vendors click since 0.20

from lists.errors import PatronError
from patron.context import AppContext

app = typer.Typer(
    name="patron",
    help="Patron: terminal-first email campaign manager for retention marketing.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="Database URL (else PATRON_DATABASE_URL, else the embedded SQLite). "
        "Accepted before or after the command.",
        metavar="URL",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]


@app.callback()
def _root(ctx: typer.Context, db: DbOption = None) -> None:
    ctx.obj = AppContext(cli_overrides={"database_url": db} if db else {})


def get_ctx(ctx: typer.Context) -> AppContext:
    obj = ctx.find_root().obj
    assert isinstance(obj, AppContext)
    return obj


def _register() -> None:
    from patron.cli import (
        cmd_campaigns,
        cmd_contacts,
        cmd_demo,
        cmd_lists,
        cmd_orders,
        cmd_reports,
        cmd_segments,
        cmd_setup,
        cmd_sink,
    )

    modules = (
        cmd_setup, cmd_lists, cmd_contacts, cmd_orders, cmd_segments, cmd_campaigns, cmd_reports,
        cmd_demo, cmd_sink,
    )
    for module in modules:
        module.register(app)


_register()


def hoist_global_options(argv: list[str]) -> list[str]:
    """Move ``--db URL`` / ``--db=URL`` to the front so it works after the subcommand too."""
    out: list[str] = []
    hoisted: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            out.extend(argv[i:])
            break
        if arg == "--db" and i + 1 < len(argv):
            hoisted += [arg, argv[i + 1]]
            i += 2
            continue
        if arg.startswith("--db="):
            hoisted.append(arg)
        else:
            out.append(arg)
        i += 1
    return hoisted + out


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; every failure is one line on stderr and a non-zero exit code."""
    args = hoist_global_options(list(sys.argv[1:] if argv is None else argv))
    try:
        result = app(args=args, prog_name="patron", standalone_mode=False)
    except click_exc.NoArgsIsHelpError as exc:
        sys.stdout.write(exc.format_message() + "\n")
        return 2
    except click_exc.UsageError as exc:
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
        _fail(f"{exc.format_message()}{hint}")
        return 2
    except click_exc.ClickException as exc:
        _fail(exc.format_message())
        return exc.exit_code or 1
    except typer.Abort:
        _fail("aborted")
        return 130
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except PatronError as exc:
        _fail(str(exc))
        return exc.exit_code
    except SQLAlchemyError as exc:
        _fail(f"database error: {_one_line(exc)}")
        return 1
    except OSError as exc:
        _fail(_one_line(exc))
        return 1
    except KeyboardInterrupt:
        _fail("interrupted")
        return 130
    except Exception as exc:  # the last line of defence: never a traceback for a user
        if os.environ.get("PATRON_DEBUG"):
            raise
        _fail(f"internal error: {type(exc).__name__}: {_one_line(exc)} (PATRON_DEBUG=1 shows more)")
        return 70
    return result if isinstance(result, int) else 0


def _one_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _fail(message: str) -> None:
    sys.stderr.write(f"patron: error: {message}\n")
    sys.stderr.flush()
