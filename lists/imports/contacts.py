"""Contact import from CSV (A5): validate every row, subscribe the accepted ones to a list with
the consent ledger's proof, write every refused row to a rejects file with its line and reason.

Each batch is one transaction (a killed import keeps every batch it committed) and the import is
idempotent (running it again changes nothing), so re-running a killed import completes it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
import zoneinfo
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from json.encoder import encode_basestring_ascii as _json_str
from pathlib import Path
from typing import Any, NamedTuple

from email_validator import EmailNotValidError
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from lists.addresses import is_disposable, is_role, normalize_email, suppression_key
from lists.errors import InvalidInputError
from lists.imports.bulk import Bulk
from lists.imports.csvfile import (
    ANNOTATION_COLUMNS,
    Record,
    RejectsWriter,
    check_rejects_path,
    default_rejects_path,
    open_input,
)
from lists.imports.reader import Refusal, Reject, parsed_batches
from lists.imports.runs import finish_run, run_batches, start_run
from lists.mailing_lists import get_list
from lists.models import ConsentAction, SubscriptionStatus

S = SubscriptionStatus
KNOWN_COLUMNS = ("email", "first_name", "last_name", "locale", "timezone")
_MAX_LEN = {"first_name": 200, "last_name": 200, "locale": 35, "timezone": 64}
# BCP 47-ish: a language, then subtags (en, en-GB, pt_BR, zh-Hant-TW).
_LOCALE = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*")
_MAX_SOURCE = 500  # consent_ledger.source

_CONTACT_COLUMNS = (
    "email", "first_name", "last_name", "locale", "timezone", "attributes", "is_role",
    "is_disposable", "orders_count", "total_spent_cents", "created_at", "updated_at",
)
_CONTACT_TYPES = (
    "text", "text", "text", "text", "text", "jsonb", "bool", "bool", "int4", "int8",
    "timestamptz", "timestamptz",
)
_UPDATE_COLUMNS = (
    "first_name", "last_name", "locale", "timezone", "attributes", "is_role", "is_disposable",
    "updated_at",
)
_UPDATE_TYPES = ("text", "text", "text", "text", "jsonb", "bool", "bool", "timestamptz")
_SUB_COLUMNS = ("contact_id", "list_id", "status", "created_at", "updated_at", "confirmed_at")
_SUB_TYPES = ("int4", "int4", "text", "timestamptz", "timestamptz", "timestamptz")
LEDGER_COLUMNS = ("contact_id", "list_id", "action", "source", "occurred_at")
LEDGER_TYPES = ("int4", "int4", "text", "text", "timestamptz")


@dataclass(frozen=True)
class ContactImportSummary:
    """What an import did. ``imported``: new contacts or new subscriptions; ``updated``:
    existing contacts whose fields or subscription changed; ``pending`` / ``confirmed``: the
    subscription statuses this run produced."""

    rows: int
    imported: int
    updated: int
    unchanged: int
    rejected: int
    rejects_file: Path | None
    pending: int
    confirmed: int
    rejected_by_reason: Mapping[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "imported": self.imported,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "rejected": self.rejected,
            "rejects_file": str(self.rejects_file) if self.rejects_file else None,
            "pending": self.pending,
            "confirmed": self.confirmed,
            "rejected_by_reason": dict(self.rejected_by_reason),
        }


class ContactRow(NamedTuple):
    """An accepted row on its way to the database (a plain tuple: it crosses processes)."""

    line: int
    fields: list[str]
    email: str
    digest: str  # suppression HMAC of the address
    is_role: bool
    is_disposable: bool
    first_name: str | None
    last_name: str | None
    locale: str | None
    timezone: str | None
    attributes: str  # JSON object of the non-empty other columns


@dataclass(frozen=True)
class ContactColumns:
    """Where the known columns are in the header, and which columns are attributes."""

    email: int
    first_name: int | None
    last_name: int | None
    locale: int | None
    timezone: int | None
    attributes: tuple[tuple[int, str], ...]
    header: tuple[str, ...]

    @property
    def width(self) -> int:
        return len(self.header)


def map_columns(header: Sequence[str], file_name: str) -> ContactColumns:
    """Known columns by name (case-insensitive); every other named column is an attribute."""
    known: dict[str, int] = {}
    attributes: list[tuple[int, str]] = []
    seen: set[str] = set()
    for i, raw in enumerate(header):
        name = raw.strip()
        if name in ANNOTATION_COLUMNS:
            continue
        key = name.lower()
        if key in KNOWN_COLUMNS:
            if key in known:
                raise InvalidInputError(f"{file_name}: the column {key!r} appears twice")
            known[key] = i
            continue
        name = name or f"column_{i + 1}"
        if name in seen:
            raise InvalidInputError(f"{file_name}: the column {name!r} appears twice")
        seen.add(name)
        attributes.append((i, name))
    if "email" not in known:
        found = ", ".join(repr(h) for h in header) or "none"
        raise InvalidInputError(
            f"{file_name}: no 'email' column (the header has {found})"
        )
    return ContactColumns(
        email=known["email"],
        first_name=known.get("first_name"),
        last_name=known.get("last_name"),
        locale=known.get("locale"),
        timezone=known.get("timezone"),
        attributes=tuple(attributes),
        header=tuple(header),
    )


@lru_cache(maxsize=1)
def _zones() -> dict[str, str]:
    return {name.lower(): name for name in zoneinfo.available_timezones()}


def canonical_zone(name: str) -> str | None:
    """The IANA zone called ``name`` (any letter case), or None if there is none."""
    return _zones().get(name.lower())


def ledger_source(consent_source: str, path: Path) -> str:
    """What the ledger records as the source of an import's consent: the user's words and the
    file they came with."""
    text = consent_source.strip()
    if not text:
        raise InvalidInputError("a consent source is required (where and how consent was given)")
    suffix = f" (import of {path.name})"
    room = _MAX_SOURCE - len(" (import of a…)")  # keep at least a hint of the file name
    if len(text) > room:
        raise InvalidInputError(f"the consent source is too long (at most {room} characters)")
    if len(text) + len(suffix) > _MAX_SOURCE:
        suffix = f" (import of {path.name[: _MAX_SOURCE - len(text) - len(' (import of …)')]}…)"
    return text + suffix


@dataclass(frozen=True)
class ContactParserSpec:
    """What checking rows needs (picklable, for the reader process)."""

    key: bytes
    columns: ContactColumns
    exclude_role: bool
    exclude_disposable: bool

    @property
    def row_type(self) -> type[ContactRow]:
        return ContactRow

    def build(self) -> ContactParser:
        return ContactParser(self)


class ContactParser:
    """Checks rows without the database: shape, address, duplicates, hygiene, values."""

    def __init__(self, spec: ContactParserSpec) -> None:
        self.columns = spec.columns
        self.exclude_role = spec.exclude_role
        self.exclude_disposable = spec.exclude_disposable
        self.seen: set[str] = set()
        # The suppression HMAC (lists.suppressions.address_hmac) from a keyed copy: half the cost.
        self._hasher = hmac.new(spec.key, digestmod=hashlib.sha256)
        self._disposable: dict[str, bool] = {}
        self._attributes = [(pos, _json_str(name) + ": ") for pos, name in spec.columns.attributes]
        self._optional = [
            (slot, pos, _MAX_LEN[name], name.replace("_", " "))
            for slot, name in enumerate(("first_name", "last_name", "locale", "timezone"))
            if (pos := getattr(spec.columns, name)) is not None
        ]

    def parse(self, rec: Record) -> ContactRow | Refusal:
        """The row ready for the database, or why it is refused."""
        fields = rec.fields
        if rec.problem is not None:
            return Refusal("unreadable row", rec.problem)
        width = self.columns.width
        if len(fields) != width:
            if len(fields) > width:
                return Refusal("too many fields", f"{len(fields)} where the header has {width}")
            fields = fields + [""] * (width - len(fields))
        try:
            email = normalize_email(fields[self.columns.email])
        except InvalidInputError as exc:
            cause = exc.__cause__
            detail = cause if isinstance(cause, EmailNotValidError) else exc
            return Refusal("invalid address", str(detail))
        fold = suppression_key(email)
        if fold in self.seen:
            return Refusal("duplicate in file")
        self.seen.add(fold)
        local, _, domain = email.rpartition("@")
        role = is_role(local)
        if role and self.exclude_role:
            return Refusal("role address")
        disposable = self._disposable.get(domain)
        if disposable is None:
            if len(self._disposable) > 100_000:
                self._disposable.clear()
            disposable = self._disposable[domain] = is_disposable(domain)
        if disposable and self.exclude_disposable:
            return Refusal("disposable domain")
        values: list[str | None] = [None, None, None, None]
        for slot, pos, limit, label in self._optional:
            value = fields[pos].strip()
            if value:
                if len(value) > limit:
                    return Refusal(f"{label} too long", f"at most {limit} characters")
                values[slot] = value
        first, last, locale, zone = values
        if zone is not None:
            canonical = canonical_zone(zone)
            if canonical is None:
                return Refusal("invalid time zone", zone)
            zone = canonical
        if locale is not None and _LOCALE.fullmatch(locale) is None:
            return Refusal("invalid locale", locale)
        # json.dumps of the non-empty attributes, three times faster built by hand.
        parts = [key + _json_str(v) for pos, key in self._attributes if (v := fields[pos].strip())]
        hasher = self._hasher.copy()
        hasher.update(fold.encode())
        return ContactRow(
            rec.line, rec.fields, email, hasher.hexdigest(), role, disposable, first, last,
            locale, zone, "{" + ", ".join(parts) + "}",
        )


class _ContactWriter:
    """Checks rows against the database and writes them; counts what it did."""

    def __init__(self, *, list_id: int, target: S, source: str, now: datetime) -> None:
        self.list_id = list_id
        self.target = target
        self.status = target.value
        self.source = source
        self.now = now
        self.counts: Counter[str] = Counter()

    # Row checks against the database, and the writes ------------------------------------

    def apply(self, bulk: Bulk, rows: list[ContactRow], rejects: list[Reject]) -> None:
        now = bulk.ts(self.now)
        suppressed = {
            r[0]
            for r in bulk.fetch_in(
                "SELECT address_hmac FROM suppressions WHERE address_hmac {in}",
                [r.digest for r in rows],
            )
        }
        existing = {
            r[1]: r
            for r in bulk.fetch_in(
                "SELECT id, email, first_name, last_name, locale, timezone, attributes, is_role, "
                "is_disposable FROM contacts WHERE email {in}",
                [r.email for r in rows if r.digest not in suppressed],
            )
        }
        statuses: dict[int, str] = {
            cid: status
            for cid, status in bulk.fetch_in(
                "SELECT contact_id, status FROM subscriptions "
                "WHERE list_id = ? AND contact_id {in}",
                [c[0] for c in existing.values()],
                pg_type="int8",
                params=(self.list_id,),
            )
        }
        new_contacts: list[ContactRow] = []
        contact_updates: list[tuple[Any, ...]] = []
        to_subscribe: list[int] = []  # existing contacts without a subscription to this list
        to_confirm: list[int] = []  # pending subscriptions that --confirmed upgrades
        changed_fields: set[int] = set()
        for row in rows:
            if row.digest in suppressed:
                rejects.append((row.line, "suppressed", "", row.fields))
                continue
            found = existing.get(row.email)
            if found is None:
                new_contacts.append(row)
                continue
            cid = found[0]
            status = statuses.get(cid)
            if status == S.UNSUBSCRIBED:
                # An import never resubscribes: withdrawal needs fresh consent from the person.
                rejects.append((row.line, "unsubscribed", "", row.fields))
                continue
            update = self._contact_update(bulk, found, row, now)
            if update is not None:
                contact_updates.append(update)
                changed_fields.add(cid)
            if status is None:
                to_subscribe.append(cid)
            elif status == S.PENDING and self.target is S.CONFIRMED:
                to_confirm.append(cid)
            else:
                self.counts["unchanged" if update is None else "updated"] += 1

        bulk.update("contacts", "id", _UPDATE_COLUMNS, _UPDATE_TYPES, contact_updates)
        if new_contacts:
            ids = bulk.insert_new(
                "contacts", _CONTACT_COLUMNS, _CONTACT_TYPES,
                [
                    (r.email, r.first_name, r.last_name, r.locale, r.timezone, r.attributes,
                     r.is_role, r.is_disposable, 0, 0, now, now)
                    for r in new_contacts
                ],
                key="email",
            )
            to_subscribe.extend(ids[r.email] for r in new_contacts)
        self._subscribe(bulk, to_subscribe, changed_fields, now)
        self._confirm(bulk, to_confirm, changed_fields, now)

    def _contact_update(
        self, bulk: Bulk, found: tuple[Any, ...], row: ContactRow, now: Any
    ) -> tuple[Any, ...] | None:
        cid, _, first, last, locale, tz, attrs_raw, is_role, is_disposable = found
        attrs = bulk.json_out(attrs_raw) or {}
        new_first = row.first_name or first
        new_last = row.last_name or last
        new_locale = row.locale or locale
        new_tz = row.timezone or tz
        merged = {**attrs, **json.loads(row.attributes)} if row.attributes != "{}" else attrs
        if (
            (new_first, new_last, new_locale, new_tz) == (first, last, locale, tz)
            and merged == attrs
            and bool(is_role) == row.is_role
            and bool(is_disposable) == row.is_disposable
        ):
            return None
        return (new_first, new_last, new_locale, new_tz, bulk.json(merged), row.is_role,
                row.is_disposable, now, cid)

    def _subscribe(self, bulk: Bulk, ids: list[int], changed: set[int], now: Any) -> None:
        if not ids:
            return
        confirmed_at = now if self.target is S.CONFIRMED else None
        inserted = bulk.insert(
            "subscriptions", _SUB_COLUMNS, _SUB_TYPES,
            [(cid, self.list_id, self.status, now, now, confirmed_at) for cid in ids],
            on_conflict="ON CONFLICT (contact_id, list_id) DO NOTHING",
            returning="contact_id",
        )
        done = ids if inserted is None else [r[0] for r in inserted]
        # A subscription created meanwhile by someone else is theirs: no ledger row from us.
        self.counts["unchanged"] += sum(1 for cid in set(ids) - set(done) if cid not in changed)
        self.counts["updated"] += sum(1 for cid in set(ids) - set(done) if cid in changed)
        self.counts["imported"] += len(done)
        self.counts[self.status] += len(done)
        actions = [ConsentAction.GRANTED.value]
        if self.target is S.CONFIRMED:
            actions.append(ConsentAction.CONFIRMED.value)
        ledger = [(cid, self.list_id, a, self.source, now) for a in actions for cid in done]
        bulk.insert("consent_ledger", LEDGER_COLUMNS, LEDGER_TYPES, ledger)

    def _confirm(self, bulk: Bulk, ids: list[int], changed: set[int], now: Any) -> None:
        if not ids:
            return
        # Only a subscription still pending is upgraded (never an unsubscribed one).
        done = [
            r[0]
            for r in bulk.fetch_in(
                "UPDATE subscriptions SET status = ?, updated_at = ?, confirmed_at = ? "
                "WHERE list_id = ? AND status = ? AND contact_id {in} RETURNING contact_id",
                ids,
                pg_type="int8",
                params=(S.CONFIRMED.value, now, now, self.list_id, S.PENDING.value),
            )
        ]
        self.counts["updated"] += len(done) + sum(
            1 for cid in set(ids) - set(done) if cid in changed
        )
        self.counts["unchanged"] += sum(1 for cid in set(ids) - set(done) if cid not in changed)
        self.counts[S.CONFIRMED.value] += len(done)
        bulk.insert(
            "consent_ledger", LEDGER_COLUMNS, LEDGER_TYPES,
            [(cid, self.list_id, ConsentAction.CONFIRMED.value, self.source, now) for cid in done],
        )


def import_contacts(
    engine: Engine,
    key: bytes,
    path: Path,
    *,
    list_name: str,
    consent_source: str,
    now: datetime,
    confirmed: bool = False,
    rejects_path: Path | None = None,
    exclude_role: bool = True,
    exclude_disposable: bool = True,
    batch_size: int = 5000,
    progress: Callable[[int, int], None] | None = None,
    parallel: bool | None = None,
) -> ContactImportSummary:
    """Import the contacts of the CSV file ``path`` into the list ``list_name``.

    Subscriptions become ``confirmed`` on a single opt-in list or when ``confirmed`` attests
    consent confirmed elsewhere, else ``pending``; the ledger records ``granted`` (and
    ``confirmed``) with ``consent_source`` and the file name. Rows refused are written to
    ``rejects_path`` (default ``<name>.rejects.csv`` beside the input) with their line and
    reason. ``progress(bytes_done, bytes_total)`` is called after each batch. ``parallel``:
    check rows in a helper process (None: for files of a few MiB and more)."""
    source = ledger_source(consent_source, path)
    if batch_size < 1:
        raise InvalidInputError("the batch size must be at least 1")
    with Session(engine) as session:
        mailing_list = get_list(session, list_name)
    assert mailing_list.id is not None
    target = S.CONFIRMED if (confirmed or not mailing_list.double_opt_in) else S.PENDING
    started = time.monotonic()
    with open_input(path) as src:
        columns = map_columns(src.header, path.name)
        delimiter, bom = src.delimiter, src.has_bom
    rejects_path = (rejects_path or default_rejects_path(path)).absolute()
    check_rejects_path(path, rejects_path)
    run_id = start_run(
        engine, path, kind="contacts", now=now, list_id=mailing_list.id,
        consent_source=consent_source.strip(),
    )
    spec = ContactParserSpec(key, columns, exclude_role, exclude_disposable)
    state = _ContactWriter(list_id=mailing_list.id, target=target, source=source, now=now)
    writer = RejectsWriter(rejects_path, columns.header, delimiter=delimiter, bom=bom)
    try:
        rows_read = run_batches(
            engine, parsed_batches(path, spec, batch_size, parallel=parallel), writer,
            apply=state.apply, bytes_total=path.stat().st_size, progress=progress,
        )
    finally:
        rejects_file = writer.finish()
    counts = state.counts
    summary = ContactImportSummary(
        rows=rows_read,
        imported=counts["imported"],
        updated=counts["updated"],
        unchanged=counts["unchanged"],
        rejected=writer.count,
        rejects_file=rejects_file,
        pending=counts[S.PENDING.value],
        confirmed=counts[S.CONFIRMED.value],
        rejected_by_reason=dict(writer.reasons.most_common()),
    )
    finish_run(engine, run_id, summary, now + timedelta(seconds=time.monotonic() - started))
    return summary
