"""The SQL of the send path, built once per database dialect and executed with parameters.

Per batch the send path runs a fixed handful of statements whatever the batch size: on
PostgreSQL lists travel as arrays (``= ANY(:ids)``, ``unnest``), so each statement has one text,
is compiled once and prepared by the server; on SQLite (one sender, in-process) lists are
expanded and per-row values go through executemany. Building statements per batch (a CASE per
row, an IN list per length) cost more CPU than sending the messages."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    String,
    Table,
    TextClause,
    and_,
    any_,
    bindparam,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session
from sqlalchemy.sql import Executable
from sqlmodel import SQLModel

from campaigns.models import CampaignKind, CampaignStatus, MessageState
from lists.models import EventClass, EventKind, SubscriptionStatus

PENDING = (MessageState.QUEUED.value, MessageState.DEFERRED.value)
TRANSACTIONAL_KINDS = (CampaignKind.CONFIRMATION.value,)


def _t(name: str) -> Table:
    return SQLModel.metadata.tables[name]


def state_in(column: ColumnElement[str], states: Sequence[str]) -> ColumnElement[bool]:
    """``column IN (…)`` spelled with OR, which (unlike IN) works in executemany statements."""
    return or_(*(column == s for s in states))


@dataclass(frozen=True, slots=True)
class Finished:
    """Values of one outcome row."""

    row_id: int
    attempt: int
    state: str
    reply: str
    failure: str | None
    sent_at: datetime | None
    next_attempt_at: datetime | None
    provider: str | None
    contact_id: int | None
    campaign_id: int
    marketing: bool


class SendPath:
    """The statements of one dialect; get one with :func:`send_path`."""

    def __init__(self, dialect: str) -> None:
        self.pg = dialect == "postgresql"
        m, c = _t("messages"), _t("contacts")
        subs, lists = _t("subscriptions"), _t("campaign_lists")
        supp, camps = _t("suppressions"), _t("campaigns")
        self._m = m

        def ids(column: ColumnElement[Any], name: str, item: Any = Integer) -> ColumnElement[bool]:
            if self.pg:
                return column == any_(bindparam(name, type_=ARRAY(item)))
            return column.in_(bindparam(name, expanding=True))

        self.suppressed: Executable = select(supp.c.address_hmac).where(
            ids(supp.c.address_hmac, "digests", String)
        )
        self.contacts: Executable = (
            select(c.c.id, c.c.last_emailed_at, lists.c.campaign_id, subs.c.status)
            .select_from(c)
            .outerjoin(subs, subs.c.contact_id == c.c.id)
            .outerjoin(
                lists,
                and_(lists.c.list_id == subs.c.list_id, ids(lists.c.campaign_id, "campaigns")),
            )
            .where(ids(c.c.id, "contacts"))
        )
        self.in_flight: Executable = (
            select(m.c.contact_id, m.c.campaign_id)
            .join(camps, camps.c.id == m.c.campaign_id)
            .where(
                ids(m.c.contact_id, "contacts"),
                m.c.state == MessageState.SENDING.value,
                camps.c.kind.not_in(TRANSACTIONAL_KINDS),
            )
        )
        self.discounts: Executable = (
            select(m.c.contact_id, m.c.campaign_id)
            .join(camps, camps.c.id == m.c.campaign_id)
            .where(
                ids(m.c.contact_id, "contacts"),
                camps.c.kind == CampaignKind.DISCOUNT.value,
                m.c.state.in_(
                    (MessageState.SENT.value, MessageState.UNKNOWN.value,
                     MessageState.SENDING.value)
                ),
                m.c.last_attempt_at >= bindparam("since", type_=m.c.last_attempt_at.type),
            )
        )
        mine = and_(m.c.lease_owner == bindparam("me"), state_in(m.c.state, PENDING))
        sending = select(camps.c.id).where(camps.c.status == CampaignStatus.SENDING.value)
        now = bindparam("now", type_=m.c.updated_at.type)
        self.mark: Executable = (
            update(m)
            .where(ids(m.c.id, "ids"), mine, m.c.campaign_id.in_(sending))
            .values(
                state=MessageState.SENDING.value,
                attempts=m.c.attempts + 1,
                first_attempt_at=func.coalesce(m.c.first_attempt_at, now),
                last_attempt_at=now,
                updated_at=now,
            )
            .returning(m.c.id)
        )
        self.mark_pg: TextClause = text(
            "UPDATE messages SET state = 'sending', attempts = messages.attempts + 1, "
            "first_attempt_at = COALESCE(messages.first_attempt_at, :now), "
            "last_attempt_at = :now, updated_at = :now, message_id = u.mid, "
            "provider = u.provider "
            "FROM unnest(CAST(:ids AS integer[]), CAST(:mids AS text[]), "
            "CAST(:providers AS text[])) AS u(id, mid, provider) "
            "WHERE messages.id = u.id AND messages.lease_owner = :me "
            "AND messages.state IN ('queued', 'deferred') "
            "AND messages.campaign_id IN (SELECT id FROM campaigns WHERE status = 'sending') "
            "RETURNING messages.id"
        )
        self.label_one: Executable = (
            update(m)
            .where(m.c.id == bindparam("b_id"))
            .values(message_id=bindparam("b_mid"), provider=bindparam("b_provider"))
        )
        self.skip: Executable = (
            update(m)
            .where(m.c.id == bindparam("b_id"), mine)
            .values(state=MessageState.SKIPPED.value, skip_reason=bindparam("b_reason"),
                    lease_owner=None, updated_at=now)
        )
        self.give_back: Executable = (
            update(m).where(ids(m.c.id, "ids"), mine).values(lease_owner=None)
        )
        # One round trip for all outcomes of a batch: the rows, their `sent` events and the
        # contacts' last_emailed_at (events only for rows the update really matched).
        self.finish_pg: TextClause = text(
            "WITH u AS (SELECT * FROM unnest(CAST(:ids AS integer[]), "
            "CAST(:attempts AS integer[]), CAST(:states AS text[]), CAST(:replies AS text[]), "
            "CAST(:failures AS text[]), CAST(:sent AS timestamptz[]), "
            "CAST(:nexts AS timestamptz[]), CAST(:providers AS text[]), "
            "CAST(:contacts AS integer[]), CAST(:campaigns AS integer[]), "
            "CAST(:marketing AS boolean[])) AS u(id, attempt, state, reply, failure, sent_at, "
            "next_at, provider, contact, campaign, marketing)), "
            "f AS (UPDATE messages SET state = u.state, last_reply = u.reply, "
            "failure = u.failure, sent_at = u.sent_at, next_attempt_at = u.next_at, "
            "provider = COALESCE(u.provider, messages.provider), lease_owner = NULL, "
            "updated_at = :now FROM u WHERE messages.id = u.id AND messages.attempts = u.attempt "
            "AND messages.state IN ('sending', 'unknown') RETURNING messages.id), "
            "e AS (INSERT INTO events (contact_id, campaign_id, kind, classification, "
            "occurred_at) SELECT u.contact, u.campaign, 'sent', 'human', :now FROM u "
            "JOIN f ON f.id = u.id WHERE u.state = 'sent' AND u.contact IS NOT NULL) "
            "UPDATE contacts SET last_emailed_at = :now FROM u JOIN f ON f.id = u.id "
            "WHERE contacts.id = u.contact AND u.state = 'sent' AND u.marketing"
        )
        finish_values = {
            "state": bindparam("b_state"),
            "last_reply": bindparam("b_reply"),
            "failure": bindparam("b_failure"),
            "sent_at": bindparam("b_sent_at", type_=m.c.sent_at.type),
            "next_attempt_at": bindparam("b_next", type_=m.c.next_attempt_at.type),
            "provider": func.coalesce(
                bindparam("b_provider", type_=m.c.provider.type), m.c.provider
            ),
            "lease_owner": None,
            "updated_at": now,
        }
        self.finish_one: Executable = (
            update(m)
            .where(
                m.c.id == bindparam("b_id"),
                m.c.attempts == bindparam("b_attempt"),
                state_in(m.c.state, (MessageState.SENDING.value, MessageState.UNKNOWN.value)),
            )
            .values(**finish_values)
        )
        # An attempt that failed before its commit point (refused at RCPT, connection lost):
        # still a pending row under our lease; the attempt is counted here.
        self.finish_unstarted: Executable = (
            update(m)
            .where(m.c.id == bindparam("b_id"), mine, (m.c.attempts + 1) == bindparam("b_attempt"))
            .values(
                **finish_values,
                attempts=m.c.attempts + 1,
                first_attempt_at=func.coalesce(m.c.first_attempt_at, now),
                last_attempt_at=now,
            )
        )
        self.sent_events: Executable = insert(_t("events"))
        self.touch: Executable = (
            update(c).where(ids(c.c.id, "ids")).values(last_emailed_at=now)
        )

    # -- eligibility ----------------------------------------------------------------------

    def suppressed_among(self, session: Session, digests: Sequence[str]) -> set[str]:
        return set(session.execute(self.suppressed, {"digests": list(digests)}).scalars())

    def contacts_and_subscriptions(
        self, session: Session, contact_ids: Sequence[int], campaign_ids: Sequence[int]
    ) -> list[tuple[int, datetime | None, int | None, str | None]]:
        rows = session.execute(
            self.contacts, {"contacts": list(contact_ids), "campaigns": list(campaign_ids)}
        )
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    def in_flight_elsewhere(self, session: Session, contact_ids: Sequence[int]
                            ) -> list[tuple[int, int]]:
        rows = session.execute(self.in_flight, {"contacts": list(contact_ids)})
        return [(r[0], r[1]) for r in rows]

    def recent_discounts(self, session: Session, contact_ids: Sequence[int], since: datetime
                         ) -> list[tuple[int, int]]:
        rows = session.execute(self.discounts, {"contacts": list(contact_ids), "since": since})
        return [(r[0], r[1]) for r in rows]

    # -- writes ---------------------------------------------------------------------------

    def mark_started(
        self, session: Session, me: str, now: datetime, rows: Sequence[tuple[int, str, str]]
    ) -> set[int]:
        """Mark (id, message id, provider) rows `sending` if still ours and their campaign is
        sending; returns the ids marked."""
        if not rows:
            return set()
        if self.pg:
            return set(session.execute(self.mark_pg, {
                "ids": [r[0] for r in rows], "mids": [r[1] for r in rows],
                "providers": [r[2] for r in rows], "me": me, "now": now,
            }).scalars())
        marked = set(
            session.execute(
                self.mark, {"ids": [r[0] for r in rows], "me": me, "now": now}
            ).scalars()
        )
        chosen = [r for r in rows if r[0] in marked]
        if chosen:
            session.execute(
                self.label_one,
                [{"b_id": i, "b_mid": mid, "b_provider": p} for i, mid, p in chosen],
            )
        return marked

    def skip_rows(self, session: Session, me: str, now: datetime,
                  rows: Sequence[tuple[int, str]]) -> None:
        if rows:
            session.execute(
                self.skip, [{"b_id": i, "b_reason": r, "me": me, "now": now} for i, r in rows]
            )

    def give_back_rows(self, session: Session, me: str, ids: Sequence[int]) -> None:
        if ids:
            session.execute(self.give_back, {"ids": list(ids), "me": me})

    def finish_started(self, session: Session, now: datetime, rows: Sequence[Finished]) -> None:
        """Record outcomes of started attempts, with the `sent` event and last_emailed_at of
        each delivered one."""
        if not rows:
            return
        if self.pg:
            session.execute(self.finish_pg, {
                "now": now,
                "ids": [r.row_id for r in rows],
                "attempts": [r.attempt for r in rows],
                "states": [r.state for r in rows],
                "replies": [r.reply for r in rows],
                "failures": [r.failure for r in rows],
                "sent": [r.sent_at for r in rows],
                "nexts": [r.next_attempt_at for r in rows],
                "providers": [r.provider for r in rows],
                "contacts": [r.contact_id for r in rows],
                "campaigns": [r.campaign_id for r in rows],
                "marketing": [r.marketing for r in rows],
            })
            return
        session.execute(self.finish_one, [self._finish_params(r, now) for r in rows])
        delivered = [r for r in rows if r.state == MessageState.SENT.value and r.contact_id]
        if delivered:
            session.execute(self.sent_events, [
                {"contact_id": r.contact_id, "campaign_id": r.campaign_id,
                 "kind": EventKind.SENT.value, "classification": EventClass.HUMAN.value,
                 "occurred_at": now}
                for r in delivered
            ])
        touched = sorted({r.contact_id for r in delivered if r.marketing and r.contact_id})
        if touched:
            session.execute(self.touch, {"ids": touched, "now": now})

    def finish_unstarted_rows(
        self, session: Session, me: str, now: datetime, rows: Sequence[Finished]
    ) -> None:
        if rows:
            session.execute(
                self.finish_unstarted,
                [{**self._finish_params(r, now), "me": me} for r in rows],
            )

    @staticmethod
    def _finish_params(r: Finished, now: datetime) -> dict[str, Any]:
        return {
            "b_id": r.row_id, "b_attempt": r.attempt, "b_state": r.state, "b_reply": r.reply,
            "b_failure": r.failure, "b_sent_at": r.sent_at, "b_next": r.next_attempt_at,
            "b_provider": r.provider, "now": now,
        }


@cache
def send_path(dialect: str) -> SendPath:
    return SendPath(dialect)


SUBSCRIBED_RANK = {SubscriptionStatus.CONFIRMED.value: 3, SubscriptionStatus.PENDING.value: 2}
