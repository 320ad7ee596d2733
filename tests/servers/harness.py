"""Run the delivery engine in-process against the test SMTP server, with short timings."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session
from sqlmodel import col

from campaigns.delivery.config import DeliveryConfig
from campaigns.delivery.engine import DeliveryEngine, RunReport
from campaigns.delivery.protocols import MessageFactory, Resolver
from campaigns.delivery.providers import ProviderDirectory
from campaigns.delivery.retry import RetryPolicy
from campaigns.delivery.smtp import Relay, SmtpConfig, SmtpTransport
from campaigns.models import Message, MessageState
from lists.clock import SystemClock
from tests.conftest import TEST_SECRET
from tests.servers.audience import freeze
from tests.servers.factory import PlainFactory

KEY = TEST_SECRET.encode()

FAST = DeliveryConfig(
    rate=10_000,
    per_domain_concurrency=8,
    retry=RetryPolicy(initial_seconds=0.2, multiplier=1.5, max_interval_seconds=0.5, jitter=0.0,
                      lifetime_seconds=30.0),
    max_in_flight=8,
    poll_seconds=0.05,
    control_interval=0.1,
    claim_batch=100,
    rate_check_min_messages=10_000,
    sending_domain="shop.example",
)


def fast(**changes: Any) -> DeliveryConfig:
    return dataclasses.replace(FAST, **changes)


def smtp_config(*ports: int, **changes: Any) -> SmtpConfig:
    base = SmtpConfig(relays=tuple(Relay("127.0.0.1", p) for p in ports), pool_size=8,
                      timeout=5.0, local_hostname="worker.test")
    return dataclasses.replace(base, **changes)


def build(
    db: Engine,
    port: int,
    *,
    config: DeliveryConfig = FAST,
    smtp: SmtpConfig | None = None,
    resolver: Resolver | None = None,
    factory: MessageFactory | None = None,
) -> DeliveryEngine:
    return DeliveryEngine(
        db,
        factory=factory or PlainFactory(db),
        transport=SmtpTransport(smtp or smtp_config(port)),
        directory=ProviderDirectory(resolver, timeout=0.5),
        clock=SystemClock(),
        config=config,
        key=KEY,
        freezer=freeze(KEY),
    )


OPEN = (MessageState.QUEUED.value, MessageState.DEFERRED.value, MessageState.SENDING.value)


def open_rows(db: Engine, campaign_id: int) -> int:
    """Rows of the campaign still to be sent (queued, deferred or in flight)."""
    with Session(db) as session:
        query = select(func.count()).where(
            col(Message.campaign_id) == campaign_id, col(Message.state).in_(OPEN)
        )
        return int(session.execute(query).scalar_one())


async def run_until(
    engine: DeliveryEngine, done: Callable[[], bool], timeout: float = 20.0
) -> RunReport:
    """Run the worker until ``done()`` holds (checked every 50 ms), then stop it."""
    task = asyncio.create_task(engine.run())
    began = time.monotonic()
    try:
        while not done():
            if task.done():
                return task.result()
            if time.monotonic() - began > timeout:
                raise AssertionError("the worker did not finish in time")
            await asyncio.sleep(0.05)
    finally:
        engine.stop()
        report = await task
        await engine.close_transport()
    return report


def send_all(engine: DeliveryEngine, db: Engine, campaign_id: int, timeout: float = 20.0
             ) -> RunReport:
    """Run until the campaign has nothing left to send."""
    return asyncio.run(run_until(engine, lambda: open_rows(db, campaign_id) == 0, timeout))
