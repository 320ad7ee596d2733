"""Alerts an operator must see (a provider blocking us, a campaign paused by its rates),
recorded in the database for the CLI and the TUI."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlmodel import col

from campaigns.models import Alert


class AlertLevel(StrEnum):
    WARNING = "warning"
    CRITICAL = "critical"


class AlertKind(StrEnum):
    POLICY_BLOCK = "policy_block"
    PROVIDER_PAUSED = "provider_paused"
    COMPLAINT_RATE = "complaint_rate"
    COMPLAINT_WARNING = "complaint_warning"
    BOUNCE_RATE = "bounce_rate"


def raise_alert(
    session: Session,
    now: datetime,
    level: AlertLevel,
    kind: AlertKind,
    message: str,
    *,
    campaign_id: int | None = None,
    provider: str | None = None,
) -> Alert:
    alert = Alert(
        created_at=now,
        level=level.value,
        kind=kind.value,
        campaign_id=campaign_id,
        provider=provider,
        message=message,
    )
    session.add(alert)
    session.flush()
    return alert


def has_alert(
    session: Session, kind: AlertKind, *, campaign_id: int | None = None,
    provider: str | None = None, since: datetime | None = None,
) -> bool:
    query = select(col(Alert.id)).where(col(Alert.kind) == kind.value)
    if campaign_id is not None:
        query = query.where(col(Alert.campaign_id) == campaign_id)
    if provider is not None:
        query = query.where(col(Alert.provider) == provider)
    if since is not None:
        query = query.where(col(Alert.created_at) >= since)
    return session.execute(query.limit(1)).first() is not None


def recent_alerts(session: Session, limit: int = 50) -> list[Alert]:
    return list(
        session.execute(select(Alert).order_by(col(Alert.id).desc()).limit(limit)).scalars()
    )
