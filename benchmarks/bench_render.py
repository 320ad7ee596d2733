"""Benchmark of rendering (SPEC C3): the shipped newsletter, filled to a ~25 KB message with
product cards and a dozen links, compiled once, then rendered per recipient (Jinja in the
sandbox, signed click/open/unsubscribe tokens, the plain-text part).

    .venv/bin/python benchmarks/bench_render.py --size 5000

``--size`` recipients. Next to it, in the same run: the naive way C3 rules out (the whole
compile, MJML and CSS inlining and text part included, again for every recipient; timed on at
most NAIVE_CAP recipients), and the local floor of the tokens (one HMAC-SHA256 of a token-sized
message). Figures are CPU time of
one process, so ``recipients_per_s_per_core`` is what one core sustains. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import hmac
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import campaigns.rendering.compile as compile_module
from campaigns.rendering import (
    CampaignInfo,
    Recipient,
    Shop,
    compile_campaign,
    load_shipped_template,
    render_message,
)

FULL_SIZE = 5000
NAIVE_CAP = 200
KEY = b"benchmark-key-0123456789abcdef"
BASE = "https://t.shop.example"
FIRST = ["Anna", "Luc", "Marie", "Jürgen", "Sofia", "Jonas", "Léa", "Tom", "Eva", "Zoë"]
LAST = ["Müller", "Schmit", "Weber", "Wagner", "Hoffmann", "Klein", "Thill", "Reuter"]
PRODUCTS = [
    ("Leinen-Hemd „Sommer“", "49,90 €"), ("Strohhut Classic", "29,00 €"),
    ("Espadrilles Blau", "39,50 €"), ("Sonnenbrille Rétro", "59,00 €"),
    ("Badetuch XXL", "24,90 €"), ("Picknickkorb für 4", "69,00 €"),
    ("Trinkflasche 750 ml", "19,90 €"), ("Strandtasche Natur", "34,00 €"),
    ("Sonnencreme LSF 50", "14,90 €"), ("Hängematte Baumwolle", "79,00 €"),
]
SHOP = Shop(
    "Patron Demo Shop",
    "Patron Demo Shop, 1 Rue de la Gare, L-4001 Esch-sur-Alzette, Luxembourg",
    "https://shop.example/",
    "https://cdn.shop.example/logo.png",
)
CAMPAIGN = CampaignInfo(
    42, "Sommer 2026", "{{ contact.first_name_or('Hallo') }}, 20 % auf die Sommerkollektion ☀️"
)


def newsletter_content() -> dict[str, str]:
    """Content values that make the shipped newsletter a ~25 KB message with 12 tracked links."""
    cards = []
    for i, (title, price) in enumerate(PRODUCTS):
        cards.append(
            f'<table role="presentation" width="100%" cellpadding="0" cellspacing="0" '
            f'style="margin:0 0 16px 0"><tr><td width="160" style="padding:0 16px 0 0">'
            f'<a href="https://shop.example/p/{i}?ref=nl" data-name="product-{i}">'
            f'<img src="https://cdn.shop.example/img/p{i}.jpg" width="160" alt="{title}" '
            f'style="display:block;border:0;border-radius:6px"></a></td>'
            f'<td valign="top"><h2 style="font-size:18px;margin:0 0 6px 0;color:#111827">'
            f"{title}</h2><p>Leicht, luftig und für lange Sommerabende gemacht. Jetzt mit "
            f"20 % Rabatt für Stammkundinnen und Stammkunden, nur bis Sonntag.</p>"
            f'<p style="color:#b91c1c;font-weight:700">{price}</p></td></tr></table>'
        )
    return {
        "headline": "Der Sommer ist da",
        "preheader": "20 % auf die neue Kollektion, nur bis Sonntag",
        "image_url": "https://cdn.shop.example/img/hero.jpg",
        "image_alt": "Sommerkollektion am Strand",
        "body_html": (
            "<p>Der Sommer ist da – und mit ihm unsere neue Kollektion. Als Dankeschön für "
            "Ihre Treue erhalten Sie bis Sonntag 20 % auf alle Artikel.</p>" + "".join(cards)
        ),
        "cta_text": "Zur Kollektion",
        "cta_url": "https://shop.example/sommer",
    }


def recipients(n: int) -> list[Recipient]:
    return [
        Recipient(
            10_000 + i,
            f"kunde{i}@example.com",
            FIRST[i % len(FIRST)],
            LAST[i % len(LAST)],
            {"city": "Esch", "tier": "gold" if i % 3 else "silver"},
        )
        for i in range(n)
    ]


def _cpu(work: Any) -> float:
    start = time.process_time()
    work()
    return time.process_time() - start


def run(size: int, url: str | None = None) -> dict[str, Any]:
    """Compile once, render ``size`` recipients; ``url`` (a database) is not needed."""
    del url
    source = load_shipped_template("newsletter")
    content = newsletter_content()
    compiles, mjml_calls = [], []
    real_mjml = compile_module.mjml2html

    def timed_mjml(*args: Any, **kwargs: Any) -> str:
        started = time.perf_counter()
        try:
            return real_mjml(*args, **kwargs)
        finally:
            mjml_calls.append(time.perf_counter() - started)

    # The MJML step alone is timed inside the real compile, not in a copy of it.
    compile_module.mjml2html = timed_mjml
    try:
        for _ in range(5):
            started = time.perf_counter()
            compiled = compile_campaign(
                source, campaign=CAMPAIGN, shop=SHOP, tracking_base_url=BASE, content=content
            )
            compiles.append(time.perf_counter() - started)
    finally:
        compile_module.mjml2html = real_mjml
    people = recipients(size)
    sample = render_message(compiled, people[0], KEY)

    def render_all() -> None:
        # Each message is handed on (to assembly) and dropped, as on the send path.
        for r in people:
            render_message(compiled, r, KEY)

    render_s = _cpu(render_all)

    # The naive way C3 rules out: the whole MJML pipeline again for every recipient.
    naive_people = people[: min(size, NAIVE_CAP)]

    def naive() -> None:
        for r in naive_people:
            again = compile_campaign(
                source, campaign=CAMPAIGN, shop=SHOP, tracking_base_url=BASE, content=content
            )
            render_message(again, r, KEY)

    naive_s = _cpu(naive)

    message = b"\x00patron-token\x00\x01\x01\x2a\x90\x4e\x03"
    rounds = 20_000
    hmac_s = _cpu(lambda: [hmac.digest(KEY, message, "sha256") for _ in range(rounds)])

    render_us = render_s / size * 1e6
    naive_us = naive_s / len(naive_people) * 1e6
    return {
        "name": "render",
        "size": size,
        "html_kb": round(len(sample.html.encode("utf-8")) / 1024, 1),
        "text_kb": round(len(sample.text.encode("utf-8")) / 1024, 1),
        "links": len(compiled.links),
        "compile_ms": round(min(compiles) * 1e3, 2),
        "compile_mjml_ms": round(min(mjml_calls) * 1e3, 2),
        "render_us_per_recipient": round(render_us, 1),
        "recipients_per_s_per_core": round(1e6 / render_us),
        "naive_recipients": len(naive_people),
        "naive_us_per_recipient": round(naive_us, 1),
        "speedup": round(naive_us / render_us, 1),
        "local_floor_hmac_sha256_us": round(hmac_s / rounds * 1e6, 3),
        "summary": (
            f"{size:,} recipients of a {len(sample.html) / 1024:.0f} KB newsletter with "
            f"{len(compiled.links)} tracked links: compiled once in {min(compiles) * 1e3:.1f} ms "
            f"(MJML {min(mjml_calls) * 1e3:.1f} ms of it), "
            f"then {render_us:.0f} µs per recipient (subject, HTML, text, "
            f"{len(compiled.links) + 2} tokens) on one core"
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=FULL_SIZE, help="recipients to render")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.size)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
