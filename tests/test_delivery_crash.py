"""D2 under fire: `patron worker` processes SIGKILLed at random points of a campaign (seeded),
restarted each time, on SQLite and PostgreSQL (and two workers at once on PostgreSQL).
Afterwards the SMTP server's ledger shows every eligible recipient exactly once, except those
recorded `unknown` (at most once), and nobody else."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlmodel import col

from campaigns.delivery import controls
from campaigns.models import Message
from lists.models import Contact, SubscriptionStatus, SuppressionReason
from lists.suppressions import suppress
from patron.db import make_engine
from tests.servers.audience import add_contacts, freeze, make_campaign
from tests.servers.harness import KEY
from tests.servers.smtp import Faults, FaultySmtpServer

ROOT = Path(__file__).resolve().parent.parent
RECIPIENTS = 200
KILLS = 10


def _setup(db):
    now = datetime.now(UTC)
    with Session(db) as s, s.begin():
        audience = make_campaign(s, now)
        eligible = [f"e{i}@example.com" for i in range(RECIPIENTS)]
        add_contacts(s, audience.list_id, eligible, now)
        add_contacts(s, audience.list_id, ["pending@example.com"], now, SubscriptionStatus.PENDING)
        add_contacts(s, audience.list_id, ["gone@example.com"], now,
                     SubscriptionStatus.UNSUBSCRIBED)
        add_contacts(s, audience.list_id, ["blocked@example.com"], now)
        suppress(s, KEY, "blocked@example.com", SuppressionReason.COMPLAINT, now)
        controls.send_now(s, audience.campaign_id, now, freeze(KEY))
    return audience.campaign_id, set(eligible)


def _worker(db_url: str, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PATRON_DATABASE_URL": db_url,
        "PATRON_SMTP__PORT": str(port),
        "PATRON_SMTP__POOL_SIZE": "4",
        "PATRON_SMTP__LOCAL_HOSTNAME": "worker.test",
        "PATRON_DELIVERY__RATE": "10000",
        "PATRON_DELIVERY__PER_DOMAIN_CONCURRENCY": "4",
        "PATRON_DELIVERY__POLL_SECONDS": "0.1",
        "PATRON_DELIVERY__CLAIM_BATCH": "20",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "patron", "worker", "--once", "--factory",
         "tests.servers.factory:make"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def _kill_after_progress(proc, server, rng, timeout=15.0):
    """SIGKILL ``proc`` at a random instant once it has started sending (or when it ends)."""
    start = len(server.ledger)
    began = time.monotonic()
    while len(server.ledger) == start and proc.poll() is None:
        if time.monotonic() - began > timeout:
            break
        time.sleep(0.005)
    time.sleep(rng.uniform(0.0, 0.15))
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()


def _finish(db_url, server, campaign_id, db):
    for _ in range(5):
        proc = _worker(db_url, server.port)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
        with Session(db) as s:
            open_rows = s.execute(
                select(Message.id).where(
                    col(Message.campaign_id) == campaign_id,
                    col(Message.state).in_(("queued", "deferred", "sending")),
                )
            ).all()
        if not open_rows:
            return
    raise AssertionError("the campaign did not finish")


def _check(db, server, campaign_id, eligible):
    received = server.received()
    with Session(db) as s:
        states = dict(
            s.execute(
                select(Contact.email, Message.state)
                .join(Contact, col(Contact.id) == col(Message.contact_id))
                .where(col(Message.campaign_id) == campaign_id)
            ).all()
        )
    unknown = {e for e, state in states.items() if state == "unknown"}
    assert set(received) <= eligible, "someone ineligible received the campaign"
    for email in eligible:
        if email in unknown:
            assert received[email] <= 1, f"{email} (unknown outcome) received twice"
        else:
            assert states[email] == "sent", f"{email} ended {states[email]}"
            assert received[email] == 1, f"{email} received {received[email]} times"
    assert len(unknown) <= KILLS * 4  # at most the attempts in flight at each kill
    return Counter(states.values())


@pytest.fixture
def server():
    with FaultySmtpServer(Faults(reply_delay=0.004)) as smtp:
        yield smtp


def test_worker_killed_at_random_points_sends_everyone_once(db_url, server):
    db = make_engine(db_url)
    campaign_id, eligible = _setup(db)
    rng = random.Random(20260615)
    for _ in range(KILLS):
        _kill_after_progress(_worker(db_url, server.port), server, rng)
    _finish(db_url, server, campaign_id, db)
    counts = _check(db, server, campaign_id, eligible)
    assert counts["sent"] >= RECIPIENTS - KILLS * 4
    db.dispose()


def test_two_workers_killed_at_random_points_on_postgresql(db_url, server, backend):
    if backend != "postgresql":
        pytest.skip("several workers share PostgreSQL; SQLite sends from one at a time")
    db = make_engine(db_url)
    campaign_id, eligible = _setup(db)
    rng = random.Random(7)
    workers = [_worker(db_url, server.port), _worker(db_url, server.port)]
    for _ in range(KILLS):
        victim = rng.randrange(2)
        _kill_after_progress(workers[victim], server, rng)
        workers[victim] = _worker(db_url, server.port)
    for proc in workers:
        proc.wait(timeout=60)
    _finish(db_url, server, campaign_id, db)
    _check(db, server, campaign_id, eligible)
    db.dispose()
