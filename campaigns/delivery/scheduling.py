"""When each recipient's message is due (C2): at a time, or at each recipient's local time
(contacts.timezone, else a default zone), moved into an optional sending window such as
09:00–20:00 in the recipient's zone. Starting a campaign freezes its audience and writes the due
times into the send log (messages.due_at and next_attempt_at)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session
from sqlmodel import col

from campaigns.delivery.protocols import AudienceFreezer
from campaigns.lifecycle import transition
from campaigns.models import Campaign, CampaignStatus, Message, MessageState
from lists.errors import InvalidInputError
from lists.models import Contact

# The first zone to reach a local clock time is UTC+14 (Kiribati): a local-time campaign starts
# then, and its scheduled_at is that instant.
EARLIEST_ZONE = timezone(timedelta(hours=14))

_HHMM = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


def parse_hhmm(text: str) -> time:
    match = _HHMM.match(text.strip())
    if match is None:
        raise InvalidInputError(f"{text!r} is not a time of day HH:MM")
    return time(int(match.group(1)), int(match.group(2)))


@dataclass(frozen=True, slots=True)
class Window:
    """A daily sending window in the recipient's local time; it may wrap past midnight."""

    start: time
    end: time

    def contains(self, moment: time) -> bool:
        if self.start <= self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


def parse_window(text: str) -> Window:
    """``"09:00-20:00"`` → Window; an empty window is refused."""
    start, sep, end = text.partition("-")
    if not sep:
        raise InvalidInputError(f"{text!r} is not a window HH:MM-HH:MM")
    window = Window(parse_hhmm(start), parse_hhmm(end))
    if window.start == window.end:
        raise InvalidInputError(f"the window {text!r} is empty")
    return window


def campaign_window(campaign: Campaign) -> Window | None:
    if campaign.window_start and campaign.window_end:
        return Window(parse_hhmm(campaign.window_start), parse_hhmm(campaign.window_end))
    return None


@lru_cache(maxsize=1024)
def zone(name: str | None, default: str = "UTC") -> ZoneInfo:
    """The zone ``name``, or ``default`` when it is missing or unknown."""
    for candidate in (name, default, "UTC"):
        if candidate:
            try:
                return ZoneInfo(candidate)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    raise AssertionError("UTC is always known")


def local_instant(day: date, at: time, tz: ZoneInfo | timezone) -> datetime:
    """The UTC instant when the clock in ``tz`` shows ``day`` ``at``."""
    return datetime.combine(day, at, tzinfo=tz).astimezone(UTC)


def next_in_window(instant: datetime, tz: ZoneInfo, window: Window | None) -> datetime:
    """``instant`` if the recipient's clock is inside the window then, else the next opening."""
    if window is None:
        return instant
    local = instant.astimezone(tz)
    if window.contains(local.time().replace(tzinfo=None)):
        return instant
    opening = datetime.combine(local.date(), window.start, tzinfo=tz)
    if opening <= local:
        opening = datetime.combine(local.date() + timedelta(days=1), window.start, tzinfo=tz)
    return opening.astimezone(UTC)


def parse_at(text: str, default_timezone: str) -> datetime | date:
    """An ISO 8601 date or date-time; a date-time without offset is in the default zone."""
    text = text.strip()
    try:
        if "T" not in text and " " not in text and len(text) == 10:
            return date.fromisoformat(text)
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise InvalidInputError(f"{text!r} is not an ISO 8601 date or date-time") from exc
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone(default_timezone))
    return value.astimezone(UTC)


def schedule(
    campaign: Campaign,
    at: datetime | date,
    now: datetime,
    *,
    local_time: str | None = None,
    window: str | None = None,
) -> datetime:
    """Schedule ``campaign``: at ``at``, or on the day of ``at`` at each recipient's
    ``local_time``; within ``window`` if given. Returns when the campaign starts."""
    parsed_window = parse_window(window) if window else None
    if local_time is not None:
        clock = parse_hhmm(local_time)
        day = at if not isinstance(at, datetime) else at.date()
        starts = local_instant(day, clock, EARLIEST_ZONE)
        if local_instant(day, clock, timezone(timedelta(hours=-12))) <= now:
            raise InvalidInputError(f"{day} {local_time} has already passed everywhere")
        campaign.local_send_time = f"{clock:%H:%M}"
    else:
        if not isinstance(at, datetime):
            raise InvalidInputError("--at needs a time of day unless --local-time is given")
        if at <= now:
            raise InvalidInputError(f"{at.isoformat()} is in the past")
        starts = at
        campaign.local_send_time = None
    transition(campaign, CampaignStatus.SCHEDULED, now)
    campaign.scheduled_at = starts
    campaign.window_start = f"{parsed_window.start:%H:%M}" if parsed_window else None
    campaign.window_end = f"{parsed_window.end:%H:%M}" if parsed_window else None
    campaign.updated_at = now
    return starts


def start_campaign(
    session: Session,
    campaign: Campaign,
    now: datetime,
    freezer: AudienceFreezer,
    default_timezone: str = "UTC",
) -> None:
    """Freeze the audience (once), move the campaign to `sending` and write each queued
    recipient's due time. Idempotent, and atomic with the caller's transaction."""
    assert campaign.id is not None
    if campaign.audience_frozen_at is None:
        freezer(session, campaign, now)
        campaign.audience_frozen_at = campaign.audience_frozen_at or now
    transition(campaign, CampaignStatus.SENDING, now)
    session.flush()
    assign_due_times(session, campaign, now, default_timezone)
    if session.get_bind().dialect.name == "postgresql":
        # The send log may just have grown by a million rows: plans made on statistics from
        # before (autovacuum analyzes only later, or never when it is off) scanned the whole
        # queue for each batch. ANALYZE counts this transaction's own rows.
        session.execute(text("ANALYZE messages"))


def assign_due_times(
    session: Session, campaign: Campaign, now: datetime, default_timezone: str = "UTC"
) -> None:
    """Set due_at = next_attempt_at on the campaign's queued rows that have none yet."""
    window = campaign_window(campaign)
    # The same as campaigns.audience.first_due_time, which the audience freeze already wrote
    # into the rows of campaigns without zone rules (they are not `pending` below).
    base = max(campaign.scheduled_at or now, now)
    pending = (
        col(Message.campaign_id) == campaign.id,
        col(Message.state) == MessageState.QUEUED.value,
        col(Message.next_attempt_at).is_(None),
    )
    if campaign.local_send_time is not None or window is not None:
        zones = session.execute(
            select(col(Contact.timezone))
            .join(Message, col(Message.contact_id) == col(Contact.id))
            .where(*pending)
            .distinct()
        ).scalars()
        for name in list(zones):
            tz = zone(name, default_timezone)
            start = base
            if campaign.local_send_time is not None and campaign.scheduled_at is not None:
                day = campaign.scheduled_at.astimezone(EARLIEST_ZONE).date()
                start = max(local_instant(day, parse_hhmm(campaign.local_send_time), tz), now)
            due = next_in_window(start, tz, window)
            same_zone = (
                col(Contact.timezone).is_(None) if name is None else col(Contact.timezone) == name
            )
            in_zone = col(Message.contact_id).in_(select(col(Contact.id)).where(same_zone))
            session.execute(
                update(Message)
                .where(*pending, in_zone)
                .values(due_at=due, next_attempt_at=due, updated_at=now)
                .execution_options(synchronize_session=False)
            )
    # Everything else (no zone rule, or rows whose contact is gone) is due at the start; rows
    # of erased contacts are then skipped at send time.
    session.execute(
        update(Message)
        .where(*pending)
        .values(due_at=base, next_attempt_at=base, updated_at=now)
        .execution_options(synchronize_session=False)
    )
