"""The providers' shared pace in the database (provider_state): every worker reads it each
control tick, so a deferral seen by one worker slows all of them, and a policy block pauses the
provider's stream everywhere."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from campaigns.delivery.throttle import Pace
from campaigns.models import ProviderState


@dataclass(frozen=True, slots=True)
class ProviderView:
    pace: Pace
    paused_until: datetime | None
    pause_reason: str | None


def load_providers(session: Session) -> dict[str, ProviderView]:
    return {
        row.provider: ProviderView(
            Pace(row.factor, row.last_deferral_at), row.paused_until, row.pause_reason
        )
        for row in session.execute(select(ProviderState)).scalars()
    }


def _row(session: Session, provider: str, now: datetime) -> ProviderState:
    row = session.get(ProviderState, provider, with_for_update=True)
    if row is not None:
        return row
    try:
        with session.begin_nested():
            row = ProviderState(provider=provider, factor=1.0, updated_at=now)
            session.add(row)
    except IntegrityError:
        # Another worker created it first.
        row = session.get(ProviderState, provider, with_for_update=True, populate_existing=True)
        assert row is not None
    return row


def record_slowdown(session: Session, provider: str, pace: Pace, now: datetime) -> None:
    """Store a halved pace unless a more recent deferral was already stored."""
    row = _row(session, provider, now)
    if row.last_deferral_at is None or pace.last_deferral is None or (
        row.last_deferral_at < pace.last_deferral
    ):
        row.factor = pace.factor
        row.last_deferral_at = pace.last_deferral
        row.updated_at = now
    session.flush()


def pause_provider(
    session: Session, provider: str, until: datetime, reason: str, now: datetime
) -> bool:
    """Pause the provider's stream until ``until``; False if it already was paused that long."""
    row = _row(session, provider, now)
    if row.paused_until is not None and row.paused_until >= until:
        return False
    already = row.paused_until is not None and row.paused_until > now
    row.paused_until = until
    row.pause_reason = reason
    row.updated_at = now
    session.flush()
    return not already


def resume_provider(session: Session, provider: str, now: datetime) -> None:
    row = session.get(ProviderState, provider)
    if row is not None:
        row.paused_until = None
        row.pause_reason = None
        row.updated_at = now
        session.flush()
