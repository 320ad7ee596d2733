"""`patron sink`: run the built-in SMTP sink until Ctrl-C or SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from lists.errors import InvalidInputError
from patron.cli.app import JsonOption
from patron.cli.output import emit

if TYPE_CHECKING:  # aiosmtpd loads only when the command runs
    from patron.sink import SmtpSink, Stored


def register(app: typer.Typer) -> None:
    app.command("sink")(sink_cmd)


def sink_cmd(
    host: Annotated[str, typer.Option(
        "--host", help="Address to listen on (loopback only, unless --allow-remote).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(
        "--port", min=0, max=65535, help="Port to listen on (0: any free port).")] = 2525,
    maildir: Annotated[Path | None, typer.Option(
        "--maildir", metavar="DIR",
        help="Maildir to store messages in (default: sink/ in the data directory).")] = None,
    allow_remote: Annotated[bool, typer.Option(
        "--allow-remote",
        help="Listen on a non-loopback address too (anyone reaching it can fill the Maildir).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Run a local SMTP server that accepts every message, relays nothing, and stores each one
    in a Maildir; stop it with Ctrl-C. Point Patron at it with PATRON_SMTP__HOST and
    PATRON_SMTP__PORT (their defaults, 127.0.0.1:2525, are the sink's)."""
    from patron.sink import SmtpSink, default_maildir

    try:
        sink = SmtpSink((maildir or default_maildir()).expanduser().resolve(), host, port,
                        allow_remote=allow_remote,
                        on_message=None if as_json else _print_message)
    except InvalidInputError as exc:
        hint = "--host" if "loopback" in str(exc) else "--port"
        raise typer.BadParameter(str(exc), param_hint=f"'{hint}'") from exc
    asyncio.run(_serve(sink, as_json))
    doc = {"host": sink.host, "port": sink.port, "maildir": sink.maildir.path,
           "received": sink.received, "stored": sink.stored}
    emit(doc, as_json, lambda c: c.print(
        f"sink stopped: {_count(sink.received, 'message')} received, "
        f"{_count(sink.stored, 'file')} stored in "
        f"{sink.maildir.path}"))


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


async def _serve(sink: SmtpSink, as_json: bool) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with sink:
        # With --json stdout carries the one final document: the address goes to stderr.
        out = sys.stderr if as_json else sys.stdout
        out.write(f"sink listening on {sink.address}, storing in {sink.maildir.path} "
                  "(Ctrl-C stops)\n")
        out.flush()
        await stop.wait()


def _print_message(stored: Stored) -> None:
    to = ", ".join(stored.recipients)
    sys.stdout.write(f"{datetime.now():%H:%M:%S} {stored.mail_from or '<>'} -> {to} "
                     f"({stored.size:,} bytes)\n")
    sys.stdout.flush()
