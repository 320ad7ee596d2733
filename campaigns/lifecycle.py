"""Campaign states (C2): every status change goes through :func:`transition`, which checks it."""

from __future__ import annotations

from datetime import datetime

from campaigns.models import Campaign, CampaignStatus
from lists.errors import ConflictError

C = CampaignStatus

_ALLOWED: dict[C, frozenset[C]] = {
    C.DRAFT: frozenset({C.SCHEDULED, C.SENDING, C.CANCELLED}),
    C.SCHEDULED: frozenset({C.DRAFT, C.SENDING, C.CANCELLED}),
    C.SENDING: frozenset({C.PAUSED, C.SENT, C.CANCELLED}),
    C.PAUSED: frozenset({C.SENDING, C.CANCELLED}),
    C.SENT: frozenset(),
    C.CANCELLED: frozenset(),
}

EDITABLE = frozenset({C.DRAFT, C.SCHEDULED})


def can_transition(current: C, new: C) -> bool:
    return new in _ALLOWED[current]


def transition(campaign: Campaign, new: C, now: datetime) -> None:
    """Move ``campaign`` to ``new`` or raise ConflictError naming both states."""
    current = C(campaign.status)
    if current == new:
        return
    if not can_transition(current, new):
        raise ConflictError(
            f"campaign {campaign.id} is {current}: it cannot become {new}"
        )
    campaign.status = new.value
    campaign.updated_at = now
    if new is C.SENDING and campaign.started_at is None:
        campaign.started_at = now
    if new in (C.SENT, C.CANCELLED):
        campaign.finished_at = now


def require_editable(campaign: Campaign) -> None:
    """Content and audience may change only before sending starts."""
    if C(campaign.status) not in EDITABLE:
        raise ConflictError(
            f"campaign {campaign.id} is {campaign.status}: it can no longer be edited"
        )
