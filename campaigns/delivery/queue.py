"""The send log as a work queue shared by workers (D2, scale-out).

A worker registers itself and keeps a heartbeat; it claims due rows by writing its id into
``lease_owner`` (on PostgreSQL inside ``SELECT … FOR UPDATE SKIP LOCKED``, so concurrent workers
never claim the same row). A claim is valid while its owner is alive: a worker whose heartbeat
stopped, or whose process is gone from this host, is reaped: its unstarted claims return to the
queue (they were certainly not transmitted) and its started attempts (state ``sending``) become
``unknown``. On SQLite one worker at a time holds the ``sqlite-sender`` lease; others wait."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import (
    Table,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlmodel import SQLModel

from campaigns.delivery.statements import state_in
from campaigns.models import MessageState

PENDING_STATES = (MessageState.QUEUED.value, MessageState.DEFERRED.value)
SQLITE_SENDER_LEASE = "sqlite-sender"


def _table(name: str) -> Table:
    return SQLModel.metadata.tables[name]


def messages() -> Table:
    return _table("messages")


def contacts() -> Table:
    return _table("contacts")


def workers() -> Table:
    return _table("workers")


def host_id() -> str:
    """This machine (and PID namespace): processes listed under it can be checked for life."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return f"{socket.gethostname()}|{namespace}"[:255]


def process_alive(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) process on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: trust kill()
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


@dataclass(frozen=True, slots=True)
class Claimed:
    """A claimed row with what sending it needs."""

    id: int
    campaign_id: int
    contact_id: int | None
    variant: int
    discount_code: str | None
    attempts: int
    provider: str | None
    first_attempt_at: datetime | None
    email: str | None
    timezone: str | None
    # When the row was queued: a confirmation queued anew for a new sign-up is the same row
    # with a new time, and its Message-ID must differ from the first one's.
    created_at: datetime | None = None


def register_worker(session: Session, worker_id: str, host: str, pid: int, now: datetime) -> None:
    session.execute(
        insert(workers()).values(
            id=worker_id, host=host, pid=pid, started_at=now, heartbeat_at=now
        )
    )


def heartbeat(session: Session, worker_id: str, now: datetime) -> bool:
    """Renew the worker's claims; False when it was reaped meanwhile (its claims are gone)."""
    w = workers()
    done = session.execute(update(w).where(w.c.id == worker_id).values(heartbeat_at=now))
    return bool(getattr(done, "rowcount", 0))


def live_worker_count(session: Session) -> int:
    return int(session.execute(select(func.count()).select_from(workers())).scalar_one())


@dataclass(frozen=True, slots=True)
class Reaped:
    workers: int = 0
    released: int = 0
    unknown: int = 0


def reap(
    session: Session,
    me: str,
    host: str,
    now: datetime,
    timeout: timedelta,
    *,
    resend_unknown: bool = False,
    alive: Callable[[int], bool] = process_alive,
) -> Reaped:
    """Take over the claims of dead workers: stale heartbeat, or a process gone from this host."""
    w = workers()
    rows = session.execute(select(w.c.id, w.c.host, w.c.pid, w.c.heartbeat_at).where(w.c.id != me))
    dead = [
        wid
        for wid, whost, pid, beat in rows
        if beat < now - timeout or (whost == host and (pid == os.getpid() or not alive(pid)))
    ]
    if not dead:
        return Reaped()
    released, unknown = release_claims(session, dead, now, resend_unknown=resend_unknown)
    session.execute(delete(w).where(w.c.id.in_(dead)))
    leases = _table("worker_leases")
    session.execute(
        update(leases).where(leases.c.owner.in_(dead)).values(owner=None, expires_at=None)
    )
    return Reaped(len(dead), released, unknown)


def release_claims(
    session: Session, owners: Sequence[str], now: datetime, *, resend_unknown: bool = False
) -> tuple[int, int]:
    """Return ``owners``' unstarted claims to the queue and settle their started attempts as
    unknown (or, by policy, deferred for a resend). Returns (released, unknown)."""
    m = messages()
    released = session.execute(
        update(m)
        .where(m.c.lease_owner.in_(owners), m.c.state.in_(PENDING_STATES))
        .values(lease_owner=None)
    )
    settled = MessageState.DEFERRED if resend_unknown else MessageState.UNKNOWN
    unknown = session.execute(
        update(m)
        .where(m.c.lease_owner.in_(owners), m.c.state == MessageState.SENDING.value)
        .values(
            state=settled.value,
            lease_owner=None,
            next_attempt_at=now,
            last_reply="outcome unknown: the worker stopped during the attempt",
            updated_at=now,
        )
    )
    return int(getattr(released, "rowcount", 0)), int(getattr(unknown, "rowcount", 0))


def deregister(session: Session, worker_id: str, now: datetime, *, resend_unknown: bool) -> None:
    """A clean exit: give back every claim and leave."""
    release_claims(session, [worker_id], now, resend_unknown=resend_unknown)
    w = workers()
    session.execute(delete(w).where(w.c.id == worker_id))
    leases = _table("worker_leases")
    session.execute(
        update(leases).where(leases.c.owner == worker_id).values(owner=None, expires_at=None)
    )


def acquire_lease(
    session: Session, name: str, owner: str, now: datetime, ttl: timedelta
) -> bool:
    """Take or renew the exclusive lease ``name``: free, expired, or its holder unregistered.
    One conditional UPDATE, so two workers can never both win it."""
    leases, w = _table("worker_leases"), workers()
    takeable = or_(
        leases.c.owner.is_(None),
        leases.c.owner == owner,
        leases.c.expires_at < now,
        leases.c.owner.not_in(select(w.c.id)),
    )
    taken = session.execute(
        update(leases)
        .where(leases.c.name == name, takeable)
        .values(owner=owner, expires_at=now + ttl)
    )
    if getattr(taken, "rowcount", 0):
        return True
    if session.execute(select(leases.c.name).where(leases.c.name == name)).first() is not None:
        return False
    try:
        with session.begin_nested():
            session.execute(insert(leases).values(name=name, owner=owner, expires_at=now + ttl))
        return True
    except IntegrityError:
        return False


def claim(
    session: Session,
    worker_id: str,
    campaign_id: int,
    now: datetime,
    limit: int,
    exclude_providers: Iterable[str] = (),
) -> list[Claimed]:
    """Claim up to ``limit`` due rows of a campaign: retries first, then first attempts, each
    in due order along the claim index."""
    m, c = messages(), contacts()
    excluded = list(exclude_providers)
    ids: list[int] = []
    for state in (MessageState.DEFERRED.value, MessageState.QUEUED.value):
        if len(ids) >= limit:
            break
        query = select(m.c.id).where(
            m.c.campaign_id == campaign_id,
            m.c.state == state,
            m.c.next_attempt_at <= now,
            m.c.lease_owner.is_(None),
        )
        if excluded:
            query = query.where(or_(m.c.provider.is_(None), m.c.provider.not_in(excluded)))
        query = (
            query.order_by(m.c.next_attempt_at)
            .limit(limit - len(ids))
            .with_for_update(skip_locked=True)
        )
        ids.extend(session.execute(query).scalars())
    if not ids:
        return []
    session.execute(
        update(m).where(m.c.id.in_(ids), m.c.lease_owner.is_(None)).values(lease_owner=worker_id)
    )
    rows = session.execute(
        select(
            m.c.id, m.c.campaign_id, m.c.contact_id, m.c.variant, m.c.discount_code,
            m.c.attempts, m.c.provider, m.c.first_attempt_at, c.c.email, c.c.timezone,
            m.c.created_at,
        )
        .select_from(m.outerjoin(c, c.c.id == m.c.contact_id))
        .where(m.c.id.in_(ids), m.c.lease_owner == worker_id)
        .order_by(m.c.id)
    )
    return [
        Claimed(
            id=r.id, campaign_id=r.campaign_id, contact_id=r.contact_id, variant=r.variant,
            discount_code=r.discount_code, attempts=r.attempts, provider=r.provider,
            first_attempt_at=r.first_attempt_at, email=r.email, timezone=r.timezone,
            created_at=r.created_at,
        )
        for r in rows
    ]


def release(
    session: Session,
    worker_id: str,
    items: Sequence[tuple[int, datetime | None, str | None]],
) -> None:
    """Give claimed, unstarted rows back, optionally with a later due time and their provider:
    (id, next_attempt_at or None, provider or None)."""
    if not items:
        return
    m = messages()
    mine = and_(
        m.c.id == bindparam("b_id"),
        m.c.lease_owner == worker_id,
        state_in(m.c.state, PENDING_STATES),
    )
    provider = func.coalesce(bindparam("b_provider", type_=m.c.provider.type), m.c.provider)
    later = [{"b_id": i, "b_next": n, "b_provider": p} for i, n, p in items if n is not None]
    now_ = [{"b_id": i, "b_provider": p} for i, n, p in items if n is None]
    if later:
        session.execute(
            update(m).where(mine).values(
                lease_owner=None,
                provider=provider,
                next_attempt_at=bindparam("b_next", type_=m.c.next_attempt_at.type),
            ),
            later,
        )
    if now_:
        session.execute(update(m).where(mine).values(lease_owner=None, provider=provider), now_)
