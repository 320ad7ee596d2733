"""Benchmark of the whole per-recipient pipeline (issue "message assembly"): render + assemble +
DKIM-sign a ~25 KB newsletter through `campaigns.pipeline.CampaignPipeline`, exactly as preview
and the delivery engine build messages, next to the naive pipeline measured in the same run
(the same rendering, then the stdlib `EmailMessage` and dkimpy's `dkim.sign`).

    .venv/bin/python -m benchmarks --only pipeline

Figures are CPU time of one process: ``ms_per_message`` is what one core spends per message.
Goal: ≥ 10× the naive rate and ≤ 1.5 ms per message.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from benchmarks.bench_assembly import naive
from benchmarks.bench_render import FIRST, LAST, newsletter_content
from campaigns.message.assembly import RecipientParts
from campaigns.message.dkim import DkimSigner, generate_dkim_key
from campaigns.message.headers import Mailbox
from campaigns.models import CampaignKind
from campaigns.pipeline import CampaignPipeline, SenderIdentity
from campaigns.rendering import Recipient, load_shipped_template, render_message
from campaigns.service import CampaignSpec, create_campaign
from lists.mailing_lists import create_list
from lists.models import Contact
from patron.db import make_engine, migrate

FULL_SIZE = 3000
NAIVE_CAP = 300
KEY = b"benchmark-key-0123456789abcdef"
NOW = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)


def _setup(size: int, directory: Path) -> tuple[Any, list[Contact], CampaignPipeline, bytes]:
    engine = make_engine(f"sqlite:///{directory / 'bench.sqlite3'}")
    migrate(engine)
    pem, _ = generate_dkim_key(2048)
    identity = SenderIdentity(
        from_address="Patron Demo Shop <news@shop.example>",
        postal_address="Patron Demo Shop, 1 Rue de la Gare, L-4001 Esch-sur-Alzette, Luxembourg",
        tracking_base_url="https://t.shop.example",
        shop_url="https://shop.example/",
        dkim=DkimSigner("shop.example", "s1", pem),
    )
    session = Session(engine, expire_on_commit=False)
    create_list(session, "newsletter", NOW, double_opt_in=False)
    session.execute(
        insert(Contact),
        [
            {
                "email": f"kunde{i}@example.com",
                "first_name": FIRST[i % len(FIRST)],
                "last_name": LAST[i % len(LAST)],
                "attributes": {"city": "Esch", "tier": "gold" if i % 3 else "silver"},
                "created_at": NOW,
                "updated_at": NOW,
            }
            for i in range(size)
        ],
    )
    campaign = create_campaign(
        session,
        CampaignSpec(
            name="Sommer 2026",
            kind=CampaignKind.NEWSLETTER,
            template="newsletter",
            template_source=load_shipped_template("newsletter").text,
            subject="{{ contact.first_name_or('Hallo') }}, 20 % auf die Sommerkollektion",
            lists=["newsletter"],
            content=newsletter_content(),
        ),
        NOW,
    )
    session.commit()
    contacts = list(session.execute(select(Contact).order_by(Contact.id)).scalars())  # type: ignore[arg-type]
    pipeline = CampaignPipeline(session, campaign, identity, KEY)
    session.close()
    return engine, contacts, pipeline, pem


def _naive(pipeline: CampaignPipeline, contact: Contact, pem: bytes) -> bytes:
    rendered = render_message(pipeline.compiled, Recipient.from_contact(contact), KEY)
    parts = RecipientParts(
        contact_id=contact.id or 0,
        to=Mailbox(contact.email, f"{contact.first_name} {contact.last_name}"),
        subject=rendered.subject,
        html=rendered.html,
        text=rendered.text,
        unsubscribe_url=rendered.unsubscribe_url,
        unsubscribe_mailto="mailto:unsubscribe@shop.example",
        date=NOW,
    )
    return naive(parts, pem)


def run(size: int, pg_url: str | None = None) -> dict[str, Any]:
    """Build ``size`` messages through the pipeline (``pg_url`` unused: no database on the
    hot path, contacts are loaded before timing)."""
    del pg_url
    with tempfile.TemporaryDirectory() as tmp:
        engine, contacts, pipeline, pem = _setup(size, Path(tmp))
        sample = pipeline.build(contacts[0], now=NOW)
        start = time.process_time()
        total_bytes = 0
        for contact in contacts:
            total_bytes += len(pipeline.build(contact, now=NOW).data)
        ours = (time.process_time() - start) / len(contacts)
        naive_set = contacts[: min(len(contacts), NAIVE_CAP)]
        start = time.process_time()
        for contact in naive_set:
            _naive(pipeline, contact, pem)
        slow = (time.process_time() - start) / len(naive_set)
        engine.dispose()
    return {
        "summary": (
            f"render + assemble + DKIM-sign of a {len(sample.data) / 1024:.0f} KB newsletter: "
            f"{ours * 1000:.2f} ms CPU per message ({1 / ours:,.0f}/s per core), "
            f"{slow / ours:.1f}× the naive pipeline (goal ≥ 10×, ≤ 1.5 ms)"
        ),
        "size": size,
        "message_kb": round(len(sample.data) / 1024, 1),
        "ms_per_message": round(ours * 1000, 3),
        "messages_per_s_per_core": round(1 / ours),
        "naive_ms_per_message": round(slow * 1000, 3),
        "naive_messages_per_s_per_core": round(1 / slow),
        "speedup": round(slow / ours, 1),
        "naive_sample": len(naive_set),
        "mean_kb": round(total_bytes / len(contacts) / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=FULL_SIZE, help="recipients")
    args = parser.parse_args()
    print(json.dumps(run(args.size)))


if __name__ == "__main__":
    main()
