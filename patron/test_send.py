"""A single message straight to the configured relay (test sends): one connection, one
transaction, the server's reply reported back."""

from __future__ import annotations

import asyncio
import ssl

import aiosmtplib

from campaigns.message.assembly import AssembledMessage
from lists.errors import PatronError
from patron.settings import SmtpSettings


class SmtpError(PatronError):
    """The relay refused the message or could not be reached."""


def _tls_context(smtp: SmtpSettings) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(smtp.ca_file) if smtp.ca_file else None)
    if not smtp.verify_certificates:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def send_once(smtp: SmtpSettings, message: AssembledMessage) -> str:
    """Send ``message`` and return the relay's reply to the content ("250 …")."""
    return asyncio.run(_send(smtp, message))


async def _send(smtp: SmtpSettings, message: AssembledMessage) -> str:
    client = aiosmtplib.SMTP(
        hostname=smtp.host,
        port=smtp.port,
        timeout=smtp.timeout,
        use_tls=smtp.tls == "implicit",
        start_tls=smtp.tls == "starttls",
        tls_context=_tls_context(smtp) if smtp.tls != "none" else None,
        username=smtp.username,
        password=smtp.password.get_secret_value() if smtp.password else None,
    )
    where = f"{smtp.host}:{smtp.port}"
    try:
        async with client:
            options = ["SMTPUTF8"] if message.smtputf8 else []
            await client.mail(message.envelope_sender, options=options)
            await client.rcpt(message.recipient)
            reply = await client.data(message.data)
    except aiosmtplib.SMTPRecipientRefused as exc:
        raise SmtpError(f"{where} refused {message.recipient}: {exc.code} {exc.message}") from exc
    except aiosmtplib.SMTPResponseException as exc:
        raise SmtpError(f"{where} refused the message: {exc.code} {exc.message}") from exc
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        raise SmtpError(f"cannot send through {where}: {exc}") from exc
    return f"{reply.code} {reply.message}"
