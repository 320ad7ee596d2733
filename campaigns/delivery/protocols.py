"""The interfaces the delivery engine needs and the shell wires: a message factory, an SMTP
transport, an MX resolver, and the audience freezer of a campaign that starts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy.orm import Session

from campaigns.delivery.outcomes import SmtpOutcome
from campaigns.models import Campaign


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One message ready for SMTP: envelope and the exact bytes (CRLF line endings)."""

    envelope_from: str
    recipient: str
    data: bytes
    smtputf8: bool
    message_id: str


class MessageFactory(Protocol):
    """Builds the outgoing message of one send-log row (render, assemble, sign). Synchronous and
    CPU-bound: the engine calls it one message at a time between its awaits."""

    def build(
        self,
        campaign_id: int,
        contact_id: int,
        variant: int,
        discount_code: str | None,
        message_id_hint: str,
    ) -> OutgoingMessage: ...


# Called by the transport once the recipient is accepted and before the DATA command: it makes
# the "attempt started" mark durable and answers whether the message may still go out.
CommitPoint = Callable[[], Awaitable[bool]]


class Transport(Protocol):
    """Delivers one message at a time per call over pooled connections."""

    async def send(self, message: OutgoingMessage, commit_point: CommitPoint) -> SmtpOutcome:
        """Run one SMTP transaction. ``commit_point`` must be awaited after RCPT succeeded and
        before DATA; when it returns False the transaction is abandoned (NotStarted)."""
        ...

    async def close(self) -> None:
        """Close every pooled connection."""
        ...


class Resolver(Protocol):
    """MX lookups for provider grouping."""

    async def mx_hosts(self, domain: str) -> list[str]:
        """Exchange host names of ``domain``, most preferred first; [] when it has no MX
        (or does not exist). Raises TimeoutError when the name servers do not answer."""
        ...


class AudienceFreezer(Protocol):
    """Writes a campaign's send-log rows when it starts (campaigns.audience.freeze_audience with
    the key and hygiene policy bound by the shell)."""

    def __call__(self, session: Session, campaign: Campaign, now: datetime) -> object: ...
