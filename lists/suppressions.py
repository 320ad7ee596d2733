"""The suppression list (A4): HMACs of normalized addresses that must never be mailed again.

Only the HMAC is stored, so the entry survives erasure of the contact without keeping the
address; an import or a send recomputes the HMAC and checks it."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlmodel import col

from lists.addresses import suppression_key
from lists.models import Suppression, SuppressionReason


def address_hmac(key: bytes, email: str) -> str:
    """Hex HMAC-SHA256 of the normalized address, case-folded."""
    return hmac.new(key, suppression_key(email).encode("utf-8"), hashlib.sha256).hexdigest()


def suppress(
    session: Session, key: bytes, email: str, reason: SuppressionReason, now: datetime
) -> bool:
    """Suppress ``email``; returns False when it already was (the first reason is kept)."""
    digest = address_hmac(key, email)
    if session.get(Suppression, digest) is not None:
        return False
    session.add(Suppression(address_hmac=digest, reason=reason.value, created_at=now))
    session.flush()
    return True


def is_suppressed(session: Session, key: bytes, email: str) -> SuppressionReason | None:
    """The reason ``email`` is suppressed, or None."""
    row = session.get(Suppression, address_hmac(key, email))
    return SuppressionReason(row.reason) if row is not None else None


def suppressed_among(session: Session, key: bytes, emails: Iterable[str]) -> set[str]:
    """The subset of ``emails`` that is suppressed, in one query per 500 addresses."""
    by_digest = {address_hmac(key, e): e for e in emails}
    digests = list(by_digest)
    found: set[str] = set()
    for i in range(0, len(digests), 500):
        chunk = digests[i : i + 500]
        rows = session.execute(
            select(col(Suppression.address_hmac)).where(col(Suppression.address_hmac).in_(chunk))
        ).scalars()
        found.update(by_digest[d] for d in rows)
    return found
