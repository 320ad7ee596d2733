"""The sending commands as a script uses them (CLI contract), scheduling into the send log, and
the queue's worker bookkeeping (reaping, the SQLite sender lease)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlmodel import col

from campaigns.delivery import controls
from campaigns.delivery.queue import (
    SQLITE_SENDER_LEASE,
    acquire_lease,
    claim,
    deregister,
    reap,
    register_worker,
)
from campaigns.delivery.scheduling import schedule
from campaigns.models import Campaign, Message
from lists.models import Contact
from tests.servers.audience import add_contacts, freeze, make_campaign
from tests.servers.harness import KEY
from tests.servers.smtp import FaultySmtpServer


@pytest.fixture
def smtp(monkeypatch):
    with FaultySmtpServer() as server:
        monkeypatch.setenv("PATRON_SMTP__PORT", str(server.port))
        monkeypatch.setenv("PATRON_SMTP__LOCAL_HOSTNAME", "worker.test")
        monkeypatch.setenv("PATRON_DELIVERY__POLL_SECONDS", "0.1")
        yield server


def _audience(db, emails, **zones):
    now = datetime.now(UTC)
    with Session(db) as s, s.begin():
        audience = make_campaign(s, now)
        audience.emails.update(add_contacts(s, audience.list_id, emails, now))
        for zone, addresses in zones.items():
            audience.emails.update(
                add_contacts(s, audience.list_id, addresses, now, timezone=zone.replace("__", "/"))
            )
    return audience


def test_send_worker_stats_as_a_script_sees_them(cli, db, smtp):
    audience = _audience(db, [f"a{i}@example.com" for i in range(5)])
    cid = str(audience.campaign_id)

    sent = cli("campaigns", "send", cid, "--json")
    assert sent.code == 0, sent.err
    assert json.loads(sent.out)["status"] == "sending"
    assert json.loads(sent.out)["stats"]["queued"] == 5

    done = cli("worker", "--once", "--factory", "tests.servers.factory:make", "--json")
    assert done.code == 0, done.err
    assert json.loads(done.out)["delivered"] == 5
    assert len(smtp.ledger) == 5

    stats = json.loads(cli("campaigns", "stats", cid, "--json").out)
    assert stats["status"] == "sent"
    for key in ("recipients", "skipped", "sent", "delivered", "bounced_hard", "bounced_soft",
                "failed", "queued", "deferred", "unknown"):
        assert key in stats
    assert (stats["recipients"], stats["sent"], stats["delivered"]) == (5, 5, 5)
    human = cli("campaigns", "stats", cid)
    assert "sent" in human.out and human.code == 0


def test_controls_and_their_errors(cli, db):
    audience = _audience(db, ["b@example.com"])
    cid = str(audience.campaign_id)
    paused = cli("campaigns", "pause", cid)
    assert paused.code == 1
    assert paused.err.startswith("patron: error: ") and paused.err.count("\n") == 1
    assert cli("campaigns", "send", cid).code == 0
    assert json.loads(cli("campaigns", "pause", cid, "--json").out)["status"] == "paused"
    assert cli("campaigns", "send", cid).code == 1  # paused: resume it instead
    assert json.loads(cli("campaigns", "resume", cid, "--json").out)["status"] == "sending"
    assert json.loads(cli("campaigns", "cancel", cid, "--json").out)["status"] == "cancelled"
    assert cli("campaigns", "resume", cid).code == 1
    missing = cli("campaigns", "stats", "999")
    assert missing.code == 1 and "no campaign with id 999" in missing.err


def test_schedule_command_and_the_worker_starts_it_when_due(cli, db, smtp):
    audience = _audience(db, ["c@example.com", "d@example.com"])
    cid = str(audience.campaign_id)
    bad = cli("campaigns", "schedule", cid, "--at", "2001-01-01T10:00:00Z")
    assert bad.code == 1 and "in the past" in bad.err
    assert cli("campaigns", "schedule", cid, "--at", "tomorrow").code == 1
    at = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    scheduled = cli("campaigns", "schedule", cid, "--at", at, "--json")
    assert scheduled.code == 0, scheduled.err
    assert json.loads(scheduled.out)["status"] == "scheduled"
    early = cli("worker", "--once", "--factory", "tests.servers.factory:make", "--json")
    assert json.loads(early.out)["delivered"] == 0 and smtp.ledger == []
    time.sleep(1.1)
    due = cli("worker", "--once", "--factory", "tests.servers.factory:make", "--json")
    assert json.loads(due.out)["delivered"] == 2
    assert json.loads(due.out)["started_campaigns"] == [audience.campaign_id]


def test_local_time_and_window_set_each_recipients_due_time(db):
    audience = _audience(db, ["utc@example.com"], Asia__Tokyo=["tokyo@example.com"],
                         America__New_York=["ny@example.com"])
    now = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
    with Session(db) as s, s.begin():
        campaign = s.get(Campaign, audience.campaign_id)
        starts = schedule(campaign, datetime(2026, 6, 20, tzinfo=UTC).date(), now,
                          local_time="10:00", window="09:00-20:00")
    with Session(db) as s, s.begin():
        assert controls.start_due(s, starts, freeze(KEY)) == [audience.campaign_id]
    with Session(db) as s:
        due = dict(s.execute(
            select(Contact.email, Message.due_at)
            .join(Message, col(Message.contact_id) == col(Contact.id))
        ).all())
    assert due == {
        "tokyo@example.com": datetime(2026, 6, 20, 1, 0, tzinfo=UTC),
        "utc@example.com": datetime(2026, 6, 20, 10, 0, tzinfo=UTC),
        "ny@example.com": datetime(2026, 6, 20, 14, 0, tzinfo=UTC),
    }


def test_window_moves_a_late_start_to_the_next_opening(db):
    audience = _audience(db, ["late@example.com"], Europe__Paris=["paris@example.com"])
    now = datetime(2026, 6, 15, 20, 30, tzinfo=UTC)  # 22:30 in Paris
    with Session(db) as s, s.begin():
        campaign = s.get(Campaign, audience.campaign_id)
        campaign.window_start, campaign.window_end = "09:00", "20:00"
        controls.send_now(s, audience.campaign_id, now, freeze(KEY))
    with Session(db) as s:
        due = dict(s.execute(
            select(Contact.email, Message.next_attempt_at)
            .join(Message, col(Message.contact_id) == col(Contact.id))
        ).all())
    assert due == {
        "late@example.com": datetime(2026, 6, 16, 9, 0, tzinfo=UTC),
        "paris@example.com": datetime(2026, 6, 16, 7, 0, tzinfo=UTC),
    }


def test_reaper_returns_unstarted_claims_and_settles_started_attempts_as_unknown(db):
    audience = _audience(db, [f"r{i}@example.com" for i in range(4)])
    now = datetime.now(UTC)
    with Session(db) as s, s.begin():
        controls.send_now(s, audience.campaign_id, now, freeze(KEY))
        register_worker(s, "dead", "other-host", 4242, now - timedelta(minutes=5))
        register_worker(s, "alive", "other-host", 4243, now)
        rows = claim(s, "dead", audience.campaign_id, now, 3)
        s.execute(Message.__table__.update().where(Message.__table__.c.id == rows[0].id)
                  .values(state="sending", attempts=1))
        claim(s, "alive", audience.campaign_id, now, 1)
    with Session(db) as s, s.begin():
        reaped = reap(s, "me", "this-host", now, timedelta(seconds=30))
    assert (reaped.workers, reaped.released, reaped.unknown) == (1, 2, 1)
    with Session(db) as s:
        states = sorted((m.state, m.lease_owner or "") for m in s.execute(select(Message)).scalars())
    assert states == [("queued", ""), ("queued", ""), ("queued", "alive"), ("unknown", "")]


def test_sqlite_lets_one_worker_send_at_a_time(db, backend):
    now = datetime.now(UTC)
    ttl = timedelta(seconds=30)
    with Session(db) as s, s.begin():
        register_worker(s, "first", "h", 1, now)
        register_worker(s, "second", "h", 2, now)
        assert acquire_lease(s, SQLITE_SENDER_LEASE, "first", now, ttl)
        assert not acquire_lease(s, SQLITE_SENDER_LEASE, "second", now, ttl)
        assert acquire_lease(s, SQLITE_SENDER_LEASE, "first", now, ttl)  # renewal
    with Session(db) as s, s.begin():
        deregister(s, "first", now, resend_unknown=False)
    with Session(db) as s, s.begin():
        assert acquire_lease(s, SQLITE_SENDER_LEASE, "second", now, ttl)


def test_complaint_rates_warn_pause_a_provider_then_the_campaign(db, cli):
    from campaigns.delivery.controls import RateLimits, check_rates
    from campaigns.models import Alert, ProviderState
    from lists.models import Event

    emails = [f"q{i}@example.com" for i in range(350)] + [f"o{i}@other.example" for i in range(50)]
    audience = _audience(db, emails)
    now = datetime.now(UTC)
    limits = RateLimits(min_messages=50)
    with Session(db) as s, s.begin():
        controls.send_now(s, audience.campaign_id, now, freeze(KEY))
        table = Message.__table__
        s.execute(table.update().values(state="sent", provider="example.com"))
        other = [i for i, e in audience.emails.items() if e.endswith("@other.example")]
        s.execute(table.update().where(table.c.contact_id.in_(other))
                  .values(provider="other.example"))

    def complain(email):
        with Session(db) as s, s.begin():
            s.add(Event(contact_id=audience.ids[email], campaign_id=audience.campaign_id,
                        kind="complaint", occurred_at=now))

    def check():
        with Session(db) as s, s.begin():
            return check_rates(s, audience.campaign_id, now, limits)

    complain("o1@other.example")  # 1/400 overall (warn), 1/50 at other.example (pause it)
    done = check()
    assert any("complaint rate 0.25%" in line for line in done)
    assert any("sending to other.example paused" in line for line in done)
    complain("q1@example.com")  # 2/400 = 0.5 %: the campaign pauses
    assert any("paused: complaint rate 0.50%" in line for line in check())
    with Session(db) as s:
        kinds = sorted(a.kind for a in s.execute(select(Alert)).scalars())
        assert kinds == ["complaint_rate", "complaint_warning", "provider_paused"]
        assert s.get(ProviderState, "other.example").paused_until > now
        assert s.get(Campaign, audience.campaign_id).status == "paused"
    # What an operator (or a cron job) reads: the alerts, newest first, and the paused provider.
    shown = cli("alerts", "--json")
    assert shown.code == 0, shown.err
    doc = json.loads(shown.out)
    assert doc["alerts"][0]["kind"] == "complaint_rate"
    assert doc["alerts"][0]["campaign_id"] == audience.campaign_id
    assert sorted(a["kind"] for a in doc["alerts"]) == kinds
    [provider] = doc["providers"]
    assert provider["provider"] == "other.example" and provider["paused_until"] is not None
    human = cli("alerts", "--limit", "1")
    assert human.code == 0 and "complaint_rate" in human.out and "other.example" in human.out
    assert "provider_paused" not in human.out  # --limit 1: only the newest alert
    assert cli("alerts", "--limit", "0").code == 2


def test_the_worker_sends_real_pipeline_messages_by_default(cli, db, smtp, tmp_path):
    """No --factory: the worker renders, assembles and signs with the campaign pipeline."""
    now = datetime.now(UTC)
    with Session(db) as s, s.begin():
        from lists.models import MailingList

        s.add(MailingList(name="news", double_opt_in=False, created_at=now))
        s.flush()
        lst = s.execute(select(MailingList)).scalar_one()
        add_contacts(s, lst.id, ["ann@example.com", "bob@example.com"], now)
    made = cli("campaigns", "create", "--name", "June", "--kind", "newsletter", "--template",
               "newsletter", "--subject", "News for {{ contact.first_name or 'you' }}",
               "--list", "news", "--content", "headline=Summer is here",
               "--content", "body=New arrivals.", "--json")
    assert made.code == 0, made.err
    cid = str(json.loads(made.out)["id"])
    assert cli("campaigns", "send", cid).code == 0
    done = cli("worker", "--once", "--json")
    assert done.code == 0, done.err
    assert json.loads(done.out)["delivered"] == 2
    assert sorted(smtp.received()) == ["ann@example.com", "bob@example.com"]
    message = smtp.ledger[0].data
    assert b"List-Unsubscribe:" in message and b"Message-ID:" in message
    with Session(db) as s:
        stored = {m.message_id for m in s.execute(select(Message)).scalars()}
    assert {r.message_id for r in smtp.ledger} == stored


def test_several_worker_processes_share_a_postgresql_campaign(cli, db, smtp, backend):
    if backend != "postgresql":
        pytest.skip("SQLite sends from one worker at a time")
    audience = _audience(db, [f"m{i}@example.com" for i in range(30)])
    assert cli("campaigns", "send", str(audience.campaign_id)).code == 0
    done = cli("worker", "--once", "--processes", "2", "--factory",
               "tests.servers.factory:make", "--json")
    assert done.code == 0, done.err
    report = json.loads(done.out)
    assert report["processes"] == 2 and len(report["workers"]) == 2
    assert report["delivered"] == 30
    assert smtp.received() == {f"m{i}@example.com": 1 for i in range(30)}


def test_alerts_show_server_replies_verbatim_and_only_providers_still_slowed(db, cli):
    from datetime import timedelta

    from campaigns.delivery.alerts import AlertKind, AlertLevel, raise_alert
    from campaigns.models import ProviderState

    now = datetime.now(UTC)
    reply = "554 5.7.1 [mx.example.com] blocked, see [/policy] for details"
    with Session(db) as s, s.begin():
        raise_alert(s, now, AlertLevel.CRITICAL, AlertKind.POLICY_BLOCK, reply,
                    provider="example.com")
        s.add(ProviderState(provider="recovered.example", factor=0.5, updated_at=now,
                            last_deferral_at=now - timedelta(hours=2)))
        s.add(ProviderState(provider="slow.example", factor=0.5, updated_at=now,
                            last_deferral_at=now))
        s.add(ProviderState(provider="blocked.example", factor=1.0, updated_at=now,
                            paused_until=now + timedelta(minutes=30), pause_reason=reply))
    shown = cli("alerts")
    assert shown.code == 0, shown.err
    assert reply in shown.out  # server text is not read as console markup
    assert "slow.example: not paused, pace 50%" in shown.out
    assert "blocked.example: paused until" in shown.out
    assert "recovered.example" not in shown.out  # its pace came back since
    doc = json.loads(cli("alerts", "--json").out)
    assert [p["provider"] for p in doc["providers"]] == ["blocked.example", "slow.example"]
