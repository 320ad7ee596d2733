"""The interfaces the delivery engine needs and the shell wires: a message factory, an SMTP
transport, an MX resolver, and the audience freezer of a campaign that starts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from sqlalchemy.orm import Session

from campaigns.delivery.outcomes import SmtpOutcome
from campaigns.delivery.queue import Claimed
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


@runtime_checkable
class PreparingFactory(Protocol):
    """A message factory that reads what a batch of claimed rows needs in one go (contacts,
    discount codes) inside the claim's transaction, so that ``build`` touches no database.
    Only database errors may escape it (the claim is then rolled back and retried); anything
    else about a row is for ``build`` to raise, so that it is recorded against that message."""

    def prepare(self, session: Session, rows: Sequence[Claimed]) -> None: ...


class CommitPoint(Protocol):
    """The exactly-once handshake between the engine and the transport for one message."""

    def begin(self) -> None:
        """The transaction is starting (before MAIL FROM): start making the "attempt started"
        mark durable, so the commit overlaps the MAIL and RCPT round trips."""
        ...

    async def confirm(self) -> bool:
        """Before DATA: wait until the mark is durable. False: abandon the transaction (the
        campaign was paused, consent withdrawn, the lease lost, the database unreachable)."""
        ...


class Transport(Protocol):
    """Delivers one message at a time per call over pooled connections."""

    async def send(self, message: OutgoingMessage, commit_point: CommitPoint) -> SmtpOutcome:
        """Run one SMTP transaction: ``commit_point.begin()`` before MAIL FROM and, once the
        recipient is accepted, ``await commit_point.confirm()`` before DATA; when it returns
        False the transaction is abandoned (NotStarted) and the content never written."""
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
