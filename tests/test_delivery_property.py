"""Q2 as a property: whatever mix of pending, unsubscribed, suppressed, erased and confirmed
contacts a campaign is frozen over, and whatever consent changes happen between the freeze and
the send, nobody but the confirmed, unsuppressed contacts receives it, and each of them once."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from campaigns.delivery import controls
from lists.consent import Provenance, confirm, confirm_token, unsubscribe
from lists.gdpr import erase_contact
from lists.models import (
    Contact,
    MailingList,
    Subscription,
    SubscriptionStatus,
    SuppressionReason,
)
from lists.suppressions import suppress
from patron.db import make_engine
from tests.servers.audience import add_contacts, freeze, make_campaign
from tests.servers.harness import KEY, build, send_all
from tests.servers.smtp import FaultySmtpServer

STATUSES = [SubscriptionStatus.CONFIRMED, SubscriptionStatus.PENDING,
            SubscriptionStatus.UNSUBSCRIBED]
AFTER_FREEZE = ["nothing", "unsubscribe", "suppress", "erase", "confirm"]

person = st.tuples(st.sampled_from(STATUSES), st.booleans(), st.sampled_from(AFTER_FREEZE))
_run = itertools.count()


@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(people=st.lists(person, min_size=1, max_size=8))
def test_only_confirmed_unsuppressed_contacts_receive_marketing(db_factory, people):
    db = make_engine(db_factory())
    run = next(_run)
    now = datetime.now(UTC)
    expected: set[str] = set()
    with Session(db) as s, s.begin():
        audience = make_campaign(s, now)
        plan = []
        for i, (status, suppressed, later) in enumerate(people):
            email = f"r{run}-{i}@example.com"
            (contact_id,) = add_contacts(s, audience.list_id, [email], now, status)
            if suppressed:
                suppress(s, KEY, email, SuppressionReason.MANUAL, now)
            plan.append((contact_id, email, later))
            if status is SubscriptionStatus.CONFIRMED and not suppressed and later in (
                "nothing", "confirm"
            ):
                expected.add(email)
        controls.send_now(s, audience.campaign_id, now, freeze(KEY))
    with Session(db) as s, s.begin():  # consent changes after the freeze, before the send
        lst = s.get(MailingList, audience.list_id)
        for contact_id, email, later in plan:
            contact = s.get(Contact, contact_id)
            if later == "unsubscribe":
                unsubscribe(s, KEY, contact, Provenance("preference centre"), now,
                            mailing_list=lst)
            elif later == "suppress":
                suppress(s, KEY, email, SuppressionReason.COMPLAINT, now)
            elif later == "erase":
                erase_contact(s, KEY, contact, now)
            elif later == "confirm":
                sub = s.get(Subscription, (contact_id, audience.list_id))
                if sub.status == SubscriptionStatus.PENDING.value:
                    confirm(s, KEY, confirm_token(KEY, contact_id, audience.list_id),
                            Provenance("confirmation link"), now)
    send_all(build(db, SERVER.port), db, audience.campaign_id)
    received = {r.recipient for r in SERVER.ledger if r.recipient.startswith(f"r{run}-")}
    counts = SERVER.received()
    assert received == expected
    assert all(counts[e] == 1 for e in received)
    db.dispose()


SERVER = FaultySmtpServer().start()
