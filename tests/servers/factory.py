"""A simple message factory for tests: plain RFC 5322 bytes with a unique Message-ID, addressed
to the contact's email (the real pipeline renders, assembles and signs)."""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import Engine, select

from campaigns.delivery.protocols import OutgoingMessage
from lists.models import Contact

SENDER = "news@shop.example"


class PlainFactory:
    def __init__(self, engine: Engine, *, fail_for: set[str] | None = None) -> None:
        self._engine = engine
        self._emails: dict[int, str] = {}
        self.fail_for = fail_for or set()
        self.built = 0

    def _email(self, contact_id: int) -> str:
        if contact_id not in self._emails:
            with self._engine.connect() as conn:
                self._emails.update(conn.execute(select(Contact.id, Contact.email)).all())
        return self._emails[contact_id]

    def build(
        self,
        campaign_id: int,
        contact_id: int,
        variant: int,
        discount_code: str | None,
        message_id_hint: str,
    ) -> OutgoingMessage:
        email = self._email(contact_id)
        if email in self.fail_for:
            raise ValueError(f"template variable missing for {email}")
        self.built += 1
        message_id = f"<{message_id_hint}.{secrets.token_hex(6)}@shop.example>"
        body = (
            f"From: Shop <{SENDER}>\r\n"
            f"To: <{email}>\r\n"
            f"Subject: Campaign {campaign_id} (variant {variant})\r\n"
            f"Message-ID: {message_id}\r\n"
            "MIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "\r\n"
            f"Hello {email}, your code: {discount_code or '-'}\r\n"
            ".a line that starts with a dot\r\n"
        )
        return OutgoingMessage(
            envelope_from=SENDER,
            recipient=email,
            data=body.encode("utf-8"),
            smtputf8=not email.isascii(),
            message_id=message_id,
        )


def make(context: Any) -> PlainFactory:
    """The provider `patron worker --factory tests.servers.factory:make` calls."""
    return PlainFactory(context.engine())
