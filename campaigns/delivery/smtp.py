"""The SMTP :class:`~campaigns.delivery.protocols.Transport` on aiosmtplib (D3): a pool of
connections reused across messages, STARTTLS or implicit TLS, AUTH, several relays (round-robin,
a refusing relay is skipped for a while), a per-connection message limit, and reconnection when
a server closes with 421 before a transaction starts.

It lives in the domain because it is the delivery engine's own adapter and needs no UI
framework; the shell only builds it from settings. aiosmtplib's ``sendmail`` cannot tell "lost
before the content was complete" from "lost after it": the DATA step is therefore driven here,
so a connection lost after the content was written is reported as OutcomeUnknown."""

from __future__ import annotations

import asyncio
import itertools
import socket
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import aiosmtplib
from aiosmtplib.errors import SMTPException, SMTPResponseException

from campaigns.delivery.outcomes import (
    Accepted,
    ConnectionLost,
    NotStarted,
    OutcomeUnknown,
    Rejected,
    SmtpOutcome,
    Stage,
    split_enhanced,
)
from campaigns.delivery.protocols import CommitPoint, OutgoingMessage

TlsMode = Literal["none", "starttls", "implicit"]


@dataclass(frozen=True, slots=True)
class Relay:
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    relays: tuple[Relay, ...]
    tls: TlsMode = "none"
    username: str | None = None
    password: str | None = None
    pool_size: int = 4
    max_messages_per_connection: int = 100
    timeout: float = 60.0
    verify_certificates: bool = True
    ca_file: Path | None = None
    local_hostname: str | None = None
    relay_down_seconds: float = 30.0


@dataclass(slots=True)
class _Connection:
    client: aiosmtplib.SMTP
    relay: Relay
    sent: int = 0
    smtputf8: bool = False


@dataclass(slots=True)
class TransportStats:
    connections: int = 0
    reconnects_421: int = 0
    connect_failures: int = 0
    by_relay: dict[str, int] = field(default_factory=dict)


def prepare_data(data: bytes) -> bytes:
    """The DATA payload: CRLF line endings, dot-stuffed, with the terminating ``.``.

    Messages from the pipeline already have CRLF line ends and rarely a line starting with a
    dot: counting (no copy) finds that out, and the payload is copied once."""
    crlf = data.count(b"\r\n")
    if data.count(b"\n") != crlf or data.count(b"\r") != crlf:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    end = b".\r\n" if data.endswith(b"\r\n") else b"\r\n.\r\n"
    if data.startswith(b"."):
        data = b"." + data
    if b"\r\n." in data:
        data = data.replace(b"\r\n.", b"\r\n..")
    return data + end


class _Failed(Exception):
    """An outcome reached inside the transaction steps."""

    def __init__(self, outcome: SmtpOutcome) -> None:
        super().__init__(str(outcome))
        self.outcome = outcome


class SmtpTransport:
    """Pooled SMTP delivery; at most ``pool_size`` transactions at once."""

    def __init__(self, config: SmtpConfig) -> None:
        if not config.relays:
            raise ValueError("at least one relay is needed")
        self._cfg = config
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(config.pool_size)
        self._next_relay = itertools.cycle(range(len(config.relays)))
        self._down_until: dict[Relay, float] = {}
        self._tls_context: ssl.SSLContext | None = None
        # aiosmtplib would call getfqdn() (a DNS lookup) on every connection.
        self._hostname = config.local_hostname or socket.gethostname()
        self.stats = TransportStats()

    async def send(self, message: OutgoingMessage, commit_point: CommitPoint) -> SmtpOutcome:
        async with self._slots:
            try:
                conn = await self._take()
            except _Failed as failed:
                return failed.outcome
            keep = False
            try:
                outcome, keep = await self._transaction(conn, message, commit_point)
                return outcome
            finally:
                self._give_back(conn, keep)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await self._quit(conn)

    # -- connections ----------------------------------------------------------------------

    def _context(self) -> ssl.SSLContext:
        if self._tls_context is None:
            context = ssl.create_default_context(
                cafile=str(self._cfg.ca_file) if self._cfg.ca_file else None
            )
            if not self._cfg.verify_certificates:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self._tls_context = context
        return self._tls_context

    async def _take(self) -> _Connection:
        while self._idle:
            conn = self._idle.pop()
            if conn.client.is_connected:
                return conn
        return await self._connect()

    async def _connect(self) -> _Connection:
        cfg = self._cfg
        last_error = "no relay reachable"
        for _ in range(len(cfg.relays)):
            relay = cfg.relays[next(self._next_relay)]
            if self._down_until.get(relay, 0.0) > time.monotonic():
                continue
            client = aiosmtplib.SMTP(
                hostname=relay.host,
                port=relay.port,
                timeout=cfg.timeout,
                use_tls=cfg.tls == "implicit",
                start_tls=cfg.tls == "starttls",
                tls_context=self._context() if cfg.tls != "none" else None,
                local_hostname=self._hostname,
                username=cfg.username,
                password=cfg.password,
            )
            try:
                await client.connect()
                if client.is_ehlo_or_helo_needed:
                    await client.ehlo()
            except SMTPResponseException as exc:
                # Greeting refused, AUTH refused, TLS required …: the session, not the
                # recipient; messages wait for the relay (or the settings) to be fixed.
                client.close()
                self.stats.connect_failures += 1
                last_error = f"{relay.host}:{relay.port}: {exc.code} {exc.message}"
                if len(cfg.relays) > 1:
                    self._down_until[relay] = time.monotonic() + cfg.relay_down_seconds
                continue
            except (SMTPException, OSError, ssl.SSLError, TimeoutError) as exc:
                client.close()
                self.stats.connect_failures += 1
                last_error = f"{relay.host}:{relay.port}: {exc}"
                if len(cfg.relays) > 1:
                    self._down_until[relay] = time.monotonic() + cfg.relay_down_seconds
                continue
            self.stats.connections += 1
            key = f"{relay.host}:{relay.port}"
            self.stats.by_relay[key] = self.stats.by_relay.get(key, 0) + 1
            return _Connection(client, relay, smtputf8=client.supports_extension("smtputf8"))
        raise _Failed(ConnectionLost(last_error, Stage.CONNECT))

    def _give_back(self, conn: _Connection, keep: bool) -> None:
        if keep and conn.client.is_connected and conn.sent < self._cfg.max_messages_per_connection:
            self._idle.append(conn)
            return
        if conn.client.is_connected:
            asyncio.get_running_loop().create_task(self._quit(conn))

    async def _quit(self, conn: _Connection) -> None:
        try:
            await asyncio.wait_for(conn.client.quit(), 5.0)
        except (SMTPException, OSError, TimeoutError):
            conn.client.close()

    # -- one transaction ------------------------------------------------------------------

    async def _transaction(
        self, conn: _Connection, message: OutgoingMessage, commit_point: CommitPoint
    ) -> tuple[SmtpOutcome, bool]:
        """Returns the outcome and whether the connection may be reused."""
        commit_point.begin()
        try:
            conn = await self._mail(conn, message)
            rcpt = b"RCPT TO:<" + self._addr(conn, message.recipient) + b">"
            await self._command(conn, Stage.RCPT, rcpt)
        except _Failed as failed:
            return failed.outcome, await self._reset(conn, failed.outcome)
        if not await commit_point.confirm():
            return NotStarted("refused at the commit point"), await self._reset(conn, None)
        try:
            await self._command(conn, Stage.DATA, b"DATA", expect=354)
        except _Failed as failed:
            return failed.outcome, await self._reset(conn, failed.outcome)
        protocol = conn.client.protocol
        payload = prepare_data(message.data)
        conn.sent += 1
        try:
            if protocol is None:
                raise aiosmtplib.SMTPServerDisconnected("connection lost before the content")
            protocol.write(payload)
        except (SMTPException, OSError) as exc:
            # Nothing (or a truncated message without its final dot) reached the server.
            conn.client.close()
            return ConnectionLost(str(exc), Stage.CONTENT), False
        try:
            reply = await protocol.read_response(timeout=self._cfg.timeout)
        except (SMTPException, OSError, TimeoutError) as exc:
            conn.client.close()
            return OutcomeUnknown(f"{type(exc).__name__}: {exc}"), False
        if reply.code == 250:
            return Accepted(f"{reply.code} {reply.message}".strip()), True
        enhanced, text = split_enhanced(reply.message)
        if reply.code == 421:
            conn.client.close()
            return Rejected(reply.code, enhanced, text, Stage.CONTENT), False
        return Rejected(reply.code, enhanced, text, Stage.CONTENT), True

    def _addr(self, conn: _Connection, address: str) -> bytes:
        try:
            return address.encode("ascii")
        except UnicodeEncodeError:
            return address.encode("utf-8")

    async def _mail(self, conn: _Connection, message: OutgoingMessage) -> _Connection:
        """MAIL FROM, on a fresh connection once if the pooled one went stale or closed with
        421 (a per-connection cap, not an error about us): no content was sent either way."""
        command = b"MAIL FROM:<" + self._addr(conn, message.envelope_from) + b">"
        if message.smtputf8 and conn.smtputf8:
            command += b" SMTPUTF8"
        for retry in (True, False):
            try:
                await self._command(conn, Stage.MAIL, command)
                return conn
            except _Failed as failed:
                outcome = failed.outcome
                stale = isinstance(outcome, ConnectionLost) or (
                    isinstance(outcome, Rejected) and outcome.code == 421
                )
                if not (retry and stale):
                    raise
                if isinstance(outcome, Rejected):
                    self.stats.reconnects_421 += 1
                conn.client.close()
                fresh = await self._connect()
                conn.client, conn.relay, conn.sent = fresh.client, fresh.relay, 0
                conn.smtputf8 = fresh.smtputf8
        raise AssertionError("unreachable")

    async def _command(
        self, conn: _Connection, stage: Stage, command: bytes, expect: int = 250
    ) -> None:
        try:
            reply = await conn.client.execute_command(command)
        except (SMTPException, OSError, TimeoutError) as exc:
            conn.client.close()
            raise _Failed(ConnectionLost(f"{type(exc).__name__}: {exc}", stage)) from exc
        if reply.code == expect or (expect == 250 and reply.code == 251):
            return
        enhanced, text = split_enhanced(reply.message)
        if reply.code == 421:
            conn.client.close()
        raise _Failed(Rejected(reply.code, enhanced, text, stage))

    async def _reset(self, conn: _Connection, outcome: SmtpOutcome | None) -> bool:
        """RSET after an abandoned transaction; whether the connection is still usable."""
        if not conn.client.is_connected:
            return False
        if isinstance(outcome, Rejected) and outcome.code == 421:
            return False
        try:
            reply = await conn.client.execute_command(b"RSET")
        except (SMTPException, OSError, TimeoutError):
            conn.client.close()
            return False
        return reply.code == 250
