"""The worker's message factory over the real pipeline: a claimed batch is read in one go
(contacts, discount codes) so that building its messages reads nothing from the database, and
a row built without that gives the same message."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from campaigns.audience import freeze_audience
from campaigns.delivery.queue import Claimed
from campaigns.models import Campaign, Message, MessageState
from lists.models import Contact
from patron.messages import PipelineMessageFactory
from tests.conftest import NOW
from tests.servers.audience import add_contacts, make_campaign

NAMES = {"ann@example.com": "Ann", "bob@example.net": "Bob", "cem@example.org": "Cem"}


@contextmanager
def statements(engine) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def _discount_campaign(ctx) -> list[Claimed]:
    with Session(ctx.engine(), expire_on_commit=False) as s, s.begin():
        audience = make_campaign(s, NOW, name="june", kind="discount")
        made = add_contacts(s, audience.list_id, NAMES, NOW)
        for contact_id, address in made.items():
            s.get(Contact, contact_id).first_name = NAMES[address]
        campaign = s.get(Campaign, audience.campaign_id)
        freeze_audience(s, campaign, ctx.key, NOW)
        rows = s.execute(
            select(Message, Contact.email)
            .join(Contact, Contact.id == Message.contact_id)
            .where(Message.state == MessageState.QUEUED.value)
            .order_by(Message.id)
        ).all()
    return [
        Claimed(m.id, m.campaign_id, m.contact_id, m.variant, m.discount_code, 0, None, None,
                address, None)
        for m, address in rows
    ]


def _read(data: bytes) -> tuple[str, str]:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    return str(msg["To"]), msg.get_body(("html",)).get_content()


def test_a_prepared_batch_builds_without_reading_the_database(ctx):
    claimed = _discount_campaign(ctx)
    assert len(claimed) == 3 and all(r.discount_code for r in claimed)
    factory = PipelineMessageFactory(ctx)
    with Session(ctx.engine(), expire_on_commit=False) as s, s.begin():
        factory.prepare(s, claimed)
    with statements(ctx.engine()) as seen:
        built = {
            r.email: factory.build(r.campaign_id, r.contact_id, r.variant, r.discount_code,
                                   f"{r.campaign_id}.{r.contact_id}.{r.id}")
            for r in claimed
        }
    assert seen == []
    for row in claimed:
        to, html = _read(built[row.email].data)
        assert row.email in to
        assert NAMES[row.email] in html and row.discount_code in html

    # Built again without preparing (the entries were used up): read on demand, same content.
    with statements(ctx.engine()) as seen:
        row = claimed[0]
        again = factory.build(row.campaign_id, row.contact_id, row.variant, row.discount_code,
                              f"{row.campaign_id}.{row.contact_id}.{row.id}")
    assert seen, "an unprepared row is read from the database"
    assert _read(again.data) == _read(built[row.email].data)
    assert again.message_id == built[row.email].message_id


def test_a_contact_erased_after_the_claim_is_reported_not_sent(ctx):
    claimed = _discount_campaign(ctx)
    factory = PipelineMessageFactory(ctx)
    gone = claimed[1]
    with Session(ctx.engine()) as s, s.begin():
        s.delete(s.get(Contact, gone.contact_id))
    with Session(ctx.engine(), expire_on_commit=False) as s, s.begin():
        factory.prepare(s, claimed)
    try:
        factory.build(gone.campaign_id, gone.contact_id, gone.variant, gone.discount_code, "x")
    except Exception as exc:  # the engine records this as a failed build
        assert "no longer exists" in str(exc)
    else:
        raise AssertionError("a message was built for an erased contact")


def test_a_campaign_that_no_longer_compiles_fails_its_messages_not_the_worker(ctx):
    """Its template was broken after the campaign started (edited in the database, or a shipped
    template changed by an upgrade): each message is recorded failed with the reason, the
    worker carries on and the campaign settles."""
    from campaigns.delivery import controls
    from tests.servers.audience import freeze
    from tests.servers.harness import build, send_all
    from tests.servers.smtp import FaultySmtpServer

    claimed = _discount_campaign(ctx)
    campaign_id = claimed[0].campaign_id
    with Session(ctx.engine()) as s, s.begin():
        controls.send_now(s, campaign_id, NOW, freeze(ctx.key))
        s.get(Campaign, campaign_id).template_source = "<mjml>{% if %}</mjml>"
    with FaultySmtpServer() as server:
        engine = build(ctx.engine(), server.port, factory=PipelineMessageFactory(ctx))
        report = send_all(engine, ctx.engine(), campaign_id)
        assert server.received() == {}
    assert report.failed == 3
    with Session(ctx.engine()) as s:
        states = s.execute(
            select(Message.state, Message.last_reply).where(Message.campaign_id == campaign_id)
        ).all()
    assert [state for state, _ in states] == ["failed"] * 3
    assert all("cannot build the message" in reply for _, reply in states)


def test_a_claim_that_fails_after_preparing_leaves_nothing_broken_behind(ctx):
    """The database fails after prepare compiled the campaign and read the batch (a restart, a
    dropped connection): the claim is rolled back and taken again, and every message goes out
    (a pipeline holding rows of the rolled-back transaction made every later build fail)."""
    from sqlalchemy.exc import OperationalError

    from campaigns.delivery import controls
    from tests.servers.audience import freeze
    from tests.servers.harness import build, send_all
    from tests.servers.smtp import FaultySmtpServer

    class FailingOnce(PipelineMessageFactory):
        failed = False

        def prepare(self, session, rows):
            super().prepare(session, rows)
            if not self.failed:
                self.failed = True
                raise OperationalError("SELECT 1", {}, Exception("server closed the connection"))

    claimed = _discount_campaign(ctx)
    campaign_id = claimed[0].campaign_id
    with Session(ctx.engine()) as s, s.begin():
        controls.send_now(s, campaign_id, NOW, freeze(ctx.key))
    factory = FailingOnce(ctx)
    with FaultySmtpServer() as server:
        report = send_all(build(ctx.engine(), server.port, factory=factory), ctx.engine(),
                          campaign_id)
        assert factory.failed
        assert server.received() == {r.email: 1 for r in claimed}
    assert report.failed == 0 and report.delivered == 3
