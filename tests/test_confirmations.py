"""Double opt-in confirmation mail (A2, A5) through the delivery engine: the worker's sweep
queues one confirmation per pending subscription of a double opt-in list, the engine sends it
once (real pipeline, real SMTP server, SQLite and PostgreSQL), its link confirms, and nobody
pending receives anything else."""

from __future__ import annotations

import asyncio
import csv
import email
import email.policy
import itertools
import json
import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import get_args

import dkim
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session
from sqlmodel import col

from campaigns.confirmations import (
    CONFIRMATION_WINDOW,
    ConfirmationSweeper,
    confirmation_campaign_of,
    sweep_confirmations,
)
from campaigns.delivery import controls
from campaigns.delivery.config import DeliveryConfig
from campaigns.delivery.engine import DeliveryEngine
from campaigns.delivery.protocols import MessageFactory
from campaigns.delivery.providers import ProviderDirectory
from campaigns.delivery.smtp import SmtpTransport
from campaigns.delivery.stats import delivery_stats
from campaigns.message.dkim import DkimSigner, generate_dkim_key
from campaigns.models import Campaign, CampaignKind, CampaignList, Message, MessageState
from campaigns.pipeline import SenderIdentity
from campaigns.rendering import load_shipped_template
from lists.clock import SystemClock
from lists.consent import Provenance, confirm, confirm_token, subscribe, unsubscribe
from lists.gdpr import erase_contact
from lists.imports.contacts import import_contacts
from lists.mailing_lists import create_list
from lists.models import (
    Contact,
    MailingList,
    Subscription,
    SubscriptionStatus,
    SuppressionReason,
)
from lists.suppressions import suppress
from patron.db import make_engine
from patron.messages import PipelineMessageFactory
from tests.servers.audience import freeze
from tests.servers.factory import PlainFactory
from tests.servers.harness import FAST, KEY, smtp_config
from tests.servers.smtp import FaultySmtpServer

FORM = Provenance("newsletter form")
BASE = "https://t.shop.example"
PENDING = SubscriptionStatus.PENDING


@pytest.fixture(scope="module")
def dkim_key() -> tuple[bytes, str]:
    return generate_dkim_key()


def now() -> datetime:
    return datetime.now(UTC)


def identity(dkim_key: tuple[bytes, str] | None = None) -> SenderIdentity:
    signer = DkimSigner("shop.example", "s1", dkim_key[0]) if dkim_key else None
    return SenderIdentity(
        from_address="Shop <news@shop.example>",
        postal_address="1 Rue de la Gare, Esch",
        tracking_base_url=BASE,
        dkim=signer,
    )


def worker(db: Engine, port: int, factory: MessageFactory,
           config: DeliveryConfig = FAST) -> DeliveryEngine:
    """The engine as `patron worker` wires it: with the confirmation sweeper."""
    return DeliveryEngine(
        db,
        factory=factory,
        transport=SmtpTransport(smtp_config(port)),
        directory=ProviderDirectory(None, timeout=0.5),
        clock=SystemClock(),
        config=config,
        key=KEY,
        freezer=freeze(KEY),
        sweeper=ConfirmationSweeper(interval=0.2),
    )


def run_once(*engines: DeliveryEngine) -> None:
    """Run workers side by side until nothing is due (`patron worker --once`)."""

    async def go() -> None:
        try:
            await asyncio.gather(*(e.run(once=True) for e in engines))
        finally:
            for e in engines:
                await e.close_transport()

    asyncio.run(go())


def write_csv(path: Path, emails: list[str]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["email", "first_name"])
        for address in emails:
            writer.writerow([address, address.split("@")[0].title()])
    return path


def make_lists(db: Engine, *double: str, single: tuple[str, ...] = ()) -> dict[str, int]:
    with Session(db) as s, s.begin():
        made = {n: create_list(s, n, now()) for n in double}
        made |= {n: create_list(s, n, now(), double_opt_in=False) for n in single}
        return {n: lst.id for n, lst in made.items()}


def add_pending(db: Engine, list_name: str, emails: list[str]) -> dict[str, int]:
    """Contacts signing up on a form (pending on a double opt-in list)."""
    with Session(db) as s, s.begin():
        lst = s.execute(select(MailingList).where(col(MailingList.name) == list_name)).scalar_one()
        ids = {}
        for address in emails:
            contact = Contact(email=address, created_at=now(), updated_at=now())
            s.add(contact)
            s.flush()
            subscribe(s, contact.id, lst, FORM, now())
            ids[address] = contact.id
        return ids


def marketing_campaign(db: Engine, list_id: int, name: str) -> int:
    template = load_shipped_template("welcome")
    with Session(db) as s, s.begin():
        campaign = Campaign(name=name, slug=name, kind="newsletter", template="welcome",
                            template_source=template.text, subject="News",
                            created_at=now(), updated_at=now())
        s.add(campaign)
        s.flush()
        s.add(CampaignList(campaign_id=campaign.id, list_id=list_id))
        s.flush()
        controls.send_now(s, campaign.id, now(), freeze(KEY))
        return campaign.id


def confirmation_id(db: Engine, list_id: int) -> int | None:
    with Session(db) as s:
        campaign = confirmation_campaign_of(s, list_id)
        return campaign.id if campaign is not None else None


def status_of(db: Engine, contact_id: int, list_id: int) -> str:
    with Session(db) as s:
        return s.get(Subscription, (contact_id, list_id)).status


def confirm_link(data: bytes) -> str:
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    text = parsed.get_body(preferencelist=("plain",)).get_content()
    links = set(re.findall(rf"{re.escape(BASE)}/confirm/[A-Za-z0-9._-]+", text))
    assert len(links) == 1, text
    return links.pop()


def test_import_into_a_double_opt_in_list_sends_one_confirmation_whose_link_confirms(
    db, ctx, cli, smtp, tmp_path, dkim_key
):
    lists = make_lists(db, "news", "club", single=("vip",))
    pending = ["ann@example.com", "bob@example.com", "cy@example.org"]
    import_contacts(db, KEY, write_csv(tmp_path / "news.csv", pending), list_name="news",
                    consent_source="shop sign-up form", now=now())
    # Consent already confirmed elsewhere, and a single opt-in list: nothing to ask.
    import_contacts(db, KEY, write_csv(tmp_path / "club.csv", ["dee@example.com"]),
                    list_name="club", consent_source="paper form, confirmed", now=now(),
                    confirmed=True)
    import_contacts(db, KEY, write_csv(tmp_path / "vip.csv", ["eve@example.com"]),
                    list_name="vip", consent_source="checkout", now=now())
    factory = PipelineMessageFactory(ctx, identity(dkim_key))

    run_once(worker(db, smtp.port, factory))
    run_once(worker(db, smtp.port, factory))  # a second run sends nothing again

    assert smtp.received() == Counter({address: 1 for address in pending})
    assert confirmation_id(db, lists["club"]) is None
    assert confirmation_id(db, lists["vip"]) is None
    campaign_id = confirmation_id(db, lists["news"])
    assert campaign_id is not None

    received = {r.recipient: r for r in smtp.ledger}
    data = received["ann@example.com"].data
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert parsed["Subject"] == "Please confirm your subscription to Shop"
    assert parsed["To"] == "Ann <ann@example.com>"
    assert parsed["From"] == "Shop <news@shop.example>"
    # Transactional: no unsubscribe header, no open pixel, no tracked links, no offer.
    assert "List-Unsubscribe" not in parsed and "List-Unsubscribe-Post" not in parsed
    html = parsed.get_body(preferencelist=("html",)).get_content()
    assert f"{BASE}/o/" not in html and f"{BASE}/c/" not in html
    assert "discount" not in html.lower()
    assert dkim.verify(data, dnsfunc=lambda name, timeout=5: dkim_key[1].encode())

    link = confirm_link(data)
    assert f'href="{link}"' in html
    with Session(db) as s, s.begin():
        ann = s.execute(select(Contact).where(col(Contact.email) == "ann@example.com")).scalar_one()
        assert confirm(s, KEY, link.rpartition("/")[2], Provenance("confirmation link"), now())
        ann_id = ann.id
    assert status_of(db, ann_id, lists["news"]) == "confirmed"

    stats = json.loads(cli("campaigns", "stats", str(campaign_id), "--json").out)
    assert stats["sent"] == 3 and stats["recipients"] == 3 and stats["status"] == "sending"
    listed = {c["id"]: c for c in json.loads(cli("campaigns", "ls", "--json").out)}
    assert listed[campaign_id]["kind"] == "confirmation"
    assert listed[campaign_id]["name"] == "Confirm subscription: news"
    assert listed[campaign_id]["sent"] == 3


def test_marketing_reaches_pending_contacts_only_once_they_confirm(db, smtp):
    lists = make_lists(db, "news")
    news = lists["news"]
    ids = add_pending(db, "news", ["ann@example.com", "bob@example.com", "cy@example.com"])
    with Session(db) as s, s.begin():  # cy confirms right away
        lst = s.get(MailingList, news)
        subscribe(s, ids["cy@example.com"], lst, FORM, now(), confirmed=True)
    first = marketing_campaign(db, news, "june")
    run_once(worker(db, smtp.port, PlainFactory(db)))

    subjects = Counter((r.recipient, r.data.split(b"Subject: ")[1].split(b"\r\n")[0])
                       for r in smtp.ledger)
    confirmation = confirmation_id(db, news)
    assert subjects == Counter({
        ("ann@example.com", f"Campaign {confirmation} (variant 0)".encode()): 1,
        ("bob@example.com", f"Campaign {confirmation} (variant 0)".encode()): 1,
        ("cy@example.com", f"Campaign {first} (variant 0)".encode()): 1,
    })
    with Session(db) as s:
        assert delivery_stats(s, first, "sending").skipped == {"not_confirmed": 2}

    with Session(db) as s, s.begin():
        confirm(s, KEY, confirm_token(KEY, ids["ann@example.com"], news),
                Provenance("confirmation link"), now())
    smtp.ledger.clear()
    second = marketing_campaign(db, news, "july")
    run_once(worker(db, smtp.port, PlainFactory(db)))
    # Ann now receives marketing (her confirmation did not count towards the frequency cap);
    # cy got the June campaign a moment ago and is capped; bob is still pending.
    assert smtp.received() == Counter({"ann@example.com": 1})
    with Session(db) as s:
        assert delivery_stats(s, second, "sending").skipped == {
            "not_confirmed": 1, "frequency_cap": 1,
        }


def test_confirmed_unsubscribed_suppressed_or_erased_before_sending_get_none(db, smtp):
    news = make_lists(db, "news")["news"]
    people = ["ann@example.com", "bob@example.com", "cy@example.com", "dee@example.com",
              "eve@example.com"]
    ids = add_pending(db, "news", people)
    with Session(db) as s, s.begin():  # queued by a sweep, then everyone but eve moves on
        result = sweep_confirmations(s, now())
        assert result.queued == 5 and len(result.created) == 1
        lst = s.get(MailingList, news)
        confirm(s, KEY, confirm_token(KEY, ids["ann@example.com"], news),
                Provenance("confirmation link"), now())
        unsubscribe(s, KEY, s.get(Contact, ids["bob@example.com"]), FORM, now(),
                    mailing_list=lst)
        suppress(s, KEY, "cy@example.com", SuppressionReason.MANUAL, now())
        erase_contact(s, KEY, s.get(Contact, ids["dee@example.com"]), now())
    run_once(worker(db, smtp.port, PlainFactory(db)))

    assert smtp.received() == Counter({"eve@example.com": 1})
    campaign_id = confirmation_id(db, news)
    with Session(db) as s:
        stats = delivery_stats(s, campaign_id, "sending")
    assert stats.sent == 1
    assert stats.skipped == {"already_confirmed": 1, "unsubscribed": 1, "suppressed": 2}

    # Bob signs up again: his skipped confirmation is queued anew and sent, once.
    with Session(db) as s, s.begin():
        subscribe(s, ids["bob@example.com"], s.get(MailingList, news), FORM, now())
    run_once(worker(db, smtp.port, PlainFactory(db)))
    run_once(worker(db, smtp.port, PlainFactory(db)))
    assert smtp.received() == Counter({"eve@example.com": 1, "bob@example.com": 1})

    # Eve got hers, confirmed, left, and signs up again: a new confirmation, with a Message-ID
    # of its own (receivers drop one whose Message-ID they have seen), then no more.
    with Session(db) as s, s.begin():
        confirm(s, KEY, confirm_token(KEY, ids["eve@example.com"], news),
                Provenance("confirmation link"), now())
        unsubscribe(s, KEY, s.get(Contact, ids["eve@example.com"]), FORM, now(),
                    mailing_list=s.get(MailingList, news))
    with Session(db) as s, s.begin():
        subscribe(s, ids["eve@example.com"], s.get(MailingList, news), FORM, now())
    run_once(worker(db, smtp.port, PlainFactory(db)))
    run_once(worker(db, smtp.port, PlainFactory(db)))
    assert smtp.received() == Counter({"eve@example.com": 2, "bob@example.com": 1})
    # Message-IDs are made from the engine's hint for the row (PlainFactory adds a random tag
    # after it): the renewed row's hint is new.
    hints = {r.message_id.strip("<").partition("@")[0].rpartition(".")[0] for r in smtp.ledger
             if r.recipient == "eve@example.com"}
    assert len(hints) == 2


def test_sweeping_twice_or_from_two_workers_queues_each_confirmation_once(
    db, cli, smtp, backend, monkeypatch
):
    news = make_lists(db, "news")["news"]
    people = [f"p{i}@example.com" for i in range(40)]
    add_pending(db, "news", people)
    with Session(db) as one, one.begin():
        assert sweep_confirmations(one, now()).queued == 40
        if backend == "postgresql":
            # A second worker sweeping meanwhile backs off instead of waiting or doubling.
            with Session(db) as two, two.begin():
                assert sweep_confirmations(two, now()).busy
    with Session(db) as s, s.begin():
        again = sweep_confirmations(s, now())
        assert (again.queued, again.requeued, again.created) == (0, 0, ())
    add_pending(db, "news", ["late@example.com"])  # queued by the workers' own sweep

    monkeypatch.setenv("PATRON_SMTP__PORT", str(smtp.port))
    monkeypatch.setenv("PATRON_SMTP__LOCAL_HOSTNAME", "worker.test")
    processes = "2" if backend == "postgresql" else "1"  # SQLite sends from one at a time
    done = cli("worker", "--once", "--processes", processes, "--factory",
               "tests.servers.factory:make", "--json")
    assert done.code == 0, done.err
    assert json.loads(done.out)["delivered"] == 41

    assert smtp.received() == Counter({address: 1 for address in [*people, "late@example.com"]})
    with Session(db) as s:
        rows = s.execute(
            select(col(Message.state)).where(col(Message.campaign_id) == confirmation_id(db, news))
        ).scalars().all()
    assert Counter(rows) == Counter({MessageState.SENT.value: 41})


def test_old_pending_sign_ups_are_not_mailed_out_of_the_blue(db):
    news = make_lists(db, "news")["news"]
    add_pending(db, "news", ["old@example.com"])
    later = now() + CONFIRMATION_WINDOW * 2
    with Session(db) as s, s.begin():
        result = sweep_confirmations(s, later)
    assert result.queued == 0 and len(result.created) == 1
    assert confirmation_id(db, news) is not None


def test_a_big_backlog_is_queued_over_several_sweeps(db):
    make_lists(db, "news")
    add_pending(db, "news", [f"p{i}@example.com" for i in range(5)])
    counts = []
    for _ in range(3):
        with Session(db) as s, s.begin():
            counts.append(sweep_confirmations(s, now(), limit=3).queued)
    assert counts == [3, 2, 0]


def test_confirmation_campaigns_cannot_be_made_or_cancelled_by_hand_but_pause(cli, db, smtp):
    from patron.cli.cmd_campaigns import CreatableKind

    assert "confirmation" not in get_args(CreatableKind)
    assert set(get_args(CreatableKind)) == {k.value for k in CampaignKind} - {"confirmation"}
    news = make_lists(db, "news")["news"]
    add_pending(db, "news", ["ann@example.com"])
    made = cli("campaigns", "create", "--name", "Sneaky", "--kind", "confirmation",
               "--template", "newsletter", "--subject", "Buy", "--list", "news",
               "--content", "headline=Sale")
    assert made.code != 0 and "confirmation" in made.err
    with Session(db) as s, s.begin():
        sweep_confirmations(s, now())
    campaign_id = str(confirmation_id(db, news))
    refused = cli("campaigns", "cancel", campaign_id)
    assert refused.code != 0 and "pause it instead" in refused.err
    assert cli("campaigns", "pause", campaign_id).code == 0
    run_once(worker(db, smtp.port, PlainFactory(db)))
    assert smtp.received() == Counter()  # paused: queued, not sent
    assert cli("campaigns", "resume", campaign_id).code == 0
    run_once(worker(db, smtp.port, PlainFactory(db)))
    assert smtp.received() == Counter({"ann@example.com": 1})


def test_the_demo_queues_its_recent_pending_sign_ups_confirmations(db_url, db, ctx, smtp):
    from patron.demo import run_demo
    from tests.conftest import NOW, TEST_SECRET

    result = run_demo(db_url, contacts=300, seed=3, now=NOW, key=TEST_SECRET.encode())
    since = NOW - CONFIRMATION_WINDOW
    with Session(db) as s:
        recent_pending = set(s.execute(
            select(col(Contact.email))
            .join(Subscription, col(Subscription.contact_id) == col(Contact.id))
            .where(col(Subscription.status) == PENDING.value,
                   col(Subscription.updated_at) >= since)
        ).scalars())
    assert recent_pending and result.confirmations_queued == len(recent_pending)
    # The worker sends them, as the demo shop's pipeline renders them, to those people only.
    run_once(worker(db, smtp.port, PipelineMessageFactory(ctx, identity())))
    assert smtp.received() == Counter({address: 1 for address in recent_pending})
    assert all(b"/confirm/" in r.data for r in smtp.ledger)


# -- Q2 with confirmations ------------------------------------------------------------------

STATUSES = [SubscriptionStatus.CONFIRMED, SubscriptionStatus.PENDING,
            SubscriptionStatus.UNSUBSCRIBED]
AFTER_QUEUEING = ["nothing", "unsubscribe", "suppress", "erase", "confirm"]
person = st.tuples(st.sampled_from(STATUSES), st.booleans(), st.sampled_from(AFTER_QUEUEING))
_run = itertools.count()


@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(people=st.lists(person, min_size=1, max_size=8))
def test_pending_contacts_receive_nothing_but_their_one_confirmation(db_factory, people):
    """Whatever mix of consent states a double opt-in list holds when a marketing campaign is
    frozen and confirmations are queued, and whatever changes before the worker sends: the
    marketing goes only to confirmed, unsuppressed contacts; a confirmation only to those still
    pending and unsuppressed; each at most once."""
    db = make_engine(db_factory())
    run = next(_run)
    at = now()
    expect_marketing: set[str] = set()
    expect_confirmation: set[str] = set()
    with Session(db) as s, s.begin():
        lst = create_list(s, "news", at)
        plan = []
        for i, (status, suppressed, later) in enumerate(people):
            address = f"q{run}-{i}@example.com"
            contact = Contact(email=address, created_at=at, updated_at=at)
            s.add(contact)
            s.flush()
            s.add(Subscription(contact_id=contact.id, list_id=lst.id, status=status.value,
                               created_at=at, updated_at=at))
            if suppressed:
                suppress(s, KEY, address, SuppressionReason.MANUAL, at)
            plan.append((contact.id, address, later))
            fine = not suppressed and later in ("nothing", "confirm")
            if status is SubscriptionStatus.CONFIRMED and fine:
                expect_marketing.add(address)
            if status is PENDING and not suppressed and later == "nothing":
                expect_confirmation.add(address)
        s.flush()
        list_id = lst.id
    marketing = marketing_campaign(db, list_id, f"m{run}")
    with Session(db) as s, s.begin():
        sweep_confirmations(s, at)
    with Session(db) as s, s.begin():
        lst = s.get(MailingList, list_id)
        for contact_id, address, later in plan:
            contact = s.get(Contact, contact_id)
            if later == "unsubscribe":
                unsubscribe(s, KEY, contact, FORM, at, mailing_list=lst)
            elif later == "suppress":
                suppress(s, KEY, address, SuppressionReason.COMPLAINT, at)
            elif later == "erase":
                erase_contact(s, KEY, contact, at)
            elif later == "confirm" and s.get(Subscription, (contact_id, list_id)).status == (
                PENDING.value
            ):
                subscribe(s, contact_id, lst, FORM, at, confirmed=True)
    run_once(worker(db, SERVER.port, PlainFactory(db)))

    mine = [r for r in SERVER.ledger if r.recipient.startswith(f"q{run}-")]
    by_campaign: dict[bytes, Counter[str]] = {}
    for r in mine:
        subject = r.data.split(b"Subject: Campaign ")[1].split(b" ")[0]
        by_campaign.setdefault(subject, Counter())[r.recipient] += 1
    confirmation = str(confirmation_id(db, list_id)).encode()
    assert set(by_campaign.get(str(marketing).encode(), {})) == expect_marketing
    assert set(by_campaign.get(confirmation, {})) == expect_confirmation
    assert set(by_campaign) <= {str(marketing).encode(), confirmation}
    assert all(n == 1 for counts in by_campaign.values() for n in counts.values())
    db.dispose()


SERVER = FaultySmtpServer().start()
