"""Message assembly (SPEC D6, D7): what a receiver parses back, what dkimpy verifies, and that no
field value can add a header."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from email.header import decode_header, make_header
from email.message import EmailMessage

import dkim
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campaigns.message import (
    DkimSigner,
    Mailbox,
    MessageSkeleton,
    RecipientParts,
    feedback_id,
    generate_dkim_key,
    parse_mailbox,
    parse_verp,
    verp_address,
)
from campaigns.message.headers import clean_display_name
from lists.errors import InvalidInputError

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
VERP_KEY = b"test-verp-key"
UNSUB = "https://t.shop.example/u/AbC_123-xyz"
MAILTO = "mailto:unsubscribe@shop.example?subject=unsubscribe"
HTML = (
    "<!doctype html>\n<html><body>\n"
    '  <table width="600"><tr><td style="padding: 10px 20px">Hallo Jürgen,</td></tr>\n'
    '    <tr><td><a href="https://t.shop.example/c/1?u=a&amp;v=b">Shop now</a></td></tr>\n'
    "From the team\n.\n</table></body></html>\n"
)
TEXT = "Hallo Jürgen,\n\nShop now: https://t.shop.example/c/1\n\nFrom the team\n"


@pytest.fixture(scope="module")
def key() -> tuple[bytes, str]:
    return generate_dkim_key()


@pytest.fixture(scope="module")
def skeleton(key: tuple[bytes, str]) -> MessageSkeleton:
    return make_skeleton(DkimSigner("shop.example", "s1", key[0]))


def make_skeleton(signer: DkimSigner | None, sender: str = "Shop News <news@shop.example>"):
    return MessageSkeleton(
        sender=parse_mailbox(sender),
        campaign_id=12,
        list_name="Shop Newsletter",
        list_id="newsletter.shop.example",
        feedback_id=feedback_id("12", "newsletter", sender="shop"),
        return_path_domain="bounce.shop.example",
        verp_key=VERP_KEY,
        signer=signer,
    )


def parts(**changes: object) -> RecipientParts:
    base = RecipientParts(
        contact_id=345,
        to=Mailbox("anna@example.com", "Anna Schmidt"),
        subject="Your summer offer",
        html=HTML,
        text=TEXT,
        unsubscribe_url=UNSUB,
        unsubscribe_mailto=MAILTO,
        date=NOW,
    )
    return dataclasses.replace(base, **changes)


def verifies(data: bytes, txt: str) -> bool:
    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"s1._domainkey.shop.example."
        return txt.encode("ascii")

    return bool(dkim.verify(data, dnsfunc=dnsfunc))


def parse(data: bytes) -> EmailMessage:
    # SMTPUTF8 headers are UTF-8 (RFC 6532); the bytes parser would read them as unknown-8bit.
    msg = email.message_from_string(data.decode("utf-8"), policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def crlf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n")


def assert_wire_format(data: bytes, header_limit: int = 78) -> None:
    """CRLF only, every line within 998 octets, header lines within 78 where we can fold."""
    assert data.count(b"\n") == data.count(b"\r\n") == data.count(b"\r"), "bare CR or LF"
    head, _, body = data.partition(b"\r\n\r\n")
    for line in data.split(b"\r\n"):
        assert len(line) <= 998
    for line in head.split(b"\r\n"):
        assert len(line) <= header_limit, line
    for line in body.split(b"\r\n"):
        assert len(line) <= 76, line  # RFC 2045 §6.7
        assert not line.startswith(b"From "), "mbox would rewrite this line and break DKIM"


def rfc2047_display_name(msg: EmailMessage, field: str) -> str:
    """The display name as RFC 2047 §6.2 reads it: the stdlib's address parser keeps the folding
    space between adjacent encoded-words of a phrase (its own long names do not round-trip), so
    the phrase is decoded with email.header, which drops it as the RFC says."""
    [address] = msg[field].addresses
    [raw] = [value for name, value in msg.raw_items() if name == field]
    phrase = re.sub(r"\r?\n", "", raw).rpartition("<")[0].strip()
    if "=?" not in phrase:
        return address.display_name
    return str(make_header(decode_header(phrase)))


def assert_round_trip(data: bytes, p: RecipientParts, expected_to: str) -> EmailMessage:
    msg = parse(data)
    assert Counter(name for name, _ in msg.items()) == {
        "DKIM-Signature": 1, "From": 1, "To": 1, "Subject": 1, "Date": 1, "Message-ID": 1,
        "MIME-Version": 1, "List-Id": 1, "List-Unsubscribe": 1, "List-Unsubscribe-Post": 1,
        "Feedback-ID": 1, "Content-Type": 1,
    }
    assert msg["Subject"] == p.subject
    [to] = msg["To"].addresses
    assert rfc2047_display_name(msg, "To") == clean_display_name(p.to.name)
    assert to.addr_spec == expected_to
    [sender] = msg["From"].addresses
    assert (sender.display_name, sender.addr_spec) == ("Shop News", "news@shop.example")
    assert msg["Date"].datetime == p.date
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    expected_unsub = f"<{p.unsubscribe_url}>" + (
        f", <{p.unsubscribe_mailto}>" if p.unsubscribe_mailto else ""
    )
    assert msg["List-Unsubscribe"] == expected_unsub
    assert msg["List-Id"] == "Shop Newsletter <newsletter.shop.example>"
    assert msg["Feedback-ID"] == "12:newsletter:shop"
    assert msg.get_content_type() == "multipart/alternative"
    text_part, html_part = msg.iter_parts()
    assert text_part.get_content_type() == "text/plain"
    assert html_part.get_content_type() == "text/html"
    assert text_part.get_content() == crlf(p.text)
    assert html_part.get_content() == crlf(p.html)
    assert not msg.defects and not text_part.defects and not html_part.defects
    return msg


CASES = {
    "plain": {},
    "empty-name": {"to": Mailbox("anna@example.com", "")},
    "long-name": {"to": Mailbox("anna@example.com", "Anna-Katharina " * 12 + "Schmidt")},
    "long-word-name": {"to": Mailbox("anna@example.com", "A" * 200)},
    "quoted-name": {"to": Mailbox("anna@example.com", 'Schmidt, Anna "Annie" Q. \\o/')},
    "german": {
        "to": Mailbox("juergen@example.com", "Jürgen Müller-Lüdenscheidt"),
        "subject": "Größte Rabatte für Sie, Jürgen: 20 % auf alles bis Sonntag",
    },
    "chinese": {
        "to": Mailbox("li@example.com", "李小龙"),
        "subject": "夏季大促销：全场八折，仅限本周末！" * 3,
        "html": "<p>亲爱的李先生，您好！</p>\n" * 40,
        "text": "亲爱的李先生，您好！\n" * 40,
    },
    "emoji": {
        "to": Mailbox("sam@example.com", "Sam 🚀 Rocket"),
        "subject": "🎉🎁 Your gift is waiting 👨‍👩‍👧 — open it 🔥",
    },
    "long-subject": {"subject": "Summer sale " * 30},
    "long-ascii-word-subject": {"subject": "x" * 300},
    "encoded-word-lookalike": {
        "to": Mailbox("anna@example.com", "=?utf-8?q?Boss?="),
        "subject": "=?utf-8?b?SGFja2Vk?= subject",
    },
    "spaces-and-tabs-subject": {"subject": "  two  spaces\tand a tab "},
    "no-mailto": {"unsubscribe_mailto": None},
    "empty-bodies": {"html": "", "text": ""},
    "long-body-lines": {"html": "<p>" + "x" * 5000 + "</p>", "text": "y " * 3000},
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_round_trip_through_the_stdlib_parser_and_dkimpy(skeleton, key, case):
    p = parts(**CASES[case])
    message = skeleton.assemble(p)
    assert_wire_format(message.data)
    assert_round_trip(message.data, p, p.to.email)
    assert verifies(message.data, key[1])
    assert not message.smtputf8
    assert message.recipient == p.to.email


def test_idn_domain_is_punycoded_when_not_smtputf8(skeleton, key):
    p = parts(to=Mailbox("user@bücher.example", "Bücherwurm"))
    message = skeleton.assemble(p)
    assert not message.smtputf8
    assert message.recipient == "user@xn--bcher-kva.example"
    assert message.data.isascii()
    assert_round_trip(message.data, p, "user@xn--bcher-kva.example")
    assert verifies(message.data, key[1])


def test_non_ascii_local_part_needs_smtputf8(skeleton, key):
    p = parts(to=Mailbox("用户@例子.example", "用户"))
    message = skeleton.assemble(p)
    assert message.smtputf8
    assert message.recipient == "用户@例子.example"
    assert "To: =?utf-8?b?55So5oi3?= <用户@例子.example>\r\n".encode() in message.data
    assert_round_trip(message.data, p, "用户@例子.example")
    assert verifies(message.data, key[1])


@pytest.mark.parametrize("bad", ["Hi\r\nBcc: x@evil.example", "Hi\nthere", "Hi\rthere", "a\x00b"])
def test_line_breaks_in_a_subject_are_refused(skeleton, bad):
    with pytest.raises(InvalidInputError, match="subject"):
        skeleton.assemble(parts(subject=bad))


@pytest.mark.parametrize(
    "name",
    [
        "Anna\r\nBcc: victim@example.com",
        "Anna\r\n\r\n<h1>body</h1>",
        "Anna\nSubject: phishing",
        "Ann\x00a\tSchmidt\r",
        "Jürgen\r\nBcc: x@evil.example",
    ],
)
def test_line_breaks_in_a_name_cannot_add_a_header(skeleton, key, name):
    p = parts(to=Mailbox("anna@example.com", name))
    message = skeleton.assemble(p)
    assert_wire_format(message.data)
    msg = assert_round_trip(message.data, p, "anna@example.com")  # checks the field set
    assert "\n" not in msg["To"].addresses[0].display_name
    head = message.data.split(b"\r\n\r\n")[0].split(b"\r\n")
    starts = [line.split(b":")[0] for line in head if not line.startswith((b" ", b"\t"))]
    assert starts == [
        b"DKIM-Signature", b"From", b"To", b"Subject", b"Date", b"Message-ID", b"MIME-Version",
        b"List-Id", b"List-Unsubscribe", b"List-Unsubscribe-Post", b"Feedback-ID",
        b"Content-Type",
    ]
    assert verifies(message.data, key[1])


@pytest.mark.parametrize(
    "changes",
    [
        {"to": Mailbox("anna\r\n@example.com")},
        {"to": Mailbox("anna@example.com\r\nBcc: x@evil.example")},
        {"to": Mailbox("anna@exa mple.com")},
        {"to": Mailbox("an na@example.com")},
        {"to": Mailbox("no-at-sign")},
        {"to": Mailbox("anna@bad_domain!.com")},
        {"unsubscribe_url": UNSUB + "\r\nBcc: x@evil.example"},
        {"unsubscribe_url": "https://t.shop.example/u/a b"},
        {"unsubscribe_url": "javascript:alert(1)"},
        {"unsubscribe_url": "https://t.shop.example/u/" + "a" * 1000},
        {"unsubscribe_mailto": "unsubscribe@shop.example"},
        {"unsubscribe_mailto": MAILTO + ">, <https://evil.example"},
        {"message_id": "<abc@shop.example>\r\nBcc: x@evil.example"},
        {"message_id": "abc@shop.example"},
        {"date": datetime(2026, 6, 15, 12, 0)},
        {"html": "bad \ud800 surrogate"},
    ],
)
def test_unsendable_parts_are_refused(skeleton, changes):
    with pytest.raises(InvalidInputError):
        skeleton.assemble(parts(**changes))


@pytest.mark.parametrize(
    "changes",
    [
        {"list_name": "News\r\nBcc: x@evil.example"},
        {"list_id": "no-dot"},
        {"list_id": "news.shop.example>\r\nBcc: x"},
        {"feedback_id": "12 newsletter"},
        {"feedback_id": "only-one-part"},
        {"return_path_domain": "bounce shop.example"},
        {"sender": Mailbox("news@shop.example\r\nBcc: x@evil.example")},
        {"sender": Mailbox("news@shop.example", "Shop\r\nBcc: x@evil.example")},
    ],
)
def test_unsendable_campaign_settings_are_refused(changes):
    settings_ = {
        "sender": Mailbox("news@shop.example", "Shop"),
        "campaign_id": 1,
        "list_name": "News",
        "list_id": "news.shop.example",
        "feedback_id": "1:newsletter:shop",
        "return_path_domain": "bounce.shop.example",
        "verp_key": VERP_KEY,
        "signer": None,
        **changes,
    }
    with pytest.raises(InvalidInputError):
        MessageSkeleton(**settings_)  # type: ignore[arg-type]


def test_parse_mailbox_refuses_garbage():
    assert parse_mailbox("Shop <news@shop.example>") == Mailbox("news@shop.example", "Shop")
    for bad in ["Shop", "Shop <news@shop.example>\r\nBcc: x@evil.example", ""]:
        with pytest.raises(InvalidInputError):
            parse_mailbox(bad)


def test_one_click_unsubscribe_headers_are_verbatim_and_signed(skeleton, key):
    data = skeleton.assemble(parts()).data
    head = data.split(b"\r\n\r\n")[0]
    assert b"\r\nList-Unsubscribe: <" + UNSUB.encode() + b">,\r\n <" + MAILTO.encode() + b">\r\n" in head
    assert b"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in head
    signature = email.message_from_bytes(data)["DKIM-Signature"]
    h = re.search(r";h=([^;]+);", re.sub(r"\s+", "", signature)).group(1).split(":")
    assert h.count("list-unsubscribe") == 2 and h.count("list-unsubscribe-post") == 2
    assert "return-path" not in h
    assert f"t={int(NOW.timestamp())};" in re.sub(r"\s+", "", signature)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda d: d.replace(b"\r\nTo:", b"\r\nFrom: Boss <boss@shop.example>\r\nTo:"),
        lambda d: d.replace(b"\r\n\r\n", b"\r\nFrom: Boss <boss@shop.example>\r\n\r\n", 1),
        lambda d: d.replace(b"\r\n\r\n", b"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click"
                            b"\r\n\r\n", 1),
        # On top, where a verifier that ignores oversigning would not look.
        lambda d: d.replace(b"\r\nFrom:", b"\r\nList-Unsubscribe: <https://evil.example/>"
                            b"\r\nFrom:", 1),
        lambda d: d.replace(b"Shop now", b"Shop n0w"),
        lambda d: d.replace(b"Subject: Your summer offer", b"Subject: Your summer 0ffer"),
        lambda d: d.replace(b"Subject: Your summer offer", b"Subject: your summer offer"),
    ],
    ids=["from-on-top", "from-appended", "second-unsubscribe-post", "second-unsubscribe-on-top",
         "body-byte", "subject", "subject-case"],
)
def test_tampering_breaks_the_signature(skeleton, key, tamper):
    data = skeleton.assemble(parts()).data
    assert verifies(data, key[1])
    changed = tamper(data)
    assert changed != data
    assert not verifies(changed, key[1])


@pytest.mark.parametrize(
    "relax",
    [
        lambda d: d.replace(b"Subject: Your summer offer", b"subject:  Your \t summer\r\n  offer "),
        lambda d: d.replace(b">,\r\n <mailto:", b">, <mailto:"),
        lambda d: d.replace(b"Shop now", b"Shop \t  now"),
        lambda d: d.replace(b"--\r\n", b"--  \r\n\r\n\r\n"),
    ],
    ids=["subject-whitespace", "unfold", "body-whitespace", "trailing-lines"],
)
def test_whitespace_that_relaxed_canonicalization_ignores_still_verifies(skeleton, key, relax):
    data = skeleton.assemble(parts()).data
    changed = relax(data)
    assert changed != data
    assert verifies(changed, key[1])


def test_body_parts_pick_the_smaller_transfer_encoding(skeleton):
    latin = skeleton.assemble(parts()).data
    assert latin.count(b"Content-Transfer-Encoding: quoted-printable") == 2
    cjk = skeleton.assemble(parts(**CASES["chinese"])).data
    assert cjk.count(b"Content-Transfer-Encoding: base64") == 2


def test_campaign_shares_one_boundary_and_messages_get_unique_ids(skeleton):
    messages = [skeleton.assemble(parts(contact_id=i)) for i in range(50)]
    assert len({m.message_id for m in messages}) == 50
    assert all(re.fullmatch(r"<[0-9a-f]{32}@shop\.example>", m.message_id) for m in messages)
    assert all(f'boundary="{skeleton.boundary}"'.encode() in m.data for m in messages)
    assert make_skeleton(None).boundary != skeleton.boundary
    given_id = skeleton.assemble(parts(message_id="<fixed.1@shop.example>"))
    assert given_id.message_id == "<fixed.1@shop.example>"
    assert parse(given_id.data)["Message-ID"] == "<fixed.1@shop.example>"


def test_marketing_mail_needs_an_unsubscribe_url_and_transactional_mail_may_omit_it(key):
    with pytest.raises(InvalidInputError, match="unsubscribe"):
        make_skeleton(None).assemble(parts(unsubscribe_url=None))
    skeleton = MessageSkeleton(
        sender=parse_mailbox("Shop News <news@shop.example>"),
        campaign_id=0,
        list_name="Shop Newsletter",
        list_id="newsletter.shop.example",
        feedback_id="confirm:shop",
        return_path_domain="bounce.shop.example",
        verp_key=VERP_KEY,
        signer=DkimSigner("shop.example", "s1", key[0]),
        transactional=True,
    )
    data = skeleton.assemble(parts(unsubscribe_url=None, unsubscribe_mailto=None)).data
    assert b"List-Unsubscribe" not in data.split(b"\r\n\r\n")[0]
    assert verifies(data, key[1])
    # The absent fields are signed as absent: adding them breaks the signature.
    added = data.replace(
        b"\r\n\r\n", b"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\r\n", 1
    )
    assert not verifies(added, key[1])


def test_unsigned_skeleton_produces_no_signature():
    data = make_skeleton(None).assemble(parts()).data
    assert b"DKIM-Signature" not in data
    assert data.startswith(b"From: Shop News <news@shop.example>\r\n")


def test_envelope_sender_is_a_verp_address_for_this_send(skeleton):
    message = skeleton.assemble(parts(contact_id=345))
    assert message.envelope_sender.endswith("@bounce.shop.example")
    tag = parse_verp(message.envelope_sender, key=VERP_KEY)
    assert tag is not None and (tag.campaign_id, tag.contact_id) == (12, 345)
    # Return-Path is the receiver's to add, from the envelope.
    assert b"Return-Path" not in message.data


def test_verp_rejects_forgeries():
    address = verp_address(campaign_id=12, contact_id=345, domain="bounce.shop.example", key=b"k")
    local, _, domain = address.partition("@")
    prefix, _, token = local.partition("+")
    campaign, contact, mac = token.split("-")
    assert parse_verp(address, key=b"k") is not None
    assert parse_verp(f"<{address.upper()}>", key=b"k") is not None  # relays may fold case
    assert parse_verp(address, key=b"other") is None
    assert parse_verp(f"{prefix}+{campaign}-15a-{mac}@{domain}", key=b"k") is None
    assert parse_verp(f"{prefix}+{campaign}-{contact}-{'a' * 16}@{domain}", key=b"k") is None
    assert parse_verp(f"postmaster+{token}@{domain}", key=b"k") is None
    assert parse_verp("anna@example.com", key=b"k") is None
    assert parse_verp(f"{prefix}+{token}x@{domain}", key=b"k") is None


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**63), st.integers(0, 2**63))
def test_verp_round_trip(campaign_id, contact_id):
    address = verp_address(
        campaign_id=campaign_id, contact_id=contact_id, domain="bücher.example", key=VERP_KEY
    )
    local = address.partition("@")[0]
    assert address.isascii() and len(local) <= 64 and re.fullmatch(r"[a-z0-9+-]+", local)
    tag = parse_verp(address, key=VERP_KEY)
    assert tag is not None and (tag.campaign_id, tag.contact_id) == (campaign_id, contact_id)


_NO_SURROGATES = st.characters(exclude_categories=("Cs",))
# Mostly subjects that can be sent (TAB included), sometimes any text with control characters.
_SUBJECTS = st.one_of(
    st.text(st.characters(exclude_categories=("Cs", "Cc")) | st.just("\t"), max_size=200),
    st.text(_NO_SURROGATES, max_size=200),
)
_SUBJECT_ALLOWED = re.compile(r"[^\x00-\x08\x0a-\x1f\x7f-\x9f]*")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.text(_NO_SURROGATES, max_size=120),
    subject=_SUBJECTS,
    html=st.text(_NO_SURROGATES, max_size=1500),
    text=st.text(_NO_SURROGATES, max_size=800),
    minutes=st.integers(0, 10**6),
)
def test_any_unicode_gives_a_well_formed_verified_message(
    skeleton, key, name, subject, html, text, minutes
):
    p = parts(
        to=Mailbox("anna@example.com", name), subject=subject, html=html, text=text,
        date=NOW - timedelta(minutes=minutes),
    )
    if not _SUBJECT_ALLOWED.fullmatch(subject):
        with pytest.raises(InvalidInputError):
            skeleton.assemble(p)
        return
    message = skeleton.assemble(p)
    assert_wire_format(message.data)
    assert_round_trip(message.data, p, "anna@example.com")
    assert verifies(message.data, key[1])


def test_boundary_text_inside_a_part_cannot_split_it(skeleton, key):
    fake = f"--{skeleton.boundary}\r\nContent-Type: text/html\r\n\r\n<h1>injected</h1>\r\n"
    p = parts(html=fake + HTML, text=fake + TEXT)
    message = skeleton.assemble(p)
    assert_round_trip(message.data, p, "anna@example.com")
    assert verifies(message.data, key[1])


_PIECE_TEXT = st.lists(
    st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\r"), max_size=90)
    | st.sampled_from(["\n", " ", "\t", "=", ".", "\nFrom ", "From ", "ä€", "--", "x" * 80]),
    max_size=8,
).map("".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    fixed=st.lists(_PIECE_TEXT, min_size=1, max_size=6),
    values=st.lists(st.lists(st.text(_NO_SURROGATES, max_size=40), min_size=6, max_size=6),
                    min_size=2, max_size=3),
)
def test_html_in_pieces_decodes_to_the_same_text_and_verifies(key, fixed, values):
    """Rendering hands assembly the HTML in pieces whose fixed stretches are encoded once per
    campaign: several recipients through one skeleton (so the cache is used), fixed and varying
    pieces interleaved, each message decodes to exactly its HTML and verifies."""
    skeleton = make_skeleton(DkimSigner("shop.example", "s1", key[0]))
    for recipient_values in values:
        pieces = tuple(p for pair in zip(fixed, recipient_values) for p in pair)
        html = "".join(pieces)
        p = parts(html=html, html_pieces=pieces)
        message = skeleton.assemble(p)
        assert_wire_format(message.data)
        assert_round_trip(message.data, p, "anna@example.com")
        assert verifies(message.data, key[1])


def test_html_pieces_reuse_the_fixed_stretches_encoding(key):
    fixed = "<td style=\"padding: 10px\">" + "Sommerkollektion für Sie = 20 % " * 20 + "\n"
    skeleton = make_skeleton(None)
    first = skeleton.assemble(parts(html=fixed + "Anna" + fixed, html_pieces=(fixed, "Anna", fixed)))
    second = skeleton.assemble(parts(html=fixed + "Jürgen" + fixed,
                                     html_pieces=(fixed, "Jürgen", fixed)))
    for message, name in ((first, "Anna"), (second, "Jürgen")):
        html_part = list(parse(message.data).iter_parts())[1]
        assert html_part.get_content() == crlf(fixed + name + fixed)
    # The pieces' encodings are the same bytes in both messages: only the name's line differs.
    body_lines = [set(m.data.partition(b"\r\n\r\n")[2].split(b"\r\n")) for m in (first, second)]
    assert len(body_lines[0] ^ body_lines[1]) == 2


@pytest.mark.parametrize("line", [
    "From " + "x" * 71,  # the "From " escape lengthens a full line by two
    "y" * 75 + "\t",  # binascii encodes the trailing tab as =09 on a 77-character line
    "z" * 76,  # a piece's appended soft line break would make it 77
    "From " + "w" * 69 + "=" + "v" * 10,  # an escape where the extra break would fall
    "a" * 74 + "From " + "b" * 20,  # the extra break must not start a line with "From "
])
def test_encoded_lines_stay_within_76_characters(skeleton, key, line):
    for p in (parts(html=line + "\n" + line, text=line),
              parts(html=line + "\n" + line, html_pieces=(line, "\n" + line), text=line)):
        message = skeleton.assemble(p)
        assert_wire_format(message.data)
        assert_round_trip(message.data, p, "anna@example.com")
        assert verifies(message.data, key[1])
