"""Order import from CSV (A6): idempotent by (source, order id), linking each order to its
contact by email (a contact is created for an unknown customer, with no subscription: a
customer is not a subscriber) or by customer id, and keeping the contacts' order aggregates
exact. Rejects go to a file with line and reason.

Orders are written in transactions of about 50,000 rows, each committed (a killed import keeps
what it committed). The contacts' aggregates are recomputed once, at the end, for every contact
a row named (unchanged rows too) and every former owner of a moved order: by steps in contact-id
order, or over the whole table when this run changed at least a quarter of the contacts (on
SQLite with the aggregate indexes rebuilt). Recomputing per batch instead rewrote thousands of
random contact rows and index entries per commit and made 2M orders take twelve minutes.

Crash story: until the end of a run, the aggregates of the contacts it wrote orders for are
stale (segments evaluated meanwhile see them as before the import), and its ImportRun has no
``finished_at``. Running the same file again makes them exact
(its rows name the same contacts). Any later orders import also makes them exact: when it finds
an orders run that did not finish since the last one that did, it ends with a whole-table
recomputation (a second or two of reads on a million contacts; it writes only stale contacts).
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple

from email_validator import EmailNotValidError
from sqlalchemy import Engine, func, select

from lists.addresses import is_disposable, is_role, normalize_email
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
from lists.imports.runs import finish_run, interrupted_before, run_batches, start_run
from lists.models import Contact, SuppressionReason
from lists.orders import (
    recompute_all_order_aggregates,
    recompute_order_aggregates,
    recompute_order_aggregates_between,
)
from lists.suppressions import address_hmac

REQUIRED_COLUMNS = ("order_id", "email", "total", "currency", "ordered_at")
OPTIONAL_COLUMNS = ("discount_code", "customer_id")
_TOTAL = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)")
_CURRENCY = re.compile(r"[A-Z]{3}")
_MAX_CENTS = 10**15  # ten trillion: anything larger is a broken export, not an order
_MAX_ID = 128

_ORDER_COLUMNS = (
    "source", "order_id", "contact_id", "total_cents", "currency", "ordered_at", "discount_code",
    "created_at",
)
_ORDER_TYPES = ("text", "text", "int4", "int8", "text", "timestamptz", "text", "timestamptz")
_ORDER_UPDATE = ("contact_id", "total_cents", "currency", "ordered_at", "discount_code")
_ORDER_UPDATE_TYPES = ("int4", "int8", "text", "timestamptz", "text")
_NEW_CONTACT = (
    "email", "customer_id", "attributes", "is_role", "is_disposable", "orders_count",
    "total_spent_cents", "created_at", "updated_at",
)
_NEW_CONTACT_TYPES = ("text", "text", "jsonb", "bool", "bool", "int4", "int8", "timestamptz",
                      "timestamptz")


@dataclass(frozen=True)
class OrderImportSummary:
    """What an order import did; ``contacts_created``: customers who were not contacts yet."""

    rows: int
    imported: int
    updated: int
    unchanged: int
    rejected: int
    contacts_created: int
    rejects_file: Path | None
    rejected_by_reason: Mapping[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "imported": self.imported,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "rejected": self.rejected,
            "contacts_created": self.contacts_created,
            "rejects_file": str(self.rejects_file) if self.rejects_file else None,
            "rejected_by_reason": dict(self.rejected_by_reason),
        }


def parse_total(text: str) -> int:
    """A decimal amount ≥ 0 as exact hundredths, or ValueError saying what is wrong."""
    value = text.strip()
    if _TOTAL.fullmatch(value) is None:
        raise ValueError(f"{value!r} is not a number (use a dot for decimals, like 12.50)")
    if value.startswith("-"):
        raise ValueError(f"{value!r} is negative")
    cents = Decimal(value) * 100
    if cents != cents.to_integral_value():
        raise ValueError(f"{value!r} has more than two decimals")
    if cents > _MAX_CENTS:
        raise ValueError(f"{value!r} is too large")
    return int(cents)


def parse_ordered_at(text: str) -> datetime:
    """An ISO 8601 time in UTC; a value without offset is taken as UTC."""
    value = text.strip()
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{value!r} is not an ISO 8601 time (like 2026-05-01T14:30:00+02:00)"
        ) from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


class OrderRow(NamedTuple):
    """An accepted order row on its way to the database (a plain tuple: it crosses processes)."""

    line: int
    fields: list[str]
    order_id: str
    email: str | None
    customer_id: str | None
    cents: int
    currency: str
    ordered_at: datetime
    discount: str | None


@dataclass(frozen=True)
class OrderColumns:
    positions: dict[str, int]
    header: tuple[str, ...]

    @property
    def width(self) -> int:
        return len(self.header)


def map_columns(header: Sequence[str], file_name: str) -> OrderColumns:
    """Positions of the order columns (case-insensitive); other columns are ignored."""
    positions: dict[str, int] = {}
    for i, raw in enumerate(header):
        name = raw.strip()
        if name in ANNOTATION_COLUMNS:
            continue
        key = name.lower()
        if key in REQUIRED_COLUMNS or key in OPTIONAL_COLUMNS:
            if key in positions:
                raise InvalidInputError(f"{file_name}: the column {key!r} appears twice")
            positions[key] = i
    missing = [c for c in REQUIRED_COLUMNS if c not in positions]
    if missing:
        found = ", ".join(repr(h) for h in header) or "none"
        raise InvalidInputError(
            f"{file_name}: missing column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(repr(m) for m in missing)} (the header has {found})"
        )
    return OrderColumns(positions, tuple(header))


@dataclass(frozen=True)
class OrderParserSpec:
    """What checking order rows needs (picklable, for the reader process)."""

    columns: OrderColumns

    @property
    def row_type(self) -> type[OrderRow]:
        return OrderRow

    def build(self) -> OrderParser:
        return OrderParser(self.columns)


class OrderParser:
    """Checks order rows without the database."""

    def __init__(self, columns: OrderColumns) -> None:
        self.columns = columns
        self.seen: set[str] = set()

    def parse(self, rec: Record) -> OrderRow | Refusal:
        """The order ready for the database, or why it is refused as (reason, detail)."""
        fields = rec.fields
        pos = self.columns.positions

        if rec.problem is not None:
            return Refusal("unreadable row", rec.problem)
        width = self.columns.width
        if len(fields) > width:
            return Refusal("too many fields", f"{len(fields)} where the header has {width}")
        if len(fields) < width:
            fields = fields + [""] * (width - len(fields))
        order_id = fields[pos["order_id"]].strip()
        if not order_id:
            return Refusal("missing order_id")
        if len(order_id) > _MAX_ID:
            return Refusal("order_id too long", f"at most {_MAX_ID} characters")
        if order_id in self.seen:
            return Refusal("duplicate in file")
        self.seen.add(order_id)
        raw_email = fields[pos["email"]].strip()
        customer_id = (fields[pos["customer_id"]].strip() or None) if "customer_id" in pos else None
        if customer_id is not None and len(customer_id) > _MAX_ID:
            return Refusal("customer_id too long", f"at most {_MAX_ID} characters")
        email = None
        if raw_email or customer_id is None:
            try:
                email = normalize_email(raw_email)
            except InvalidInputError as exc:
                cause = exc.__cause__
                detail = cause if isinstance(cause, EmailNotValidError) else exc
                return Refusal("invalid email", str(detail))
        try:
            cents = parse_total(fields[pos["total"]])
        except ValueError as exc:
            return Refusal("invalid total", str(exc))
        currency = fields[pos["currency"]].strip().upper()
        if _CURRENCY.fullmatch(currency) is None:
            return Refusal("invalid currency", f"{currency!r} is not a 3-letter code like EUR")
        try:
            ordered_at = parse_ordered_at(fields[pos["ordered_at"]])
        except ValueError as exc:
            return Refusal("invalid ordered_at", str(exc))
        discount = None
        if "discount_code" in pos:
            discount = fields[pos["discount_code"]].strip() or None
        if discount is not None and len(discount) > _MAX_ID:
            return Refusal("discount_code too long", f"at most {_MAX_ID} characters")
        return OrderRow(rec.line, rec.fields, order_id, email, customer_id, cents, currency,
                        ordered_at, discount)


class _OrderWriter:
    """Links orders to contacts, writes them, keeps aggregates exact; counts what it did."""

    def __init__(self, *, source: str, now: datetime, key: bytes | None) -> None:
        self.source = source
        self.now = now
        self.key = key
        self.counts: Counter[str] = Counter()
        # Every contact a row of the file names (unchanged rows too, so that a re-run repairs
        # what a killed run left stale), and the former owners of orders that moved.
        self.touched: set[int] = set()
        # The contacts whose orders this run inserted, changed or moved away.
        self.changed: set[int] = set()

    def apply(self, bulk: Bulk, orders: list[OrderRow], rejects: list[Reject]) -> None:
        now = bulk.ts(self.now)
        contacts = self._contacts(bulk, orders, now)
        by_customer = self._by_customer(bulk, orders)
        existing = {
            r[0]: r
            for r in bulk.fetch_in(
                "SELECT order_id, id, contact_id, total_cents, currency, ordered_at, discount_code "
                "FROM orders WHERE source = ? AND order_id {in}",
                [o.order_id for o in orders],
                params=(self.source,),
            )
        }
        inserts: list[tuple[Any, ...]] = []
        updates: list[tuple[Any, ...]] = []
        touched = self.touched
        for order in orders:
            if order.email is not None:
                contact_id = contacts.get(order.email)
            else:
                contact_id = by_customer.get(order.customer_id or "")
                if contact_id is None:
                    rejects.append((order.line, "unknown customer_id", "no contact has it and the "
                                    "row has no email", order.fields))
                    continue
            if contact_id is not None:
                touched.add(contact_id)
            found = existing.get(order.order_id)
            if found is None:
                inserts.append((self.source, order.order_id, contact_id, order.cents,
                                order.currency, bulk.ts(order.ordered_at), order.discount, now))
                if contact_id is not None:
                    self.changed.add(contact_id)
                continue
            _, oid, old_contact, old_cents, old_currency, old_at, old_discount = found
            if (old_contact, old_cents, old_currency, bulk.ts_out(old_at), old_discount) == (
                contact_id, order.cents, order.currency, order.ordered_at, order.discount
            ):
                self.counts["unchanged"] += 1
                continue
            updates.append((contact_id, order.cents, order.currency, bulk.ts(order.ordered_at),
                            order.discount, oid))
            self.changed.update(c for c in (contact_id, old_contact) if c is not None)
            if old_contact is not None:
                touched.add(old_contact)
        bulk.update("orders", "id", _ORDER_UPDATE, _ORDER_UPDATE_TYPES, updates)
        self.counts["updated"] += len(updates)
        inserted = bulk.insert(
            "orders", _ORDER_COLUMNS, _ORDER_TYPES, inserts,
            on_conflict="ON CONFLICT (source, order_id) DO NOTHING", returning="order_id",
        )
        done = len(inserts) if inserted is None else len(inserted)
        self.counts["imported"] += done
        # Inserted meanwhile by another writer (a webhook) with the same data: nothing to do.
        self.counts["unchanged"] += len(inserts) - done

    def _contacts(self, bulk: Bulk, orders: list[OrderRow], now: Any) -> dict[str, int | None]:
        """Contact id by email, creating the contacts not known yet. An address erased at its
        owner's request gets no contact again: its orders are kept without a person."""
        emails = sorted({o.email for o in orders if o.email is not None})
        customer = {o.email: o.customer_id for o in orders if o.customer_id is not None}
        ids: dict[str, int | None] = {}
        attach: list[tuple[str, int]] = []  # the shop's customer id, for contacts without one
        # Without customer ids to attach, the email index alone answers (no contact row read).
        wanted = "customer_id" if customer else "NULL"
        for cid, email, customer_id in bulk.fetch_in(
            f"SELECT id, email, {wanted} FROM contacts WHERE email {{in}}", emails  # noqa: S608
        ):
            ids[email] = cid
            if customer_id is None and email in customer:
                attach.append((customer[email], cid))
        bulk.update("contacts", "id", ("customer_id",), ("text",), attach)
        fresh = [e for e in emails if e not in ids]
        if fresh and self.key is not None:
            digests = {address_hmac(self.key, e): e for e in fresh}
            for (digest,) in bulk.fetch_in(
                "SELECT address_hmac FROM suppressions WHERE reason = ? AND address_hmac {in}",
                list(digests),
                params=(SuppressionReason.ERASED.value,),
            ):
                ids[digests[digest]] = None
            fresh = [e for e in fresh if e not in ids]
        if not fresh:
            return ids
        created = bulk.insert_new(
            "contacts", _NEW_CONTACT, _NEW_CONTACT_TYPES,
            [
                (e, customer.get(e), "{}", is_role(e.rpartition("@")[0]),
                 is_disposable(e.rpartition("@")[2]), 0, 0, now, now)
                for e in fresh
            ],
            key="email",
        )
        self.counts["contacts_created"] += len(created)
        ids.update(created)
        return ids

    def _by_customer(self, bulk: Bulk, orders: list[OrderRow]) -> dict[str, int]:
        wanted = sorted({o.customer_id for o in orders if o.email is None and o.customer_id})
        out: dict[str, int] = {}
        for customer_id, cid in bulk.fetch_in(
            "SELECT customer_id, id FROM contacts WHERE customer_id {in} ORDER BY id DESC", wanted
        ):
            out[customer_id] = cid  # the oldest contact wins when several share a customer id
        return out


class _Progress:
    """Reading the file is the first 90 % of the bar, recomputing aggregates the rest."""

    def __init__(self, progress: Callable[[int, int], None] | None, bytes_total: int) -> None:
        self.progress = progress
        self.total = max(bytes_total, 1)
        self.scale = self.total * 10 // 9 + 1

    def reading(self, done: int, _total: int) -> None:
        if self.progress is not None:
            self.progress(done, self.scale)

    def recomputing(self, done: int, total: int) -> None:
        if self.progress is not None:
            tail = self.scale - self.total
            self.progress(self.total + tail * done // max(total, 1), self.scale)


def _recompute(engine: Engine, state: _OrderWriter, steps: _Progress, *, repair: bool) -> None:
    """Make the aggregates of every contact the file named exact: over the whole table when
    an earlier run was interrupted or when this one changed a large share of the contacts,
    else by steps over the contacts named."""
    with engine.connect() as conn:
        contacts = conn.execute(select(func.count()).select_from(Contact)).scalar_one()
    many = len(state.changed) * _MANY >= contacts
    if repair or many:
        with engine.begin() as conn:
            recompute_all_order_aggregates(conn, rebuild_indexes=many or repair)
        steps.recomputing(1, 1)
        return
    plan = list(recompute_steps(sorted(state.touched)))
    for i, step in enumerate(plan):
        with engine.begin() as conn:
            if isinstance(step, tuple):
                recompute_order_aggregates_between(conn, *step)
            else:
                recompute_order_aggregates(conn, step)
        steps.recomputing(i + 1, len(plan))


# The end of an import recomputes aggregates in contact id order, at most _STEP_IDS contacts
# per transaction. A chunk whose ids are close together (at least one in _DENSE) is done as one
# range: every contact in it, in one pass over the orders' contact index; scattered ids by list.
_STEP_IDS = 50_000
_DENSE = 4
# Orders per committed transaction (several parsed batches): a commit writes each page that
# random index entries dirtied, which larger transactions share.
_ROWS_PER_COMMIT = 50_000
# Changes to at least one contact in _MANY make the end a whole-table recomputation.
_MANY = 4


def recompute_steps(ids: Sequence[int]) -> Iterator[tuple[int, int] | list[int]]:
    """The transactions that recompute the aggregates of ``ids`` (sorted, distinct): an
    inclusive range of contact ids, or a list of them."""
    start = 0
    while start < len(ids):
        chunk = ids[start : start + _STEP_IDS]
        low, high = chunk[0], chunk[-1]
        if high - low + 1 <= _DENSE * len(chunk):
            yield (low, high)
        else:
            yield list(chunk)
        start += len(chunk)


def import_orders(
    engine: Engine,
    path: Path,
    *,
    now: datetime,
    source: str = "csv",
    rejects_path: Path | None = None,
    batch_size: int = 5000,
    progress: Callable[[int, int], None] | None = None,
    key: bytes | None = None,
    parallel: bool | None = None,
) -> OrderImportSummary:
    """Import the orders of the CSV file ``path`` under ``source`` (idempotent by source and
    order id: same data → unchanged, changed data → updated), creating a contact without
    subscription for each unknown customer and keeping order aggregates exact. With ``key``,
    addresses erased at their owner's request (A9) get no contact again. ``parallel``: check
    rows in a helper process (None: for files of a few MiB and more)."""
    source = source.strip()
    if not source or len(source) > 32:
        raise InvalidInputError("an order source is 1 to 32 characters (like csv or shopify)")
    if batch_size < 1:
        raise InvalidInputError("the batch size must be at least 1")
    started = time.monotonic()
    with open_input(path) as src:
        columns = map_columns(src.header, path.name)
        delimiter, bom = src.delimiter, src.has_bom
    rejects_path = (rejects_path or default_rejects_path(path)).absolute()
    check_rejects_path(path, rejects_path)
    run_id = start_run(engine, path, kind="orders", now=now)
    state = _OrderWriter(source=source, now=now, key=key)
    writer = RejectsWriter(rejects_path, columns.header, delimiter=delimiter, bom=bom)
    bytes_total = path.stat().st_size
    steps = _Progress(progress, bytes_total)
    try:
        rows_read = run_batches(
            engine, parsed_batches(path, OrderParserSpec(columns), batch_size, parallel=parallel),
            writer, apply=state.apply, bytes_total=bytes_total, progress=steps.reading,
            rows_per_commit=_ROWS_PER_COMMIT,
        )
    finally:
        rejects_file = writer.finish()
    repair = interrupted_before(engine, run_id, kind="orders") > 0
    _recompute(engine, state, steps, repair=repair)
    counts = state.counts
    summary = OrderImportSummary(
        rows=rows_read,
        imported=counts["imported"],
        updated=counts["updated"],
        unchanged=counts["unchanged"],
        rejected=writer.count,
        contacts_created=counts["contacts_created"],
        rejects_file=rejects_file,
        rejected_by_reason=dict(writer.reasons.most_common()),
    )
    finish_run(engine, run_id, summary, now + timedelta(seconds=time.monotonic() - started))
    return summary
