"""The delivery engine's message factory wired to the real pipeline: render, assemble and sign
each send-log row with the campaign's compiled pipeline (built once per campaign and process)."""

from __future__ import annotations

import hashlib
import hmac

from sqlalchemy.orm import Session

from campaigns.delivery.protocols import OutgoingMessage
from campaigns.pipeline import CampaignPipeline, SenderIdentity, discount_for
from campaigns.service import get_campaign
from lists.errors import NotFoundError
from lists.models import Contact
from patron.context import AppContext
from patron.sender import sender_identity


class PipelineMessageFactory:
    """`campaigns.delivery.protocols.MessageFactory` over :class:`CampaignPipeline`."""

    def __init__(self, context: AppContext, identity: SenderIdentity | None = None) -> None:
        self._context = context
        self._identity = identity or sender_identity(context.settings)
        self._pipelines: dict[int, CampaignPipeline] = {}
        self._domain = self._identity.mailbox.email.rpartition("@")[2]

    def build(
        self,
        campaign_id: int,
        contact_id: int,
        variant: int,
        discount_code: str | None,
        message_id_hint: str,
    ) -> OutgoingMessage:
        context = self._context
        with Session(context.engine(), expire_on_commit=False) as session:
            pipeline = self._pipelines.get(campaign_id)
            if pipeline is None:
                campaign = get_campaign(session, campaign_id)
                pipeline = CampaignPipeline(session, campaign, self._identity, context.key)
                self._pipelines[campaign_id] = pipeline
            contact = session.get(Contact, contact_id)
            if contact is None:
                raise NotFoundError(f"contact {contact_id} no longer exists")
            discount = discount_for(session, pipeline.campaign, discount_code)
        message = pipeline.build(
            contact,
            now=context.now(),
            variant=variant,
            discount=discount,
            message_id=self._message_id(message_id_hint),
        )
        return OutgoingMessage(
            envelope_from=message.envelope_sender,
            recipient=message.recipient,
            data=message.data,
            smtputf8=message.smtputf8,
            message_id=message.message_id,
        )

    def _message_id(self, hint: str) -> str:
        # The same send-log row keeps its Message-ID across retries; the keyed suffix makes it
        # unguessable from the row's ids.
        tag = hmac.new(self._context.key, hint.encode(), hashlib.sha256).hexdigest()[:12]
        return f"<{hint}.{tag}@{self._domain}>"


def make_message_factory(context: AppContext) -> PipelineMessageFactory:
    """The default factory of `patron worker`."""
    return PipelineMessageFactory(context)
