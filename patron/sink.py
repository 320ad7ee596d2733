"""The built-in SMTP sink (`patron sink`, and the demo's): an aiosmtpd server on loopback that
accepts every message, relays nothing, and stores each one in a Maildir so what was "sent" can
be opened with any mail client or read as files.

Each recipient of a message gets its own file in ``new/``, as a local delivery agent writes it:
a ``Return-Path`` and a ``Delivered-To`` line (the SMTP envelope) followed by the message
exactly as received, after the SMTP dot-unstuffing (CRLF line ends kept, so a DKIM signature
still verifies). The sink replies 250 only once the file is in place. It does not fsync: it is
a tool to look at mail, not a mail server to trust with it."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lists.errors import InvalidInputError, PatronError
from patron.settings import data_dir

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 2525
# What the sink advertises in SIZE and refuses beyond (aiosmtpd's default, 32 MiB).
DEFAULT_SIZE_LIMIT = 2**25


def default_maildir() -> Path:
    """Where `patron sink` stores messages unless told otherwise."""
    return data_dir() / "sink"


def check_host(host: str, *, allow_remote: bool = False) -> None:
    """Refuse a host that is not loopback (the sink accepts mail from anyone who reaches it)
    unless ``allow_remote`` says so; InvalidInputError with the reason."""
    if allow_remote or _is_loopback(host):
        return
    raise InvalidInputError(
        f"{host} is not a loopback address: the sink accepts any message from anyone who can "
        "reach it (use --allow-remote to listen there anyway)"
    )


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def _reason(exc: OSError) -> str:
    return os.strerror(exc.errno).lower() if exc.errno else str(exc)


class Maildir:
    """A Maildir (``tmp/``, ``new/``, ``cur/``) that messages are delivered into."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._host = socket.gethostname().replace("/", r"\057").replace(":", r"\072")
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    def create(self) -> None:
        """Make the directories (private to the user: mail holds personal data)."""
        for sub in ("tmp", "new", "cur"):
            (self.path / sub).mkdir(mode=0o700, parents=True, exist_ok=True)

    def deliver(self, data: bytes) -> Path:
        """Write ``data`` to ``tmp/`` and move it to ``new/`` under a unique name."""
        with self._lock:
            n = next(self._counter)
        now = time.time()
        name = f"{int(now)}.M{int(now % 1 * 1e6)}P{os.getpid()}Q{n}.{self._host}"
        tmp, new = self.path / "tmp" / name, self.path / "new" / name
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.rename(tmp, new)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return new

    def messages(self) -> list[Path]:
        """The delivered message files (``new/`` and ``cur/``), oldest name first."""
        found = [p for sub in ("new", "cur") if (self.path / sub).is_dir()
                 for p in (self.path / sub).iterdir() if p.is_file()]
        return sorted(found, key=lambda p: p.name)

    def clear(self) -> None:
        """Remove the delivered and half-written message files (not the directories)."""
        for sub in ("tmp", "new", "cur"):
            folder = self.path / sub
            if folder.is_dir():
                for p in folder.iterdir():
                    if p.is_file():
                        p.unlink()


@dataclass(frozen=True, slots=True)
class Stored:
    """One message the sink accepted, as stored."""

    mail_from: str
    recipients: tuple[str, ...]
    size: int
    files: tuple[Path, ...]


def trace_headers(mail_from: str, recipient: str) -> bytes:
    """The envelope lines a delivery agent puts before the message."""
    return f"Return-Path: <{mail_from}>\r\nDelivered-To: {recipient}\r\n".encode()


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data: bytes = envelope.original_content or b""
        mail_from = str(envelope.mail_from or "")
        recipients = tuple(str(r) for r in envelope.rcpt_tos)
        try:
            files = await asyncio.to_thread(self.sink.store, mail_from, recipients, data)
        except OSError as exc:
            # Nothing was accepted: the client keeps the message and may try again.
            return f"451 4.3.0 cannot store the message: {_reason(exc)}"
        self.sink.note(Stored(mail_from, recipients, len(data), files))
        return "250 2.0.0 Ok: stored by the Patron sink"


class SmtpSink:
    """The sink on ``host``:``port`` (0: a free port, see :attr:`port` once started), storing
    into ``maildir``. Use ``async with`` (or ``start``/``stop``) inside a running event loop;
    ``on_message`` is called in the loop for each message stored."""

    def __init__(
        self,
        maildir: Path,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        *,
        allow_remote: bool = False,
        size_limit: int = DEFAULT_SIZE_LIMIT,
        on_message: Callable[[Stored], None] | None = None,
    ) -> None:
        check_host(host, allow_remote=allow_remote)
        if not 0 <= port <= 65535:
            raise InvalidInputError(f"port {port} is not between 0 and 65535")
        self.maildir = Maildir(maildir)
        self.host = host
        self.port = port
        self.size_limit = size_limit
        self.received = 0  # messages accepted (SMTP transactions)
        self.stored = 0  # files written (one per recipient)
        self._on_message = on_message
        self._server: asyncio.AbstractServer | None = None
        self._sessions: weakref.WeakSet[Any] = weakref.WeakSet()

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def store(self, mail_from: str, recipients: tuple[str, ...], data: bytes) -> tuple[Path, ...]:
        return tuple(
            self.maildir.deliver(trace_headers(mail_from, rcpt) + data) for rcpt in recipients
        )

    def note(self, stored: Stored) -> None:
        self.received += 1
        self.stored += len(stored.files)
        if self._on_message is not None:
            self._on_message(stored)

    async def start(self) -> None:
        from aiosmtpd.smtp import SMTP

        try:
            self.maildir.create()
        except OSError as exc:
            raise PatronError(f"cannot create the Maildir {self.maildir.path}: {_reason(exc)}"
                              ) from exc
        loop = asyncio.get_running_loop()
        handler = _Handler(self)
        name = socket.gethostname() or "localhost"

        def session() -> SMTP:
            # decode_data off: 8BITMIME is advertised and bodies are kept as bytes.
            smtp = SMTP(handler, hostname=name, ident="Patron sink", enable_SMTPUTF8=True,
                        data_size_limit=self.size_limit, loop=loop)
            self._sessions.add(smtp)
            return smtp

        try:
            self._server = await loop.create_server(session, self.host, self.port)
        except OSError as exc:
            raise PatronError(f"cannot listen on {self.address}: {_reason(exc)}") from exc
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop listening and close the open sessions (a message whose content was not
        acknowledged yet is not stored: its sender still holds it)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for smtp in list(self._sessions):
            transport = getattr(smtp, "transport", None)
            if transport is not None:
                transport.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 5)
        await asyncio.sleep(0)  # let the sessions see their connection go

    async def __aenter__(self) -> SmtpSink:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
