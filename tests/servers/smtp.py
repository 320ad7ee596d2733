"""A fault-injecting SMTP server (aiosmtpd) on 127.0.0.1 with a ledger of accepted messages.

Faults: 421 and disconnect after every N messages, 451 greylisting of each recipient's first
attempt, 452 on RCPT, 550 5.1.1 and 554 5.7.1 for given recipients, slow replies, the connection
dropped after the content was received (recorded as accepted or not), optional STARTTLS and
AUTH. It runs its own event loop in a thread, so workers in other processes can use it too."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import threading
import warnings
from collections import Counter
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from pathlib import Path

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword


@dataclass
class Faults:
    disconnect_every: int | None = None  # after every N accepted messages: 421 at the next MAIL
    greylist: bool = False  # 451 4.7.1 on the first RCPT of each recipient
    rcpt_452_once: set[str] = field(default_factory=set)  # 452 4.5.3 on their first RCPT
    user_unknown: set[str] = field(default_factory=set)  # 550 5.1.1 on RCPT
    policy_block: set[str] = field(default_factory=set)  # 554 5.7.1 on RCPT
    drop_after_data: set[str] = field(default_factory=set)  # content received, no reply
    drop_keeps_message: bool = True  # …and the message was accepted all the same
    reply_delay: float = 0.0  # seconds before each reply to MAIL, RCPT and the content


@dataclass(frozen=True)
class Received:
    mail_from: str
    recipient: str
    message_id: str | None
    data: bytes


class _Handler:
    def __init__(self, server: FaultySmtpServer) -> None:
        self.server = server

    async def handle_MAIL(self, smtp, session, envelope, address, options):
        faults = self.server.faults
        await self._delay()
        with self.server.lock:
            due = faults.disconnect_every and self.server.since_disconnect >= faults.disconnect_every
            if due:
                self.server.since_disconnect = 0
                self.server.disconnects += 1
        if due:
            asyncio.get_running_loop().call_later(0.005, smtp.transport.close)
            return "421 4.7.0 Too many messages on this connection, closing"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, smtp, session, envelope, address, options):
        faults = self.server.faults
        await self._delay()
        with self.server.lock:
            self.server.rcpt_attempts[address] += 1
            first = self.server.rcpt_attempts[address] == 1
        if address in faults.user_unknown:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if address in faults.policy_block:
            return "554 5.7.1 Service unavailable; client host blocked using a blocklist"
        if first and address in faults.rcpt_452_once:
            return "452 4.5.3 Too many recipients"
        if first and faults.greylist:
            return "451 4.7.1 Greylisted, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, smtp, session, envelope):
        faults = self.server.faults
        await self._delay()
        dropped = any(r in faults.drop_after_data for r in envelope.rcpt_tos)
        if not dropped or faults.drop_keeps_message:
            self.server.record(envelope)
        if dropped:
            smtp.transport.abort()
        return "250 2.0.0 Ok: queued"

    async def _delay(self) -> None:
        if self.server.faults.reply_delay:
            await asyncio.sleep(self.server.faults.reply_delay)


class FaultySmtpServer:
    """Start with ``start()`` (or as a context manager); ``ledger`` lists accepted messages."""

    def __init__(
        self,
        faults: Faults | None = None,
        *,
        tls_cert: tuple[Path, Path] | None = None,
        require_auth: tuple[str, str] | None = None,
        implicit_tls: bool = False,
    ) -> None:
        self.faults = faults or Faults()
        self.tls_cert = tls_cert
        self.implicit_tls = implicit_tls
        self.require_auth = require_auth
        self.lock = threading.Lock()
        self.ledger: list[Received] = []
        self.rcpt_attempts: Counter[str] = Counter()
        self.since_disconnect = 0
        self.disconnects = 0
        self.connections = 0
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None

    def record(self, envelope: Envelope) -> None:
        data = envelope.original_content or b""
        headers = BytesHeaderParser().parsebytes(data)
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.ledger.append(
                    Received(envelope.mail_from or "", rcpt, headers.get("Message-ID"), data)
                )
            self.since_disconnect += 1

    def received(self) -> Counter[str]:
        """How many times each recipient was accepted."""
        with self.lock:
            return Counter(r.recipient for r in self.ledger)

    def _factory(self) -> SMTP:
        self.connections += 1
        kwargs: dict[str, object] = {"hostname": "mx.test", "enable_SMTPUTF8": True}
        if self.tls_cert is not None and not self.implicit_tls:
            kwargs.update(tls_context=self._tls_context(), require_starttls=True)
        if self.require_auth is not None:
            user, password = self.require_auth

            def check(server, session, envelope, mechanism, auth_data):
                ok = isinstance(auth_data, LoginPassword) and (
                    auth_data.login.decode() == user and auth_data.password.decode() == password
                )
                return AuthResult(success=ok)

            kwargs.update(authenticator=check, auth_required=True,
                          auth_require_tls=self.tls_cert is not None and not self.implicit_tls)
        with warnings.catch_warnings():
            # aiosmtpd cannot see implicit TLS and warns about AUTH without STARTTLS.
            warnings.simplefilter("ignore", UserWarning)
            return SMTP(_Handler(self), **kwargs)

    def _tls_context(self) -> ssl.SSLContext:
        assert self.tls_cert is not None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(self.tls_cert[0]), str(self.tls_cert[1]))
        return context

    def start(self) -> FaultySmtpServer:
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            context = self._tls_context() if self.implicit_tls else None
            self._server = loop.run_until_complete(
                loop.create_server(self._factory, "127.0.0.1", 0, ssl=context)
            )
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            self._server.close()
            loop.run_until_complete(self._server.wait_closed())
            loop.close()

        self._thread = threading.Thread(target=serve, name="smtp-test-server", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is not None:
            async def shutdown() -> None:
                if self._server is not None:
                    self._server.close()
                current = asyncio.current_task()
                tasks = [t for t in asyncio.all_tasks() if t is not current]
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                loop.stop()

            asyncio.run_coroutine_threadsafe(shutdown(), loop)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> FaultySmtpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 (cert, key) made with `cryptography`."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mx.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("mx.test"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path
