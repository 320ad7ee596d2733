"""The demo shop behind `patron demo`: a small Luxembourg-area shop with two years of history,
generated deterministically from a seed and written through the real domain functions (CSV
imports of contacts and orders, opt-outs, suppressions, an erasure), so that what the demo shows
is what those functions do.

Generation (:func:`generate`) is pure: a seed and a "now" give the same people and orders.
Building (:func:`build`) is a sequence of steps over a migrated, empty database; its last step
queues the double opt-in confirmations of the recent pending sign-ups, as a worker's first sweep
would (`patron worker` then sends them).

Then `patron demo` sends (patron/cli/cmd_demo.py wires it): :func:`create_winback` makes a
discount win-back campaign to the newsletter's lapsed repeat buyers with a holdout, as
`patron segments create` and `patron campaigns create` would, and the delivery engine sends it
with the confirmations to the built-in SMTP sink (patron/sink.py). Later steps (past
campaigns, the tracking server, the TUI) append to it."""

from __future__ import annotations

import csv
import math
import random
import tempfile
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session
from sqlmodel import col

from campaigns.confirmations import sweep_confirmations
from campaigns.models import Campaign, CampaignKind, Message, MessageState
from campaigns.pipeline import CampaignPipeline, SenderIdentity
from campaigns.preflight import check_campaign
from campaigns.rendering import load_shipped_template
from campaigns.service import CampaignSpec, create_campaign
from lists.consent import Provenance, unsubscribe
from lists.contacts import find_contact_or_none
from lists.errors import ConflictError, InvalidInputError
from lists.gdpr import erase_contact
from lists.imports.contacts import import_contacts
from lists.imports.orders import import_orders
from lists.mailing_lists import ListSummary, create_list, list_summaries
from lists.models import Contact, MailingList, Order, Suppression, SuppressionReason
from lists.retention import RetentionReport, retention_report
from lists.segments import create_segment
from lists.suppressions import suppress
from patron.db import ensure_secret_key, make_engine, migrate
from patron.settings import data_dir

DEFAULT_CONTACTS = 2000
DEFAULT_SEED = 42
NEWSLETTER, VIP = "newsletter", "vip"
CURRENCY = "EUR"
# A little over two years, so that even the year-ago comparison of the last 90 days has a
# full active window of history behind it.
HISTORY_DAYS = 850
REPORT_DAYS = 90


# The campaign the demo sends: a discount to bring lapsed repeat buyers back, with a holdout
# so that its lift can be measured once orders come in.
WINBACK_SEGMENT = "lapsed-repeaters"
WINBACK_RULE = "orders >= 2 and last_order before 60d"
WINBACK_HOLDOUT_PERCENT = 10.0
WINBACK_TEMPLATE = "winback"
WINBACK_OFFER = "15% off"
# Fast enough that the demo stays quick; the per-provider lanes still apply.
DEMO_RATE = 500.0


def default_demo_path() -> Path:
    """Where `patron demo` keeps its database unless told otherwise (recreated each run)."""
    return data_dir() / "demo.sqlite3"


def default_demo_maildir() -> Path:
    """Where the demo's SMTP sink stores what the demo sends (emptied each run)."""
    return data_dir() / "demo-mail"


# -- the people of the shop --------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Region:
    country: str
    weight: float
    locales: tuple[str, ...]
    timezone: str
    cities: tuple[str, ...]
    first_names: tuple[str, ...]
    last_names: tuple[str, ...]
    domains: tuple[str, ...]


REGIONS = (
    Region("LU", 0.40, ("lb-LU", "fr-LU", "de-LU"), "Europe/Luxembourg",
           ("Luxembourg", "Esch-sur-Alzette", "Differdange", "Dudelange", "Ettelbruck",
            "Diekirch", "Wiltz", "Echternach", "Remich", "Mersch"),
           ("Luc", "Marie", "Jean", "Anne", "Tom", "Léa", "Ben", "Sophie", "Gilles", "Claire",
            "Yves", "Nathalie", "Mick", "Lis", "Jos", "Fränk", "Ketty", "Romain"),
           ("Schmit", "Muller", "Weber", "Wagner", "Hoffmann", "Thill", "Reuter", "Kieffer",
            "Schroeder", "Klein", "Hansen", "Majerus", "Weis", "Faber", "Goedert"),
           ("mail.example.lu", "post.example.lu", "example.com")),
    Region("LU", 0.08, ("pt-PT", "fr-LU"), "Europe/Luxembourg",
           ("Luxembourg", "Esch-sur-Alzette", "Differdange", "Pétange"),
           ("João", "Inês", "Tiago", "Beatriz", "Gonçalo", "Mariana", "Rui", "Conceição"),
           ("Silva", "Santos", "Ferreira", "Pereira", "Gonçalves", "Rodrigues", "Lopes"),
           ("mail.example.lu", "example.com")),
    Region("FR", 0.22, ("fr-FR",), "Europe/Paris",
           ("Metz", "Nancy", "Thionville", "Paris", "Lyon", "Strasbourg", "Lille"),
           ("Camille", "Léa", "Chloé", "Manon", "Hugo", "Lucas", "Théo", "Élodie", "Jérôme",
            "François", "Amélie", "Gaël", "Noémie", "Zoé", "Benoît"),
           ("Martin", "Bernard", "Dubois", "Thomas", "Robert", "Petit", "Durand", "Leroy",
            "Moreau", "Lefèvre", "Girard", "Bonnet", "Rousseau", "Faure"),
           ("courriel.example.fr", "example.net", "example.com")),
    Region("DE", 0.15, ("de-DE",), "Europe/Berlin",
           ("Trier", "Saarbrücken", "Köln", "München", "Berlin", "Hamburg", "Koblenz"),
           ("Jürgen", "Jörg", "Lukas", "Lena", "Mia", "Felix", "Björn", "Sören", "Anja",
            "Katrin", "Günter", "Uwe", "Maximilian", "Hannah"),
           ("Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker",
            "Schäfer", "Koch", "Groß", "Böhm", "Krüger"),
           ("post.example.de", "example.net", "example.org")),
    Region("BE", 0.12, ("fr-BE", "nl-BE"), "Europe/Brussels",
           ("Arlon", "Liège", "Bruxelles", "Antwerpen", "Gent", "Namur", "Bastogne"),
           ("Lotte", "Wout", "Jens", "Elise", "Aurélie", "Maxime", "Thibault", "Inès", "Anouk",
            "Sander", "Hélène", "Kobe"),
           ("Peeters", "Janssens", "Maes", "Jacobs", "Mertens", "Willems", "Claes", "Goossens",
            "Dupont", "Lambert", "Dumont", "Van den Berghe"),
           ("mail.example.be", "example.org")),
    Region("NL", 0.03, ("nl-NL",), "Europe/Amsterdam",
           ("Maastricht", "Utrecht", "Amsterdam", "Eindhoven"),
           ("Daan", "Sanne", "Bram", "Fleur", "Sem", "Julia"),
           ("de Jong", "Jansen", "de Vries", "van Dijk", "Bakker", "Visser"),
           ("example.nl", "example.com")),
)
TAGS = ("garden", "kitchen", "kids", "outdoor", "books", "wellness", "gifts")
SIGNUP_SOURCES = ("checkout", "popup", "shop counter", "contest")
# Monthly weight of buying: Black Friday and Christmas, a summer sale, a quiet January.
SEASON = {1: 0.45, 2: 0.5, 3: 0.55, 4: 0.55, 5: 0.6, 6: 0.75, 7: 0.7, 8: 0.5, 9: 0.55,
          10: 0.6, 11: 1.0, 12: 0.95}


@dataclass(slots=True)
class DemoOrder:
    order_id: str
    at: datetime
    cents: int
    discount_code: str | None


@dataclass(slots=True)
class Person:
    """One generated customer or subscriber of the demo shop and what happens to them."""

    email: str
    first_name: str
    last_name: str
    locale: str | None
    timezone: str
    attributes: dict[str, str]
    signed_up: datetime
    pending: bool = False
    orders: list[DemoOrder] = field(default_factory=list)
    vip_since: datetime | None = None
    fate: str | None = None  # unsubscribed, unsubscribed_all, hard_bounce, complaint, erased
    fate_at: datetime | None = None


@dataclass(slots=True)
class DemoShop:
    """The generated shop: people, plus addresses the import's hygiene rules must refuse."""

    now: datetime
    people: list[Person]
    refused: list[tuple[datetime, bool, str]]  # (signed up, pending, raw address)


def _ascii(text: str) -> str:
    text = text.replace("ß", "ss")
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in plain.lower() if ch.isalnum())


def _pick_region(rng: random.Random) -> Region:
    return rng.choices(REGIONS, weights=[r.weight for r in REGIONS])[0]


def _address(rng: random.Random, first: str, last: str, region: Region, taken: set[str]) -> str:
    f, lname = _ascii(first), _ascii(last)
    local = rng.choice((f"{f}.{lname}", f"{f[0]}.{lname}", f"{f}{lname}", f"{f}_{lname}",
                        f"{f}.{lname}{rng.randint(1, 99)}", f"{lname}.{f}"))
    domain = rng.choice(region.domains)
    email, n = f"{local}@{domain}", 1
    while email in taken:
        n += 1
        email = f"{local}{n}@{domain}"
    taken.add(email)
    return email


def _seasonal(rng: random.Random, at: datetime, now: datetime) -> datetime:
    # Thin out purchases in quiet months by pushing them forward to a busier moment.
    for _ in range(8):
        if rng.random() < SEASON[at.month]:
            break
        at += timedelta(days=rng.randint(3, 25))
    return min(at, now - timedelta(minutes=rng.randint(5, 600)))


def _daytime(rng: random.Random, day: datetime) -> datetime:
    hour = rng.choices(range(24), weights=[1, 1, 1, 1, 1, 1, 2, 4, 6, 8, 9, 10, 12, 10, 9, 9, 10,
                                           11, 13, 14, 13, 10, 6, 3])[0]
    return day.replace(hour=hour, minute=rng.randint(0, 59), second=rng.randint(0, 59),
                       microsecond=0)


def _total_cents(rng: random.Random) -> int:
    euros = math.exp(rng.gauss(math.log(42.0), 0.55))
    return max(500, int(round(euros, 1) * 100) - rng.choice((0, 0, 10, 1)))


def _extra_orders(rng: random.Random) -> int:
    # The long tail: most customers buy once, some come back, a few are loyal.
    roll = rng.random()
    if roll < 0.64:
        return 0
    if roll < 0.82:
        return 1
    if roll < 0.90:
        return 2
    if roll < 0.97:
        return rng.randint(3, 5)
    return rng.randint(6, 12)


def _discount(rng: random.Random, at: datetime, first: bool) -> str | None:
    if first and rng.random() < 0.3:
        return "WELCOME10"
    if at.month == 11 and at.day >= 20 and rng.random() < 0.5:
        return "BLACKFRIDAY20"
    if at.month in (6, 7) and rng.random() < 0.2:
        return "SUMMER15"
    return None


def generate(contacts: int, seed: int, now: datetime) -> DemoShop:
    """The demo shop for ``contacts`` people; the same seed and ``now`` give the same shop."""
    rng = random.Random(seed)
    now = now.astimezone(UTC).replace(second=0, microsecond=0)
    start = now - timedelta(days=HISTORY_DAYS)
    taken: set[str] = set()
    people: list[Person] = []
    for _ in range(contacts):
        region = _pick_region(rng)
        first, last = rng.choice(region.first_names), rng.choice(region.last_names)
        # More sign-ups lately: the shop grows.
        signed_up = _daytime(rng, now - timedelta(days=HISTORY_DAYS * rng.random() ** 1.25))
        signed_up = min(signed_up, now - timedelta(minutes=30))
        attributes = {
            "country": region.country,
            "city": rng.choice(region.cities),
            "tags": ",".join(sorted(rng.sample(TAGS, rng.choice((0, 1, 1, 2, 3))))),
            "signup_source": rng.choice(SIGNUP_SOURCES),
        }
        if rng.random() < 0.4:
            birthday = datetime(rng.randint(1950, 2004), rng.randint(1, 12), rng.randint(1, 28))
            attributes["birthday"] = birthday.date().isoformat()
        people.append(Person(
            email=_address(rng, first, last, region, taken),
            first_name=first,
            last_name=last,
            locale=rng.choice(region.locales) if rng.random() > 0.05 else None,
            timezone=region.timezone,
            attributes=attributes,
            signed_up=signed_up,
        ))
    people.sort(key=lambda p: p.signed_up)

    for person in people:
        recent = now - person.signed_up < timedelta(days=30)
        person.pending = rng.random() < (0.35 if recent else 0.01)
        if rng.random() < 0.62:
            at = _seasonal(rng, person.signed_up + timedelta(hours=rng.randint(0, 24 * 20)), now)
            dates = [at]
            for _ in range(_extra_orders(rng)):
                at = _seasonal(rng, at + timedelta(days=rng.expovariate(1 / 80) + 3), now)
                if at >= now - timedelta(minutes=5) or at <= dates[-1]:
                    break
                dates.append(at)
            person.orders = [
                DemoOrder("", _daytime(rng, d), _total_cents(rng), _discount(rng, d, i == 0))
                for i, d in enumerate(dates)
            ]
            person.orders = [o for o in person.orders if o.at < now]
        if len(person.orders) >= 3 and rng.random() < 0.7:
            person.vip_since = person.orders[2].at + timedelta(days=1)
            if person.vip_since >= now:
                person.vip_since = None
        person.fate = _fate(rng, person)
        if person.fate is not None:
            span = (now - person.signed_up).total_seconds()
            person.fate_at = person.signed_up + timedelta(seconds=span * rng.uniform(0.2, 0.95))

    numbered = sorted((o for p in people for o in p.orders), key=lambda o: o.at)
    for n, order in enumerate(numbered, start=100001):
        order.order_id = f"D-{n}"
    refused = _refused_addresses(rng, max(3, contacts // 100), start, now, people)
    return DemoShop(now=now, people=people, refused=refused)


def _fate(rng: random.Random, person: Person) -> str | None:
    if person.pending:
        return None
    roll = rng.random()
    if roll < 0.035:
        return "unsubscribed"
    if roll < 0.05:
        return "unsubscribed_all"
    if roll < 0.06:
        return "hard_bounce"
    if roll < 0.063:
        return "complaint"
    if roll < 0.065 and person.orders:
        return "erased"
    return None


def _refused_addresses(
    rng: random.Random, count: int, start: datetime, now: datetime, people: list[Person]
) -> list[tuple[datetime, bool, str]]:
    # Role addresses, disposable domains and typos, then rows repeated within one file (the
    # same person entered twice in a sign-up export): all must land in the rejects file.
    kinds = ("info@example.com", "sales@mail.example.lu", "contact@example.net",
             "bons.plans@mailinator.com", "test.user@yopmail.com", "jean.dupont@",
             "marie@@example.com")
    out: list[tuple[datetime, bool, str]] = []
    for i in range(count):
        if i < len(kinds) or not people:
            out.append((start + (now - start) * rng.random(), False, kinds[i % len(kinds)]))
        else:
            twin = rng.choice(people)
            out.append((twin.signed_up, twin.pending, twin.email))
    return out


# -- building it through the domain functions --------------------------------------------------

@dataclass(frozen=True, slots=True)
class DemoResult:
    """What `patron demo` made, for printing."""

    url: str
    path: Path | None
    contacts: int
    refused_by_reason: dict[str, int]
    lists: list[ListSummary]
    orders: int
    revenue_cents: int
    currency: str
    history_start: datetime
    suppressions: dict[str, int]
    report: RetentionReport
    confirmations_queued: int = 0


def prepare_database(url: str | None) -> tuple[str, Path | None]:
    """The demo database URL: ``url`` if given (it must be empty), else a fresh demo.sqlite3
    in the data directory (an earlier demo there is replaced)."""
    if url is None:
        fresh = default_demo_path()
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{fresh}{suffix}").unlink(missing_ok=True)
        return f"sqlite:///{fresh}", fresh
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        return url, Path(str(parsed.database)).expanduser().resolve()
    return url, None


def _check_empty(engine: Engine) -> None:
    with Session(engine) as session:
        used = any(
            session.execute(select(func.count()).select_from(model)).scalar_one()
            for model in (Contact, MailingList, Order)
        )
    if used:
        raise ConflictError(
            "the database given with --db already holds data; the demo needs an empty one "
            "(or leave out --db to use the demo's own database)"
        )


def build(engine: Engine, key: bytes, shop: DemoShop, workdir: Path) -> dict[str, int]:
    """Write ``shop`` into the migrated, empty database behind ``engine``; returns how many
    addresses the imports refused, by reason."""
    _create_lists(engine, shop.now)
    refused = _import_audience(engine, key, shop, workdir)
    _import_orders(engine, key, shop, workdir)
    _apply_fates(engine, key, shop)
    _queue_confirmations(engine, shop.now)
    return refused


def _queue_confirmations(engine: Engine, now: datetime) -> None:
    """The newsletter's confirmation campaign with a queued mail for each pending sign-up of
    the last days (older ones are not mailed out of the blue)."""
    with Session(engine) as session, session.begin():
        sweep_confirmations(session, now)


def _create_lists(engine: Engine, now: datetime) -> None:
    opened = now - timedelta(days=HISTORY_DAYS + 1)
    with Session(engine) as session:
        create_list(session, NEWSLETTER, opened, description="News, tips and offers (monthly).")
        create_list(session, VIP, opened, double_opt_in=False,
                    description="Early access and VIP offers for loyal customers.")
        session.commit()


CONTACT_COLUMNS = ("email", "first_name", "last_name", "locale", "timezone", "country", "city",
                   "tags", "birthday", "signup_source")


def _write_contacts(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, CONTACT_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _row(person: Person) -> dict[str, Any]:
    return {"email": person.email, "first_name": person.first_name,
            "last_name": person.last_name, "locale": person.locale or "",
            "timezone": person.timezone, **person.attributes}


def _import_audience(
    engine: Engine, key: bytes, shop: DemoShop, workdir: Path
) -> dict[str, int]:
    # One import per month of sign-ups (and per consent state), run "at" the end of that
    # month, so contacts and their consent records carry believable dates.
    batches: dict[tuple[str, str, bool], list[dict[str, Any]]] = defaultdict(list)
    moments: dict[tuple[str, str, bool], datetime] = {}

    def add(list_name: str, when: datetime, pending: bool, row: dict[str, Any]) -> None:
        batch = (list_name, when.strftime("%Y-%m"), pending)
        batches[batch].append(row)
        moments[batch] = max(moments.get(batch, when), when)

    for person in shop.people:
        add(NEWSLETTER, person.signed_up, person.pending, _row(person))
        if person.vip_since is not None:
            add(VIP, person.vip_since, False, _row(person))
    for when, pending, raw in shop.refused:
        add(NEWSLETTER, when, pending, {"email": raw})

    refused: Counter[str] = Counter()
    for (list_name, month, pending), rows in sorted(batches.items(), key=lambda b: moments[b[0]]):
        path = workdir / f"{list_name}-{month}{'-pending' if pending else ''}.csv"
        _write_contacts(path, rows)
        source = (
            "VIP club sign-up at checkout (demo data)" if list_name == VIP
            else f"{'newsletter form' if pending else 'newsletter form, double opt-in confirmed'}"
                 " (demo data)"
        )
        summary = import_contacts(
            engine, key, path, list_name=list_name, consent_source=source,
            now=moments[(list_name, month, pending)], confirmed=not pending,
        )
        refused.update(summary.rejected_by_reason)
    return dict(refused)


def _import_orders(engine: Engine, key: bytes, shop: DemoShop, workdir: Path) -> None:
    path = workdir / "orders.csv"
    orders = sorted(((o, p.email) for p in shop.people for o in p.orders), key=lambda x: x[0].at)
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(("order_id", "email", "total", "currency", "ordered_at", "discount_code"))
        for order, email in orders:
            writer.writerow((order.order_id, email, f"{order.cents / 100:.2f}", CURRENCY,
                             order.at.isoformat().replace("+00:00", "Z"),
                             order.discount_code or ""))
    import_orders(engine, path, now=shop.now, source="demo-shop", key=key)


def _apply_fates(engine: Engine, key: bytes, shop: DemoShop) -> None:
    one_click = Provenance(source="one-click unsubscribe (demo data)",
                           user_agent="Mozilla/5.0 (demo)")
    fated = sorted((p for p in shop.people if p.fate), key=lambda p: p.fate_at or shop.now)
    with Session(engine) as session:
        for person in fated:
            assert person.fate is not None and person.fate_at is not None
            contact = find_contact_or_none(session, person.email)
            if contact is None:
                continue
            if person.fate == "unsubscribed":
                newsletter = session.execute(
                    select(MailingList).where(col(MailingList.name) == NEWSLETTER)
                ).scalar_one()
                unsubscribe(session, key, contact, one_click, person.fate_at,
                            mailing_list=newsletter)
            elif person.fate == "unsubscribed_all":
                unsubscribe(session, key, contact, one_click, person.fate_at)
            elif person.fate == "erased":
                erase_contact(session, key, contact, person.fate_at)
            else:
                suppress(session, key, contact.email, SuppressionReason(person.fate),
                         person.fate_at)
        session.commit()


def summarize(engine: Engine, url: str, path: Path | None, shop: DemoShop,
              refused: dict[str, int]) -> DemoResult:
    """Count what the database now holds and compute the retention report of the last 90
    days beside the 90 days before and the same days a year earlier."""
    with Session(engine) as session:
        contacts = session.execute(select(func.count()).select_from(Contact)).scalar_one()
        orders, revenue = session.execute(
            select(func.count(), func.coalesce(func.sum(col(Order.total_cents)), 0))
        ).one()
        suppressions = {
            str(reason): int(n)
            for reason, n in session.execute(
                select(col(Suppression.reason), func.count()).group_by(col(Suppression.reason))
            )
        }
        # The last 90 days up to the end of today (UTC), so the periods fall on whole days.
        end = shop.now.replace(hour=0, minute=0) + timedelta(days=1)
        report = retention_report(
            session, end - timedelta(days=REPORT_DAYS), end, currency=CURRENCY
        )
        lists = list_summaries(session)
        confirmations = session.execute(
            select(func.count())
            .select_from(Message)
            .join(Campaign, col(Campaign.id) == col(Message.campaign_id))
            .where(
                col(Campaign.kind) == CampaignKind.CONFIRMATION.value,
                col(Message.state) == MessageState.QUEUED.value,
            )
        ).scalar_one()
    return DemoResult(
        url=url, path=path, contacts=int(contacts), refused_by_reason=refused, lists=lists,
        orders=int(orders), revenue_cents=int(revenue), currency=CURRENCY,
        history_start=shop.now - timedelta(days=HISTORY_DAYS),
        suppressions=suppressions, report=report, confirmations_queued=int(confirmations),
    )


def run_demo(
    url: str | None, *, contacts: int, seed: int, now: datetime, key: bytes | None = None
) -> DemoResult:
    """Create (or take the empty ``url``), migrate and fill the demo database; return what it
    holds. ``key`` is the HMAC key (default: the one stored in the database)."""
    if contacts < 1:
        raise InvalidInputError("the demo needs at least one contact")
    url, path = prepare_database(url)
    engine = make_engine(url)
    try:
        migrate(engine)
        _check_empty(engine)
        if key is None:
            with Session(engine) as session:
                key = ensure_secret_key(session).encode()
                session.commit()
        shop = generate(contacts, seed, now)
        with tempfile.TemporaryDirectory(prefix="patron-demo-") as tmp:
            refused = build(engine, key, shop, Path(tmp))
        return summarize(engine, url, path, shop, refused)
    finally:
        engine.dispose()


# -- the campaign the demo sends ---------------------------------------------------------------

def winback_spec(seed: int) -> CampaignSpec:
    """The demo's win-back campaign: a unique discount code for each lapsed repeat buyer on
    the newsletter, 10 % held out (``seed`` fixes who)."""
    return CampaignSpec(
        name="We miss you",
        kind=CampaignKind.DISCOUNT,
        template=WINBACK_TEMPLATE,
        template_source=load_shipped_template(WINBACK_TEMPLATE).text,
        subject=f"{{{{ contact.first_name_or('Hello') }}}}, {WINBACK_OFFER} to welcome you back",
        lists=[NEWSLETTER],
        segment=WINBACK_SEGMENT,
        content={"headline": "It has been a while", "cta_text": "Come back and see"},
        holdout_percent=WINBACK_HOLDOUT_PERCENT,
        discount_prefix="COMEBACK-",
        discount_expiry_days=30,
        seed=seed,
    )


def create_winback(
    session: Session, identity: SenderIdentity, key: bytes, now: datetime, seed: int
) -> Campaign:
    """Save the lapsed-repeaters segment and the draft win-back campaign on it, with its
    tracked links, and check it renders for a sample of its recipients (as `patron campaigns
    send` does before starting)."""
    create_segment(session, WINBACK_SEGMENT, WINBACK_RULE, now)
    campaign = create_campaign(session, winback_spec(seed), now)
    pipeline = CampaignPipeline(session, campaign, identity, key)
    pipeline.store_links(session)
    check_campaign(pipeline, session, now)
    return campaign


def confirmation_campaign_ids(session: Session) -> list[int]:
    """The double opt-in confirmation campaigns (one per double opt-in list)."""
    ids = session.execute(
        select(col(Campaign.id))
        .where(col(Campaign.kind) == CampaignKind.CONFIRMATION.value)
        .order_by(col(Campaign.id))
    ).scalars()
    return [i for i in ids if i is not None]
