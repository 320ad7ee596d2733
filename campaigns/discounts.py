"""Per-recipient discount codes (C1): a campaign's pool is generated (prefix + unguessable
suffix) or imported from the shop; each code goes to one recipient, never two."""

from __future__ import annotations

import csv
import secrets
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlmodel import col

from campaigns.models import Campaign, DiscountCode
from lists.errors import ConflictError, InvalidInputError, NotFoundError

# Crockford's base32 without I, L, O, U: nothing to misread when typed at a checkout.
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
SUFFIX_LENGTH = 10  # 50 bits: guessing one valid code of a million takes ~10^9 tries


def generate_code(prefix: str) -> str:
    suffix = "".join(secrets.choice(_ALPHABET) for _ in range(SUFFIX_LENGTH))
    return f"{prefix}{suffix}"


def validate_prefix(prefix: str) -> str:
    prefix = prefix.strip().upper()
    if not prefix or len(prefix) > 32 or not all(c.isalnum() or c in "-_" for c in prefix):
        raise InvalidInputError(
            "a discount prefix is 1-32 letters, digits, '-' or '_' (for example SPRING-)"
        )
    return prefix


def pool_size(session: Session, campaign_id: int) -> tuple[int, int]:
    """(codes in the pool, codes still unassigned)."""
    total, free = session.execute(
        select(
            func.count(),
            func.count().filter(col(DiscountCode.contact_id).is_(None)),
        ).where(col(DiscountCode.campaign_id) == campaign_id)
    ).one()
    return int(total), int(free)


def import_codes(session: Session, campaign: Campaign, path: Path, now: datetime) -> int:
    """Add codes from a file made by the shop: one code per line, or a CSV with a `code`
    column and an optional `expires_at` (ISO 8601). Returns how many were added."""
    assert campaign.id is not None
    if not path.is_file():
        raise NotFoundError(f"no such file: {path}")
    rows = list(_read_codes(path))
    if not rows:
        raise InvalidInputError(f"{path} holds no discount codes")
    seen: set[str] = set()
    for code, _ in rows:
        if code in seen:
            raise InvalidInputError(f"{path}: code {code!r} appears twice")
        seen.add(code)
    try:
        session.execute(
            insert(DiscountCode),
            [
                {"campaign_id": campaign.id, "code": code, "expires_at": expires}
                for code, expires in rows
            ],
        )
        session.flush()
    except IntegrityError as exc:
        raise ConflictError(f"{path}: some codes already exist in Patron") from exc
    return len(rows)


def _read_codes(path: Path) -> Iterable[tuple[str, datetime | None]]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        header = [h.strip().lower() for h in fh.readline().split(",")]
        fh.seek(0)
        if "code" in header:
            reader = csv.DictReader(fh)
            for line_no, row in enumerate(reader, start=2):
                code = (row.get("code") or "").strip()
                if not code:
                    raise InvalidInputError(f"{path} line {line_no}: empty code")
                yield code, _parse_expiry(row.get("expires_at"), path, line_no)
        else:
            for line in fh:
                code = line.strip()
                if code:
                    yield code, None


def _parse_expiry(raw: str | None, path: Path, line_no: int) -> datetime | None:
    if not raw or not raw.strip():
        return None
    try:
        value = datetime.fromisoformat(raw.strip())
    except ValueError as exc:
        raise InvalidInputError(f"{path} line {line_no}: bad expires_at {raw!r}") from exc
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def assign_codes(
    session: Session, campaign: Campaign, contact_ids: Sequence[int], now: datetime
) -> dict[int, str]:
    """Give each contact one code of the campaign's pool, generating the pool when the campaign
    has a prefix. Raises ConflictError (assigning nothing) when the pool is too small, so a
    campaign stops before sending rather than half-way."""
    assert campaign.id is not None
    existing = dict(
        session.execute(
            select(col(DiscountCode.contact_id), col(DiscountCode.code)).where(
                col(DiscountCode.campaign_id) == campaign.id,
                col(DiscountCode.contact_id).is_not(None),
            )
        ).all()
    )
    needed = [c for c in contact_ids if c not in existing]
    if not needed:
        return {c: existing[c] for c in contact_ids}
    _, free = pool_size(session, campaign.id)
    if free < len(needed) and campaign.discount_prefix:
        _generate(session, campaign, len(needed) - free, now)
        _, free = pool_size(session, campaign.id)
    if free < len(needed):
        raise ConflictError(
            f"campaign {campaign.id} needs {len(needed)} discount codes but its pool has {free} "
            "unassigned: import more codes (or set a prefix to generate them)"
        )
    free_codes = session.execute(
        select(col(DiscountCode.id), col(DiscountCode.code))
        .where(col(DiscountCode.campaign_id) == campaign.id, col(DiscountCode.contact_id).is_(None))
        .order_by(col(DiscountCode.id))
        .limit(len(needed))
    ).all()
    assignments = [
        {"b_id": code_id, "b_contact": contact_id, "b_now": now}
        for (code_id, _), contact_id in zip(free_codes, needed, strict=True)
    ]
    # Core (not ORM) UPDATE: executemany with one row of parameters per code.
    table = DiscountCode.__table__  # type: ignore[attr-defined]
    session.execute(
        update(table)
        .where(table.c.id == bindparam("b_id"))
        .values(contact_id=bindparam("b_contact"), assigned_at=bindparam("b_now")),
        assignments,
    )
    result = dict(existing)
    result.update(
        {contact_id: code for (_, code), contact_id in zip(free_codes, needed, strict=True)}
    )
    return {c: result[c] for c in contact_ids}


def _generate(session: Session, campaign: Campaign, count: int, now: datetime) -> None:
    assert campaign.id is not None and campaign.discount_prefix
    expires = (
        now + timedelta(days=campaign.discount_expiry_days)
        if campaign.discount_expiry_days
        else None
    )
    made = 0
    while made < count:
        batch = {generate_code(campaign.discount_prefix) for _ in range(min(count - made, 5000))}
        taken = set(
            session.execute(
                select(col(DiscountCode.code)).where(col(DiscountCode.code).in_(batch))
            ).scalars()
        )
        fresh = batch - taken
        session.execute(
            insert(DiscountCode),
            [{"campaign_id": campaign.id, "code": c, "expires_at": expires} for c in fresh],
        )
        made += len(fresh)
