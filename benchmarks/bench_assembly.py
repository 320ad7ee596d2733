"""Benchmark of message assembly and DKIM signing per recipient (SPEC D6, D7), next to the naive
pipeline (stdlib ``EmailMessage`` with policy SMTP, then ``dkim.sign`` from dkimpy) and the
local floor measured in the same run: one RSA-2048 PKCS#1 v1.5 signature through OpenSSL.

    .venv/bin/python benchmarks/bench_assembly.py --size 5000

``--size`` recipients of a ~25 KB HTML newsletter (generated here, personalized per recipient
with a name and signed link tokens). The rendering itself is not timed (bench_rendering does
that): each pipeline gets the same rendered parts. The naive pipeline is timed on at most
NAIVE_CAP recipients (it costs ~15-20 ms each). Figures are CPU time of one process, so
``per_core_msgs_per_s`` is what one core sustains. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dkim
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from campaigns.message import (
    SIGNED_FIELDS,
    DkimSigner,
    Mailbox,
    MessageSkeleton,
    RecipientParts,
    feedback_id,
    generate_dkim_key,
)

FULL_SIZE = 5000
NAIVE_CAP = 300
NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
KEY = b"benchmark-key-0123456789abcdef"
FIRST = ["Anna", "Luc", "Marie", "Jürgen", "Sofia", "Jonas", "Léa", "Tom", "Eva", "Zoë"]
LAST = ["Müller", "Schmit", "Weber", "Wagner", "Hoffmann", "Klein", "Thill", "Reuter"]
PRODUCTS = [
    ("Leinen-Hemd „Sommer“", "49,90 €"), ("Strohhut Classic", "29,00 €"),
    ("Espadrilles Blau", "39,50 €"), ("Sonnenbrille Rétro", "59,00 €"),
    ("Badetuch XXL", "24,90 €"), ("Picknickkorb für 4", "69,00 €"),
    ("Trinkflasche 750 ml", "19,90 €"), ("Strandtasche Natur", "34,00 €"),
    ("Sonnencreme LSF 50", "14,90 €"), ("Hängematte Baumwolle", "79,00 €"),
    ("Leinenkleid Salbei", "89,00 €"), ("Sandalen Leder", "64,90 €"),
]
SUBJECT = "{first}, 20 % auf die Sommerkollektion – nur bis Sonntag ☀️"
SIGNED = [name.encode("ascii") for name in SIGNED_FIELDS] * 2


def newsletter_template() -> str:
    """A ~25 KB HTML newsletter of the shape MJML produces: nested tables, inline styles,
    indentation; {first} and {t0}…{t9} are the per-recipient parts."""
    td = 'style="font-family: Helvetica, Arial, sans-serif; font-size: 15px; line-height: 22px;'
    cards = []
    for i, (title, price) in enumerate(PRODUCTS):
        cards.append(f"""
            <tr>
              <td align="center" style="padding: 16px 24px; background: #ffffff;">
                <table role="presentation" cellpadding="0" cellspacing="0" width="100%">
                  <tr>
                    <td width="180" style="padding-right: 16px;">
                      <a href="https://t.shop.example/c/{{t{i % 8}}}" target="_blank">
                        <img src="https://cdn.shop.example/img/p{i}.jpg" width="180" height="180"
                             alt="{title}" style="display: block; border: 0; border-radius: 6px;">
                      </a>
                    </td>
                    <td valign="top" {td} color: #222222;">
                      <p style="margin: 0 0 8px 0; font-size: 18px; font-weight: bold;">{title}</p>
                      <p style="margin: 0 0 12px 0;">Leicht, luftig und für lange Sommerabende
                        gemacht. Jetzt mit 20 % Rabatt für Stammkundinnen und Stammkunden.</p>
                      <p style="margin: 0 0 16px 0; color: #c0392b; font-weight: bold;">{price}</p>
                      <table role="presentation" cellpadding="0" cellspacing="0">
                        <tr>
                          <td bgcolor="#2c3e50" style="border-radius: 4px;">
                            <a href="https://t.shop.example/c/{{t{i % 8}}}?b=1" target="_blank"
                               style="display: inline-block; padding: 10px 20px; color: #ffffff;
                                      text-decoration: none; font-weight: bold;">Jetzt ansehen</a>
                          </td>
                        </tr>
                      </table>
                    </td>
                  </tr>
                </table>
              </td>
            </tr>""")
    return f"""<!doctype html>
<html xmlns="http://www.w3.org/1999/xhtml" lang="de">
  <head>
    <meta http-equiv="Content-Type" content="text/html; charset=UTF-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>Sommer bei Patron Demo Shop</title>
    <style type="text/css">
      #outlook a {{ padding: 0; }}
      body {{ margin: 0; padding: 0; -webkit-text-size-adjust: 100%; }}
      table, td {{ border-collapse: collapse; mso-table-lspace: 0pt; mso-table-rspace: 0pt; }}
      img {{ border: 0; height: auto; line-height: 100%; outline: none; }}
      @media only screen and (max-width: 480px) {{
        .column {{ width: 100% !important; max-width: 100%; }}
      }}
    </style>
  </head>
  <body style="margin: 0; padding: 0; background-color: #f4f4f4;">
    <div style="display: none; max-height: 0; overflow: hidden;">Die Sommerkollektion ist da:
      20 % für Sie, {{first}}, nur bis Sonntag.</div>
    <center>
      <table role="presentation" cellpadding="0" cellspacing="0" width="600" align="center"
             style="width: 600px; max-width: 600px; background: #f4f4f4;">
        <tr>
          <td align="center" style="padding: 24px;">
            <a href="https://t.shop.example/c/{{t8}}"><img src="https://cdn.shop.example/logo.png"
               width="160" alt="Patron Demo Shop" style="display: block; border: 0;"></a>
          </td>
        </tr>
        <tr>
          <td {td} padding: 0 24px 16px 24px; color: #222222;">
            <h1 style="margin: 0 0 12px 0; font-size: 26px;">Hallo {{first}},</h1>
            <p style="margin: 0;">der Sommer ist da – und mit ihm unsere neue Kollektion. Als
              Dankeschön für Ihre Treue erhalten Sie bis Sonntag 20 % auf alle Artikel. Der
              Rabatt wird an der Kasse automatisch abgezogen.</p>
          </td>
        </tr>{"".join(cards)}
        <tr>
          <td {td} padding: 24px; color: #777777; font-size: 12px; line-height: 18px;">
            <p style="margin: 0 0 8px 0;">Patron Demo Shop, 1 Rue de la Gare,
              L-4001 Esch-sur-Alzette, Luxembourg</p>
            <p style="margin: 0;">Sie erhalten diese E-Mail, weil Sie unseren Newsletter
              abonniert haben. <a href="https://t.shop.example/p/{{t9}}" style="color: #777777;">
              Einstellungen</a> · <a href="https://t.shop.example/u/{{t9}}"
              style="color: #777777;">Abmelden</a></p>
            <img src="https://t.shop.example/o/{{t9}}.gif" width="1" height="1" alt="">
          </td>
        </tr>
      </table>
    </center>
  </body>
</html>
"""


def text_template() -> str:
    lines = ["Hallo {first},", "", "der Sommer ist da – 20 % auf alles bis Sonntag.", ""]
    for i, (title, price) in enumerate(PRODUCTS):
        lines += [f"{title} – {price}", f"https://t.shop.example/c/{{t{i % 8}}}", ""]
    lines += [
        "Patron Demo Shop, 1 Rue de la Gare, L-4001 Esch-sur-Alzette, Luxembourg",
        "Abmelden: https://t.shop.example/u/{t9}",
    ]
    return "\n".join(lines) + "\n"


def personalize(template: str, first: str, tokens: dict[str, str]) -> str:
    # Plain replacement: the CSS braces of the template are not format fields.
    out = template.replace("{first}", first)
    for name, token in tokens.items():
        out = out.replace("{" + name + "}", token)
    return out


def recipients(size: int) -> list[RecipientParts]:
    """Rendered parts for ``size`` recipients (personalized the way rendering does it)."""
    html, text = newsletter_template(), text_template()
    out = []
    for i in range(size):
        first = FIRST[i % len(FIRST)]
        tokens = {
            f"t{n}": base64.urlsafe_b64encode(
                hmac.new(KEY, b"%d:%d" % (i, n), hashlib.sha256).digest()[:18]
            ).decode()
            for n in range(10)
        }
        out.append(
            RecipientParts(
                contact_id=i + 1,
                to=Mailbox(f"customer.{i}@example.com", f"{first} {LAST[i % len(LAST)]}"),
                subject=SUBJECT.format(first=first),
                html=personalize(html, first, tokens),
                text=personalize(text, first, tokens),
                unsubscribe_url=f"https://t.shop.example/u/{tokens['t9']}",
                unsubscribe_mailto=f"mailto:unsubscribe+{tokens['t9']}@shop.example",
                date=NOW,
            )
        )
    return out


def naive(parts: RecipientParts, pem: bytes) -> bytes:
    """The obvious way: the stdlib builds and serializes the MIME tree, dkimpy signs it."""
    msg = EmailMessage(policy=SMTP)
    msg["From"] = "Patron Demo Shop <news@shop.example>"
    msg["To"] = f"{parts.to.name} <{parts.to.email}>"
    msg["Subject"] = parts.subject
    msg["Date"] = format_datetime(parts.date)
    msg["Message-ID"] = make_msgid(domain="shop.example")
    msg["List-Id"] = "Newsletter <newsletter.shop.example>"
    msg["List-Unsubscribe"] = f"<{parts.unsubscribe_url}>, <{parts.unsubscribe_mailto}>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg["Feedback-ID"] = "1:newsletter:shop"
    msg.set_content(parts.text)
    msg.add_alternative(parts.html, subtype="html")
    data = msg.as_bytes()
    signature = dkim.sign(
        data, b"s1", b"shop.example", pem,
        canonicalize=(b"relaxed", b"relaxed"), include_headers=SIGNED,
    )
    return bytes(signature) + data


def cpu_per_item(function: Callable[[Any], object], items: list[Any]) -> float:
    """CPU seconds per call of ``function`` over ``items`` (one process, one thread)."""
    start = time.process_time()
    for item in items:
        function(item)
    return (time.process_time() - start) / len(items)


def run(size: int, url: str | None) -> dict[str, Any]:
    """Assemble and sign ``size`` messages; ``url`` is unused (no database involved)."""
    pem, txt = generate_dkim_key(2048)
    signer = DkimSigner("shop.example", "s1", pem)
    common = {
        "sender": Mailbox("news@shop.example", "Patron Demo Shop"),
        "campaign_id": 1,
        "list_name": "Newsletter",
        "list_id": "newsletter.shop.example",
        "feedback_id": feedback_id("1", "newsletter", sender="shop"),
        "return_path_domain": "bounce.shop.example",
        "verp_key": KEY,
    }
    signed = MessageSkeleton(**common, signer=signer)  # type: ignore[arg-type]
    unsigned = MessageSkeleton(**common, signer=None)  # type: ignore[arg-type]
    parts = recipients(size)
    naive_parts = parts[: min(size, NAIVE_CAP)]

    def dns(name: bytes, timeout: int = 5) -> bytes:
        return txt.encode("ascii")

    ours_first = signed.assemble(parts[0]).data
    naive_first = naive(parts[0], pem)
    if not (dkim.verify(ours_first, dnsfunc=dns) and dkim.verify(naive_first, dnsfunc=dns)):
        raise RuntimeError("a benchmark message does not verify")

    key = load_pem_private_key(pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    header_block = ours_first.partition(b"\r\n\r\n")[0]
    rsa_s = cpu_per_item(
        lambda _: key.sign(header_block, padding.PKCS1v15(), hashes.SHA256()), list(range(500))
    )
    assemble_s = cpu_per_item(unsigned.assemble, parts)
    ours_s = cpu_per_item(signed.assemble, parts)
    naive_s = cpu_per_item(lambda p: naive(p, pem), naive_parts)
    html_kb = sum(len(p.html.encode("utf-8")) for p in parts) / len(parts) / 1024
    return {
        "name": "assembly",
        "size": size,
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, Python "
        f"{platform.python_version()}",
        "summary": (
            f"{html_kb:.1f} KB HTML + text, {size:,} recipients: assemble + DKIM sign "
            f"{ours_s * 1e3:.3f} ms CPU a message ({1 / ours_s:,.0f}/s per core), naive "
            f"EmailMessage + dkimpy {naive_s * 1e3:.2f} ms ({1 / naive_s:,.0f}/s): "
            f"{naive_s / ours_s:.1f}x; the RSA-2048 signature alone is {rsa_s * 1e3:.3f} ms."
        ),
        "html_kb": round(html_kb, 1),
        "message_kb": round(len(ours_first) / 1024, 1),
        "naive_message_kb": round(len(naive_first) / 1024, 1),
        "naive_recipients": len(naive_parts),
        "ours_ms_per_msg": round(ours_s * 1e3, 3),
        "ours_assemble_only_ms_per_msg": round(assemble_s * 1e3, 3),
        "ours_signing_ms_per_msg": round((ours_s - assemble_s) * 1e3, 3),
        "naive_ms_per_msg": round(naive_s * 1e3, 3),
        "ours_per_core_msgs_per_s": round(1 / ours_s),
        "naive_per_core_msgs_per_s": round(1 / naive_s),
        "speedup": round(naive_s / ours_s, 1),
        "local_floor_rsa2048_sign_ms": round(rsa_s * 1e3, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=FULL_SIZE, help="recipients")
    parser.add_argument("--pg-url", default=None, help="unused; accepted like every benchmark")
    args = parser.parse_args()
    print(json.dumps(run(args.size, args.pg_url)))


if __name__ == "__main__":
    main()
