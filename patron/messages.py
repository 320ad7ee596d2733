"""The delivery engine's message factory wired to the real pipeline: render, assemble and sign
each send-log row with the campaign's compiled pipeline (built once per campaign and process).

The engine hands every claimed batch to :meth:`PipelineMessageFactory.prepare` inside the claim's
transaction: the batch's contacts and discount codes are read with two queries and kept until
their messages are built, so building a message reads nothing from the database. A row built
without a prepared entry (a factory used on its own, or an entry evicted after a long wait) is
read on demand."""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from sqlmodel import col

from campaigns.delivery.protocols import OutgoingMessage
from campaigns.delivery.queue import Claimed
from campaigns.models import DiscountCode
from campaigns.pipeline import CampaignPipeline, SenderIdentity, discount_for
from campaigns.rendering import Discount
from campaigns.service import get_campaign
from lists.errors import NotFoundError
from lists.models import Contact
from patron.context import AppContext
from patron.sender import sender_identity

# Prepared rows kept at most (~14 MB): a few claim batches' worth (the engine keeps up to
# max(2 × claim_batch, 4 × in-flight) rows claimed ahead of sending); rows given back unsent
# (throttled, out of their window) leave entries that age out.
PREPARED_LIMIT = 5_000


@dataclass(frozen=True, slots=True)
class _Prepared:
    contact: Contact
    discount: Discount | None


class PipelineMessageFactory:
    """`campaigns.delivery.protocols.MessageFactory` (and `PreparingFactory`) over
    :class:`CampaignPipeline`."""

    def __init__(self, context: AppContext, identity: SenderIdentity | None = None) -> None:
        self._context = context
        self._identity = identity or sender_identity(context.settings)
        self._pipelines: dict[int, CampaignPipeline] = {}
        self._domain = self._identity.mailbox.email.rpartition("@")[2]
        # (campaign id, contact id, discount code) → what its message needs. Written by the
        # engine's database thread, read by whoever builds: guarded by a lock.
        self._prepared: OrderedDict[tuple[int, int, str | None], _Prepared] = OrderedDict()
        self._lock = threading.Lock()

    def prepare(self, session: Session, rows: Sequence[Claimed]) -> None:
        """Read the contacts and discount codes of ``rows`` (and compile a campaign's pipeline
        the first time one of its rows shows up)."""
        broken: set[int] = set()
        for campaign_id in {r.campaign_id for r in rows} - self._pipelines.keys():
            try:
                self._pipeline(campaign_id)
            except SQLAlchemyError:
                raise  # the claim's transaction is gone: the engine handles it
            except Exception:
                broken.add(campaign_id)  # build() raises it again, recorded per message
        wanted = [r for r in rows if r.contact_id is not None and r.campaign_id not in broken]
        if not wanted:
            return
        contacts = {
            c.id: c
            for c in session.execute(
                select(Contact).where(col(Contact.id).in_({r.contact_id for r in wanted}))
            ).scalars()
        }
        codes = {r.discount_code for r in wanted if r.discount_code is not None}
        discounts = {
            d.code: Discount(code=d.code, expires_at=d.expires_at)
            for d in (
                session.execute(select(DiscountCode).where(col(DiscountCode.code).in_(codes)))
                .scalars()
                .all()
                if codes
                else ()
            )
        }
        for contact in contacts.values():
            session.expunge(contact)  # read after the claim's session has closed
        with self._lock:
            for r in wanted:
                assert r.contact_id is not None
                found = contacts.get(r.contact_id)
                code = r.discount_code
                if found is None or (code is not None and code not in discounts):
                    continue  # gone meanwhile: build reads it and reports it
                discount = discounts[code] if code is not None else None
                key = (r.campaign_id, r.contact_id, code)
                self._prepared[key] = _Prepared(found, discount)
                self._prepared.move_to_end(key)  # a row claimed again is fresh again
            while len(self._prepared) > PREPARED_LIMIT:
                self._prepared.popitem(last=False)

    def build(
        self,
        campaign_id: int,
        contact_id: int,
        variant: int,
        discount_code: str | None,
        message_id_hint: str,
    ) -> OutgoingMessage:
        context = self._context
        with self._lock:
            ready = self._prepared.pop((campaign_id, contact_id, discount_code), None)
        pipeline = self._pipelines.get(campaign_id)
        if ready is None or pipeline is None:
            pipeline = self._pipeline(campaign_id)
            with Session(context.engine(), expire_on_commit=False) as session:
                contact = session.get(Contact, contact_id)
                if contact is None:
                    raise NotFoundError(f"contact {contact_id} no longer exists")
                ready = _Prepared(contact, discount_for(session, pipeline.campaign, discount_code))
        message = pipeline.build(
            ready.contact,
            now=context.now(),
            variant=variant,
            discount=ready.discount,
            message_id=self._message_id(message_id_hint),
        )
        return OutgoingMessage(
            envelope_from=message.envelope_sender,
            recipient=message.recipient,
            data=message.data,
            smtputf8=message.smtputf8,
            message_id=message.message_id,
        )

    def _pipeline(self, campaign_id: int) -> CampaignPipeline:
        """The campaign's compiled pipeline, made once per process in a session of its own:
        the pipeline keeps the campaign's row, which a rollback of the caller's transaction (a
        claim that failed) would expire and leave unreadable."""
        pipeline = self._pipelines.get(campaign_id)
        if pipeline is None:
            with Session(self._context.engine(), expire_on_commit=False) as session:
                campaign = get_campaign(session, campaign_id)
                pipeline = CampaignPipeline(session, campaign, self._identity, self._context.key)
            self._pipelines[campaign_id] = pipeline
        return pipeline

    def _message_id(self, hint: str) -> str:
        # The same send-log row keeps its Message-ID across retries; the keyed suffix makes it
        # unguessable from the row's ids.
        tag = hmac.new(self._context.key, hint.encode(), hashlib.sha256).hexdigest()[:12]
        return f"<{hint}.{tag}@{self._domain}>"


def make_message_factory(context: AppContext) -> PipelineMessageFactory:
    """The default factory of `patron worker`."""
    return PipelineMessageFactory(context)
