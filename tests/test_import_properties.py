"""Properties of the contact import (Q2, A4, A5) over generated CSV files:

- every data row ends up either stored or in the rejects file, never both, never neither;
- importing a file twice leaves the database as importing it once;
- a suppressed address (also one erased, then suppressed) never becomes a confirmed subscriber,
  whatever the imports and their options.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from lists.addresses import normalize_email, suppression_key
from lists.errors import InvalidInputError
from lists.imports.contacts import import_contacts
from lists.mailing_lists import create_list
from lists.models import ConsentEvent, Contact, Subscription, Suppression, SuppressionReason
from lists.suppressions import address_hmac, suppress
from patron.db import make_engine

from .conftest import NOW, TEST_SECRET

KEY = TEST_SECRET.encode()
PROPERTY = settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

locals_ = st.sampled_from(["ana", "Ben", "c.d", "info", "sales", "e+tag", "x_y", "ANA", "zoé"])
domains = st.sampled_from(
    ["shop.example", "Shop.Example", "mail.example.org", "mailinator.com", "bücher.example"]
)
good_address = st.builds(lambda lp, d: f"{lp}@{d}", locals_, domains)
bad_address = st.sampled_from(["", "plain", "a@", "@b.example", "a@@b.example", "a b@c.example",
                               "a@localhost", "x@y.invalid"])
address = st.one_of(good_address, good_address, bad_address)
names = st.one_of(st.just(""), st.sampled_from(["Ana", "Jérôme", "O'Brien", "a,b", 'say "hi"']),
                  st.text(alphabet="ab \n;,\"é", max_size=6))
zones = st.sampled_from(["", "", "Europe/Luxembourg", "europe/paris", "Mars/Base", "UTC"])
extra = st.lists(st.just("surplus"), max_size=1)
rows = st.lists(st.tuples(address, names, zones, names, extra), min_size=1, max_size=25)


def _write(tmp: Path, data, delimiter: str, bom: bool) -> tuple[Path, dict[int, str]]:
    """Write the rows; return the file and each data row's first physical line → its email."""
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, delimiter=delimiter, lineterminator="\n")
    writer.writerow(["email", "first_name", "timezone", "city"])
    lines: dict[int, str] = {}
    line = 2
    for email, first, zone, city, surplus in data:
        fields = [email, first, zone, city, *surplus]
        if not "".join(fields).strip():
            fields[0] = "blank@row.example"  # an all-empty row is a blank line, not a row
        start = buf.tell()
        writer.writerow(fields)
        lines[line] = fields[0]
        line += buf.getvalue()[start:].count("\n")
    path = tmp / "generated.csv"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + buf.getvalue().encode())
    return path, lines


def _rejected_lines(path: Path | None) -> list[int]:
    if path is None:
        return []
    with path.open(encoding="utf-8-sig", newline="") as fh:
        head = fh.readline()
        fh.seek(0)
        if fh.read(1) != "\ufeff":
            fh.seek(0)
        reader = csv.DictReader(fh, delimiter=";" if head.count(";") > head.count(",") else ",")
        return [int(r["reject_line"]) for r in reader]


def _snapshot(engine):
    with Session(engine) as s:
        contacts = sorted(
            (c.email, c.first_name, c.timezone, tuple(sorted(c.attributes.items())), c.updated_at)
            for c in s.execute(select(Contact)).scalars()
        )
        subs = sorted((sub.contact_id, sub.list_id, sub.status) for sub in s.execute(select(Subscription)).scalars())
        ledger = sorted((e.contact_id, e.list_id, e.action, e.source) for e in s.execute(select(ConsentEvent)).scalars())
    return contacts, subs, ledger


def _fresh(db_factory, *, double_opt_in=True):
    engine = make_engine(db_factory())
    with Session(engine) as s:
        create_list(s, "news", NOW, double_opt_in=double_opt_in)
        s.commit()
    return engine


@given(data=rows, delimiter=st.sampled_from([",", ";"]), bom=st.booleans(),
       batch=st.integers(1, 8))
@PROPERTY
def test_every_row_is_stored_or_rejected_never_both_never_neither(
    db_factory, tmp_path_factory, data, delimiter, bom, batch
):
    engine = _fresh(db_factory)
    tmp = tmp_path_factory.mktemp("csv")
    path, lines = _write(tmp, data, delimiter, bom)
    summary = import_contacts(engine, KEY, path, list_name="news", consent_source="test",
                              now=NOW, batch_size=batch)
    rejected = _rejected_lines(summary.rejects_file)
    assert len(rejected) == len(set(rejected)) == summary.rejected
    assert set(rejected) <= set(lines)
    assert summary.rows == len(lines)
    with Session(engine) as s:
        subscribed = {
            email
            for email, in s.execute(
                select(Contact.email).join(Subscription, Subscription.contact_id == Contact.id)
            )
        }
        stored = set(s.execute(select(Contact.email)).scalars())
    assert stored == subscribed
    accepted = [line for line in lines if line not in set(rejected)]
    assert summary.imported == len(accepted)
    # Neither: each accepted row's address is stored. Both: each rejected row's address is
    # stored only if another, accepted row of the file has it.
    accepted_keys = set()
    for line in accepted:
        email = normalize_email(lines[line])
        assert email in stored
        accepted_keys.add(suppression_key(email))
    for line in rejected:
        try:
            email = normalize_email(lines[line])
        except InvalidInputError:
            continue
        assert email not in stored or suppression_key(email) in accepted_keys
    engine.dispose()


@given(data=rows, confirmed=st.booleans(), double_opt_in=st.booleans())
@PROPERTY
def test_importing_twice_equals_importing_once(db_factory, tmp_path_factory, data, confirmed,
                                               double_opt_in):
    engine = _fresh(db_factory, double_opt_in=double_opt_in)
    path, _ = _write(tmp_path_factory.mktemp("csv"), data, ",", False)

    def run():
        return import_contacts(engine, KEY, path, list_name="news", consent_source="test",
                               now=NOW, confirmed=confirmed, batch_size=4)

    first = run()
    once = _snapshot(engine)
    rejects_once = first.rejects_file.read_bytes() if first.rejects_file else None
    second = run()
    assert _snapshot(engine) == once
    assert (second.imported, second.updated, second.pending, second.confirmed) == (0, 0, 0, 0)
    assert second.unchanged == first.imported + first.updated + first.unchanged
    assert (second.rejects_file.read_bytes() if second.rejects_file else None) == rejects_once
    engine.dispose()


victims = st.lists(good_address, min_size=1, max_size=5, unique_by=lambda a: a.casefold())
imports = st.lists(
    st.tuples(st.lists(st.one_of(good_address, st.builds(str.upper, good_address)), max_size=8),
              st.booleans(), st.booleans(), st.booleans()),
    min_size=1, max_size=3,
)


@given(victims=victims, erase=st.lists(st.booleans(), min_size=5, max_size=5),
       reason=st.sampled_from(list(SuppressionReason)), runs=imports, single=st.booleans())
@PROPERTY
def test_a_suppressed_address_never_becomes_a_confirmed_subscriber(
    db_factory, tmp_path_factory, victims, erase, reason, runs, single
):
    engine = _fresh(db_factory, double_opt_in=not single)
    with Session(engine) as s:
        for victim, erased in zip(victims, erase, strict=False):
            try:
                email = normalize_email(victim)
            except InvalidInputError:
                continue
            if erased:
                # Erasure: the contact goes, its suppression HMAC stays (A4, A9).
                contact = Contact(email=email, created_at=NOW, updated_at=NOW)
                s.add(contact)
                s.flush()
                s.execute(delete(Contact).where(Contact.id == contact.id))
                suppress(s, KEY, email, SuppressionReason.ERASED, NOW)
            else:
                suppress(s, KEY, email, reason, NOW)
        s.commit()
    tmp = tmp_path_factory.mktemp("csv")
    for i, (extra_rows, confirmed, no_role, no_disposable) in enumerate(runs):
        path = tmp / f"run{i}.csv"
        path.write_text("email\n" + "".join(f"{e}\n" for e in [*victims, *extra_rows]))
        import_contacts(engine, KEY, path, list_name="news", consent_source="test", now=NOW,
                        confirmed=confirmed, exclude_role=no_role,
                        exclude_disposable=no_disposable, batch_size=3)
    with Session(engine) as s:
        suppressed = set(s.execute(select(Suppression.address_hmac)).scalars())
        for email, status in s.execute(
            select(Contact.email, Subscription.status).join(
                Subscription, Subscription.contact_id == Contact.id
            )
        ):
            assert address_hmac(KEY, email) not in suppressed, (email, status)
    engine.dispose()

