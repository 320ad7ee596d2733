"""The delivery engine end to end, in-process, against a real SMTP server on loopback and real
SQLite and PostgreSQL: exactly-once sending, consent at send time, caps, controls, faults."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlmodel import col

from campaigns.delivery import controls
from campaigns.delivery.stats import delivery_stats
from campaigns.models import Alert, Campaign, Message, ProviderState
from lists.consent import Provenance, unsubscribe
from lists.gdpr import erase_contact
from lists.models import Contact, Event, MailingList, SubscriptionStatus, SuppressionReason
from lists.suppressions import is_suppressed, suppress
from tests.servers.audience import add_contacts, freeze, make_campaign
from tests.servers.factory import PlainFactory
from tests.servers.harness import KEY, build, fast, run_until, send_all
from tests.servers.smtp import Faults, FaultySmtpServer


def now() -> datetime:
    return datetime.now(UTC)


def setup(db, confirmed, *, pending=(), unsubscribed=(), suppressed=(), kind="newsletter",
          name="spring", start=True):
    with Session(db) as s, s.begin():
        audience = make_campaign(s, now(), name=name, kind=kind)
        audience.emails.update(add_contacts(s, audience.list_id, confirmed, now()))
        add_contacts(s, audience.list_id, pending, now(), SubscriptionStatus.PENDING)
        add_contacts(s, audience.list_id, unsubscribed, now(), SubscriptionStatus.UNSUBSCRIBED)
        audience.emails.update(add_contacts(s, audience.list_id, suppressed, now()))
        for email in suppressed:
            suppress(s, KEY, email, SuppressionReason.COMPLAINT, now())
        if start:
            controls.send_now(s, audience.campaign_id, now(), freeze(KEY))
    return audience


def stats(db, campaign_id):
    with Session(db) as s:
        campaign = s.get(Campaign, campaign_id)
        return delivery_stats(s, campaign_id, campaign.status)


def rows(db, campaign_id):
    with Session(db) as s:
        found = s.execute(
            select(Message, Contact.email)
            .join(Contact, col(Contact.id) == col(Message.contact_id), isouter=True)
            .where(col(Message.campaign_id) == campaign_id)
        ).all()
        return {email: m for m, email in found}


def test_each_confirmed_recipient_gets_exactly_one_message(db, smtp):
    good = [f"user{i}@example.com" for i in range(30)]
    audience = setup(db, good, pending=["p@example.com"], unsubscribed=["u@example.com"],
                     suppressed=["s@example.com"])
    report = send_all(build(db, smtp.port), db, audience.campaign_id)

    assert smtp.received() == {email: 1 for email in good}
    assert report.delivered == 30
    got = stats(db, audience.campaign_id)
    assert (got.recipients, got.sent, got.delivered, got.queued, got.unknown) == (30, 30, 30, 0, 0)
    assert sum(got.skipped.values()) == 3
    assert got.skipped == {"not_confirmed": 1, "suppressed": 1, "unsubscribed": 1}
    assert got.status == "sent"
    by_email = rows(db, audience.campaign_id)
    ledger_ids = {r.recipient: r.message_id for r in smtp.ledger}
    for email in good:
        assert by_email[email].message_id == ledger_ids[email]
        assert by_email[email].attempts == 1 and by_email[email].lease_owner is None
    with Session(db) as s:
        sent_events = s.execute(
            select(Event.contact_id).where(col(Event.campaign_id) == audience.campaign_id,
                                           col(Event.kind) == "sent")
        ).scalars().all()
        emailed = s.execute(
            select(Contact.email).where(col(Contact.last_emailed_at).isnot(None))
        ).scalars().all()
    assert sorted(sent_events) == sorted(audience.ids[e] for e in good)
    assert sorted(emailed) == sorted(good)


def test_faults_every_recipient_accounted_for(db):
    normal = [f"n{i}@example.com" for i in range(40)]
    special = ["unknown@example.com", "full@example.com", "cut@example.com"]
    blocked = ["p1@blocked.example", "p2@blocked.example"]
    faults = Faults(disconnect_every=7, greylist=True, rcpt_452_once={"full@example.com"},
                    user_unknown={"unknown@example.com"}, policy_block={"p1@blocked.example"},
                    drop_after_data={"cut@example.com"}, reply_delay=0.001)
    audience = setup(db, normal + special + blocked)
    with FaultySmtpServer(faults) as server:
        engine = build(db, server.port, config=fast(per_domain_concurrency=4))
        asyncio.run(run_until(engine, lambda: _settled(db, audience.campaign_id), timeout=30))
        received = server.received()
        disconnects = server.disconnects

    eligible = [*normal, "full@example.com"]
    assert {e: received[e] for e in eligible} == {e: 1 for e in eligible}  # greylisted: retried
    assert received["cut@example.com"] == 1  # accepted, reply lost: unknown, never resent
    assert set(received) == {*eligible, "cut@example.com"}
    assert disconnects >= 5
    by_email = rows(db, audience.campaign_id)
    assert all(by_email[e].state == "sent" and by_email[e].attempts >= 2 for e in normal)
    assert by_email["cut@example.com"].state == "unknown"
    assert by_email["unknown@example.com"].state == "bounced"
    assert by_email["unknown@example.com"].failure == "hard_bounce"
    assert by_email["p1@blocked.example"].state == "failed"
    assert by_email["p1@blocked.example"].failure == "policy"
    assert by_email["p2@blocked.example"].state in ("queued", "deferred")  # provider paused
    with Session(db) as s:
        assert is_suppressed(s, KEY, "unknown@example.com") == SuppressionReason.HARD_BOUNCE
        assert is_suppressed(s, KEY, "p1@blocked.example") is None  # policy: not the recipient
        paused = s.get(ProviderState, "blocked.example")
        assert paused is not None and paused.paused_until > now() + timedelta(minutes=20)
        alerts = s.execute(select(Alert)).scalars().all()
        slowed = s.get(ProviderState, "example.com")
    assert [(a.kind, a.provider) for a in alerts] == [("policy_block", "blocked.example")]
    assert slowed is not None and slowed.factor < 1.0  # the 4xx deferrals slowed example.com


def _settled(db, campaign_id) -> bool:
    by_email = rows(db, campaign_id)
    return all(
        m.state not in ("queued", "deferred", "sending")
        for email, m in by_email.items()
        if not email.endswith("@blocked.example")
    ) and by_email["p1@blocked.example"].state == "failed"


def test_unknown_outcome_can_be_resent_by_policy(db):
    audience = setup(db, ["a@example.com", "cut@example.com"])
    faults = Faults(drop_after_data={"cut@example.com"}, drop_keeps_message=False)
    with FaultySmtpServer(faults) as server:
        engine = build(db, server.port, config=fast(unknown_outcome="resend"))
        task = run_until(engine, lambda: server.rcpt_attempts["cut@example.com"] >= 1)
        asyncio.run(task)
        faults.drop_after_data.clear()
        send_all(build(db, server.port, config=fast(unknown_outcome="resend")), db,
                 audience.campaign_id)
        assert server.received() == {"a@example.com": 1, "cut@example.com": 1}
    assert rows(db, audience.campaign_id)["cut@example.com"].attempts == 2


def test_consent_is_checked_again_at_send_time(db, smtp):
    emails = [f"c{i}@example.com" for i in range(8)]
    audience = setup(db, emails)
    with Session(db) as s, s.begin():  # after the audience was frozen
        contact = s.get(Contact, audience.ids["c0@example.com"])
        unsubscribe(s, KEY, contact, Provenance("preference centre"), now(),
                    mailing_list=s.get(MailingList, audience.list_id))
        suppress(s, KEY, "c1@example.com", SuppressionReason.MANUAL, now())
        erase_contact(s, KEY, s.get(Contact, audience.ids["c2@example.com"]), now())
    send_all(build(db, smtp.port), db, audience.campaign_id)

    assert smtp.received() == {e: 1 for e in emails[3:]}
    assert stats(db, audience.campaign_id).skipped == {"suppressed": 2, "unsubscribed": 1}


def test_frequency_and_discount_caps(db, smtp):
    recent = setup(db, ["old@example.com", "fresh@example.com"], name="earlier")
    with Session(db) as s, s.begin():
        for email, hours in (("old@example.com", 30), ("fresh@example.com", 2)):
            contact = s.get(Contact, recent.ids[email])
            contact.last_emailed_at = now() - timedelta(hours=hours)
    audience = setup(db, ["new@example.com"], name="weekly", start=False)
    with Session(db) as s, s.begin():
        from campaigns.models import CampaignList
        s.add(CampaignList(campaign_id=audience.campaign_id, list_id=recent.list_id))
        s.flush()
        controls.send_now(s, audience.campaign_id, now(), freeze(KEY))
        # The earlier campaign is over: only the frequency cap stands between.
        controls.cancel(s, recent.campaign_id, now())
    send_all(build(db, smtp.port), db, audience.campaign_id)
    assert smtp.received() == {"new@example.com": 1, "old@example.com": 1}
    assert stats(db, audience.campaign_id).skipped == {"frequency_cap": 1}

    offer = setup(db, ["x@example.com"], name="offer-1", kind="discount")
    send_all(build(db, smtp.port, config=fast(frequency_cap_hours=0)), db, offer.campaign_id)
    second = setup(db, [], name="offer-2", kind="discount", start=False)
    with Session(db) as s, s.begin():
        from campaigns.models import CampaignList
        s.add(CampaignList(campaign_id=second.campaign_id, list_id=offer.list_id))
        s.flush()
        controls.send_now(s, second.campaign_id, now(), freeze(KEY))
    send_all(build(db, smtp.port, config=fast(frequency_cap_hours=0)), db, second.campaign_id)
    assert smtp.received()["x@example.com"] == 1
    assert stats(db, second.campaign_id).skipped == {"discount_cap": 1}


def test_a_message_that_cannot_be_built_is_recorded_as_failed(db, smtp):
    audience = setup(db, ["ok@example.com", "broken@example.com"])
    factory = PlainFactory(db, fail_for={"broken@example.com"})
    send_all(build(db, smtp.port, factory=factory), db, audience.campaign_id)
    assert smtp.received() == {"ok@example.com": 1}
    broken = rows(db, audience.campaign_id)["broken@example.com"]
    assert (broken.state, broken.failure) == ("failed", "error")
    assert "template variable missing" in broken.last_reply


def test_pause_stops_within_a_second_survives_a_restart_and_resume_finishes(db):
    emails = [f"r{i}@example.com" for i in range(60)]
    audience = setup(db, emails)
    with FaultySmtpServer(Faults(reply_delay=0.01)) as server:
        config = fast(per_domain_concurrency=1)

        async def pause_midway():
            engine = build(db, server.port, config=config)
            task = asyncio.create_task(engine.run())
            while len(server.ledger) < 10:
                await asyncio.sleep(0.01)
            with Session(db) as s, s.begin():
                controls.pause(s, audience.campaign_id, now())
            await asyncio.sleep(1.0)
            at_pause = len(server.ledger)
            await asyncio.sleep(0.5)
            engine.stop()
            await task
            await engine.close_transport()
            return at_pause

        at_pause = asyncio.run(pause_midway())
        assert 10 <= at_pause < 60 and len(server.ledger) == at_pause
        # A new worker after a restart sends nothing while the campaign is paused.
        engine = build(db, server.port, config=config)
        asyncio.run(run_until(engine, lambda: False, timeout=60) if False else _idle(engine))
        assert len(server.ledger) == at_pause
        assert stats(db, audience.campaign_id).status == "paused"
        with Session(db) as s, s.begin():
            controls.resume(s, audience.campaign_id, now())
        send_all(build(db, server.port, config=fast()), db, audience.campaign_id)
        assert server.received() == {e: 1 for e in emails}


async def _idle(engine):
    task = asyncio.create_task(engine.run())
    await asyncio.sleep(0.5)
    engine.stop()
    await task
    await engine.close_transport()


async def _until_then_idle(engine, server, count):
    """Run until the server holds ``count`` messages, then half a second more."""
    task = asyncio.create_task(engine.run())
    for _ in range(400):
        if len(server.ledger) >= count:
            break
        await asyncio.sleep(0.025)
    await asyncio.sleep(0.5)
    engine.stop()
    await task
    await engine.close_transport()


def test_cancel_sends_nothing_more(db):
    audience = setup(db, [f"k{i}@example.com" for i in range(40)])
    with FaultySmtpServer(Faults(reply_delay=0.01)) as server:
        async def cancel_midway():
            engine = build(db, server.port, config=fast(per_domain_concurrency=1))
            task = asyncio.create_task(engine.run())
            while len(server.ledger) < 5:
                await asyncio.sleep(0.01)
            with Session(db) as s, s.begin():
                controls.cancel(s, audience.campaign_id, now())
            await asyncio.sleep(1.0)
            engine.stop()
            await task
            await engine.close_transport()
            return len(server.ledger)

        after = asyncio.run(cancel_midway())
        assert after < 40 and len(server.ledger) == after
    got = stats(db, audience.campaign_id)
    assert got.status == "cancelled" and got.sent == after and got.sending == 0
    # The send log explains the others: cancelled, including the claims the worker gave back.
    assert (got.queued, got.deferred) == (0, 0)
    assert got.skipped == {"cancelled": 40 - after}
    assert all(m.state == "sent" or m.skip_reason == "cancelled"
               for m in rows(db, audience.campaign_id).values())


def test_hard_bounce_rate_pauses_the_campaign(db):
    emails = [f"h{i}@example.com" for i in range(40)]
    audience = setup(db, emails)
    faults = Faults(user_unknown={f"h{i}@example.com" for i in range(4)}, reply_delay=0.01)
    with FaultySmtpServer(faults) as server:
        engine = build(db, server.port, config=fast(
            rate_check_min_messages=8, rate_check_interval=0.1, hard_bounce_pause_rate=0.05,
            per_domain_concurrency=1))

        def paused() -> bool:
            return stats(db, audience.campaign_id).status == "paused"

        asyncio.run(run_until(engine, paused, timeout=15))
    assert stats(db, audience.campaign_id).queued > 0
    with Session(db) as s:
        kinds = [a.kind for a in s.execute(select(Alert)).scalars()]
    assert "bounce_rate" in kinds


def test_warmup_and_hourly_caps_limit_the_volume(db, smtp):
    audience = setup(db, [f"w{i}@example.com" for i in range(12)])
    today = now().date()
    config = fast(warmup_domains={"shop.example": today}, warmup_ramp=(5, 50))
    asyncio.run(_until_then_idle(build(db, smtp.port, config=config), smtp, 5))
    assert len(smtp.ledger) == 5
    asyncio.run(_until_then_idle(build(db, smtp.port, config=fast(rate_per_hour=8)), smtp, 8))
    assert len(smtp.ledger) == 8
    assert stats(db, audience.campaign_id).queued == 4


def test_global_rate_paces_sending(db, smtp):
    audience = setup(db, [f"g{i}@example.com" for i in range(16)])
    report = send_all(build(db, smtp.port, config=fast(rate=20.0)), db, audience.campaign_id)
    assert report.delivered == 16
    assert report.seconds >= 0.6  # 16 messages at 20/s (with a burst of 2)


def test_starttls_auth_and_several_relays(db, tmp_path):
    from tests.servers.smtp import self_signed_certificate

    cert = self_signed_certificate(tmp_path)
    emails = [f"t{i}@example.com" for i in range(20)]
    audience = setup(db, emails)
    with FaultySmtpServer(tls_cert=cert, require_auth=("patron", "s3cret")) as one, \
            FaultySmtpServer(tls_cert=cert, require_auth=("patron", "s3cret")) as two:
        from tests.servers.harness import smtp_config

        config = smtp_config(one.port, two.port, tls="starttls", username="patron",
                             password="s3cret", ca_file=cert[0], max_messages_per_connection=3)
        send_all(build(db, one.port, smtp=config), db, audience.campaign_id)
        assert one.received() + two.received() == {e: 1 for e in emails}
        assert one.received() and two.received()


def test_implicit_tls(db, tmp_path):
    from tests.servers.harness import smtp_config
    from tests.servers.smtp import self_signed_certificate

    cert = self_signed_certificate(tmp_path)
    audience = setup(db, ["i@example.com"])
    with FaultySmtpServer(tls_cert=cert, implicit_tls=True,
                          require_auth=("patron", "s3cret")) as server:
        config = smtp_config(server.port, tls="implicit", username="patron", password="s3cret",
                             ca_file=cert[0])
        send_all(build(db, server.port, smtp=config), db, audience.campaign_id)
        assert server.received() == {"i@example.com": 1}


def test_wrong_password_defers_instead_of_failing(db, tmp_path):
    from tests.servers.harness import smtp_config
    from tests.servers.smtp import self_signed_certificate

    cert = self_signed_certificate(tmp_path)
    audience = setup(db, ["a@example.com"])
    with FaultySmtpServer(tls_cert=cert, require_auth=("patron", "s3cret")) as server:
        config = smtp_config(server.port, tls="starttls", username="patron", password="wrong",
                             verify_certificates=False, timeout=0.5)
        engine = build(db, server.port, smtp=config)
        asyncio.run(run_until(engine, lambda: rows(db, audience.campaign_id)["a@example.com"]
                              .state == "deferred"))
        assert server.ledger == []


def test_recipients_are_grouped_by_mx_provider_and_dns_timeouts_do_not_block(db, smtp):
    from campaigns.delivery.mx import DnsResolver
    from tests.servers.dns import DnsServer, Zones

    zones = Zones(mx={"gmail.com": [(5, "gmail-smtp-in.l.google.com")],
                      "googlemail.com": [(5, "gmail-smtp-in.l.google.com")]},
                  silent={"slow.example"})
    emails = ["a@gmail.com", "b@googlemail.com", "c@slow.example"]
    audience = setup(db, emails)
    with DnsServer(zones) as dns:
        engine = build(db, smtp.port, resolver=DnsResolver([dns.address], timeout=0.3))
        send_all(engine, db, audience.campaign_id)
    assert smtp.received() == {e: 1 for e in emails}
    providers = {e: m.provider for e, m in rows(db, audience.campaign_id).items()}
    assert providers == {"a@gmail.com": "google.com", "b@googlemail.com": "google.com",
                         "c@slow.example": "slow.example"}


def test_database_connections_cut_mid_campaign(db, db_url, backend):
    """A database restart, as the worker sees it: every connection dropped, twice."""
    if backend != "postgresql":
        pytest.skip("SQLite has no server to restart")
    from sqlalchemy import create_engine, text

    emails = [f"d{i}@example.com" for i in range(120)]
    audience = setup(db, emails)
    admin = create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"),
                          isolation_level="AUTOCOMMIT")

    def cut() -> None:
        with admin.connect() as conn:
            conn.execute(text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ))

    with FaultySmtpServer(Faults(reply_delay=0.004)) as server:
        async def scenario():
            engine = build(db, server.port, config=fast(per_domain_concurrency=4))
            task = asyncio.create_task(engine.run())
            for threshold in (20, 60):
                while len(server.ledger) < threshold:
                    await asyncio.sleep(0.005)
                for _ in range(8):  # some cuts land inside transactions
                    await asyncio.get_running_loop().run_in_executor(None, cut)
                    await asyncio.sleep(0.01)
            while True:
                done = await asyncio.get_running_loop().run_in_executor(
                    None, lambda: stats(db, audience.campaign_id))
                if done.queued + done.deferred + done.sending == 0:
                    break
                await asyncio.sleep(0.1)
            engine.stop()
            report = await task
            await engine.close_transport()
            return report

        report = asyncio.run(scenario())
        received = server.received()
    admin.dispose()
    assert report.commits["marks_failures"] + report.commits["outcomes_failures"] > 0
    by_email = rows(db, audience.campaign_id)
    for email in emails:
        if by_email[email].state == "unknown":
            assert received[email] <= 1
        else:
            assert by_email[email].state == "sent" and received[email] == 1
    assert sum(m.state == "unknown" for m in by_email.values()) <= 8


def test_stopping_lets_transactions_finish_and_gives_waiting_claims_back(db, smtp):
    import time as clock

    audience = setup(db, [f"s{i}@example.com" for i in range(20)])

    async def scenario():
        engine = build(db, smtp.port, config=fast(rate=4.0))
        task = asyncio.create_task(engine.run())
        await asyncio.sleep(1.0)
        began = clock.monotonic()
        engine.stop()
        await task
        await engine.close_transport()
        return clock.monotonic() - began

    assert asyncio.run(scenario()) < 1.0  # waiting for the pace does not delay the stop
    got = stats(db, audience.campaign_id)
    assert 1 <= got.sent < 20 and got.sent == len(smtp.ledger)
    assert got.queued == 20 - got.sent and got.sending == 0
    assert all(m.lease_owner is None for m in rows(db, audience.campaign_id).values())


def test_messages_built_in_threads(db, smtp):
    emails = [f"t{i}@example.com" for i in range(12)]
    audience = setup(db, emails)
    send_all(build(db, smtp.port, config=fast(build_threads=2)), db, audience.campaign_id)
    assert smtp.received() == {e: 1 for e in emails}
