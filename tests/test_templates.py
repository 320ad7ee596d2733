"""The shipped templates: each renders for awkward recipients without injection, looks right
in real clients (responsive, dark-mode tolerant, alt texts, preheader), carries the legal
footer, and does its job (NPS scores, discount code, a clean confirmation mail)."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest

from campaigns.rendering import (
    SHIPPED,
    CampaignInfo,
    Discount,
    MessageKind,
    Recipient,
    Shop,
    TemplateError,
    check_renders,
    compile_campaign,
    load_shipped_template,
    render_message,
    shipped_template_names,
)
from campaigns.tokens import verify_click_token, verify_unsubscribe_token

KEY = b"template-test-key"
BASE = "https://t.example"
SHOP = Shop(
    name="Ma Boutique",
    postal_address="Ma Boutique SARL\n1 Rue de la Gare\nL-4001 Esch-sur-Alzette",
    url="https://shop.example/",
    logo_url="https://shop.example/logo.png",
)
EXPIRES = datetime(2026, 6, 30, 21, 59, tzinfo=UTC)
CONTENT = {
    "newsletter": {
        "headline": "Spring is here",
        "body": "Our spring collection has arrived.\n\nCome and see it.",
        "image_url": "https://shop.example/hero.jpg",
        "image_alt": "Spring flowers on a shop counter",
        "cta_url": "https://shop.example/spring",
    },
    "discount": {"offer": "15% off your next order"},
    "welcome": {},
    "winback": {},
    "nps": {},
    "confirmation": {},
}
CONFIRM_URL = "https://t.example/confirm/AbC-123_x"
MARKETING = [n for n in shipped_template_names() if SHIPPED[n].kind is MessageKind.MARKETING]

AWKWARD = {
    "empty names": Recipient(1, "anon@example.com", None, ""),
    "long names": Recipient(2, "long@example.com", "Maximiliane" * 18, "Schmidt-" * 25),
    "non-ascii": Recipient(3, "zoe@example.com", "Zoë Łucja 王秀英", "محمد Ōtsuka"),
    "idn unicode": Recipient(4, "jürgen@bücher.example", "Jürgen", "Bücher"),
    "idn punycode": Recipient(5, "user@xn--bcher-kva.example", "User", None),
    "script": Recipient(6, "eve@example.com", "<script>alert(1)</script>", '"><img src=x>'),
    "crlf": Recipient(7, "crlf@example.com", "Eve\r\nBcc: victim@example.com", "\nX"),
    "jinja": Recipient(8, "tpl@example.com", "{{ 7*7 }}", "{% raw %}"),
}


def with_extras(recipient: Recipient) -> Recipient:
    return Recipient(
        recipient.contact_id,
        recipient.email,
        recipient.first_name,
        recipient.last_name,
        {"city": "<b>Esch</b>\r\n{{ 7*7 }}"},
        Discount("SPRING-7QX2", EXPIRES),
        CONFIRM_URL,
    )


def compiled(name: str, **overrides):
    source = load_shipped_template(name)
    campaign = CampaignInfo(31, f"Spring {name}", source.info.default_subject)
    return compile_campaign(
        source,
        campaign=campaign,
        shop=overrides.get("shop", SHOP),
        tracking_base_url=BASE,
        content=overrides.get("content", CONTENT[name]),
    )


@pytest.fixture(scope="module")
def campaigns():
    return {name: compiled(name) for name in shipped_template_names()}


def test_shipped_templates_are_the_ones_the_spec_names():
    assert set(shipped_template_names()) >= {
        "newsletter", "discount", "welcome", "winback", "nps", "confirmation",
    }
    assert SHIPPED["confirmation"].kind is MessageKind.TRANSACTIONAL


@pytest.mark.parametrize("case", sorted(AWKWARD))
@pytest.mark.parametrize("name", sorted(CONTENT))
def test_every_template_renders_safely_for_awkward_recipients(campaigns, name, case):
    recipient = with_extras(AWKWARD[case])
    message = render_message(campaigns[name], recipient, KEY)

    assert message.subject and "\r" not in message.subject and "\n" not in message.subject
    assert message.subject == message.subject.strip()
    body = message.html
    assert "<script>" not in body and "<img src=x>" not in body
    if case == "script":
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    if case == "jinja":
        # Shown as typed, never evaluated.
        assert "{{ 7*7 }}" in body and ">49<" not in body and "Hi 49" not in message.text
    if case == "crlf" and name == "winback":
        assert message.subject == "We miss you, Eve Bcc: victim@example.com"
    if name != "confirmation" and case.startswith("idn"):
        assert html.escape(recipient.email) in body
    first = (recipient.first_name or "").strip()
    greeting = " ".join(first.split()) if first else "there"
    assert f"Hi {greeting}," in message.text
    assert "<" not in message.text.replace(first, "").replace(recipient.last_name or "", "")


def test_empty_first_name_falls_back_to_a_greeting(campaigns):
    message = render_message(campaigns["newsletter"], AWKWARD["empty names"], KEY)
    assert "Hi there," in message.text and "Hi ," not in message.html


class _Visible(HTMLParser):
    """Each visible text node with its effective colour and background."""

    VOID = frozenset({"img", "br", "meta", "link", "hr", "input", "col", "area", "wbr", "source"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, str | None, str | None, bool]] = [("root", None, None, False)]
        self.texts: list[tuple[str, str | None, str | None]] = []
        self.images: list[dict[str, str | None]] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "img":
            self.images.append(attributes)
        if tag in self.VOID:
            return
        style = {
            k.strip().lower(): v.strip().lower()
            for k, _, v in (d.partition(":") for d in (attributes.get("style") or "").split(";"))
        }
        _, color, background, hidden = self.stack[-1]
        color = _hex(style.get("color")) or color
        background = (
            _hex(style.get("background-color"))
            or _hex(style.get("background"))
            or _hex(attributes.get("bgcolor"))
            or background
        )
        hidden = hidden or tag in ("head", "style", "title") or style.get("display") == "none"
        self.stack.append((tag, color, background, hidden))

    def handle_endtag(self, tag):
        if tag not in self.VOID and len(self.stack) > 1:
            self.stack.pop()

    def handle_data(self, data):
        _, color, background, hidden = self.stack[-1]
        if data.strip() and not hidden:
            self.texts.append((data.strip(), color, background))


def _hex(value: str | None) -> str | None:
    match = re.fullmatch(r"#([0-9a-f]{3}|[0-9a-f]{6})", (value or "").strip().lower())
    if match is None:
        return None
    digits = match.group(1)
    return "#" + ("".join(c * 2 for c in digits) if len(digits) == 3 else digits)


def _luminance(color: str) -> float:
    channels = [int(color[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def _contrast(a: str, b: str) -> float:
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


@pytest.mark.parametrize("name", sorted(CONTENT))
def test_every_text_has_its_own_colour_and_background_with_contrast(campaigns, name):
    # A text colour without its own background vanishes when a client darkens the page;
    # with both set, clients that invert colours invert the pair.
    message = render_message(campaigns[name], with_extras(AWKWARD["non-ascii"]), KEY)
    parser = _Visible()
    parser.feed(message.html)
    assert parser.texts
    for text, color, background in parser.texts:
        assert color is not None and background is not None, text
        assert _contrast(color, background) >= 4.5, (text, color, background)


@pytest.mark.parametrize("name", sorted(CONTENT))
def test_dark_mode_responsive_alt_texts_and_preheader(campaigns, name):
    message = render_message(campaigns[name], with_extras(AWKWARD["non-ascii"]), KEY)
    body = message.html
    assert '<meta name="color-scheme" content="light dark">' in body
    assert "prefers-color-scheme: dark" in body
    # Columns stack on narrow screens: the column classes only widen above 480 px.
    assert "@media only screen and (min-width:480px)" in body
    assert "mj-column-per-" in body
    assert 'lang="en"' in body and "fonts.googleapis" not in body
    parser = _Visible()
    parser.feed(body)
    for image in parser.images:
        if "/o/" in (image.get("src") or ""):
            assert image.get("alt") == ""  # the open pixel is decorative
        else:
            assert (image.get("alt") or "").strip(), image
    assert any("logo.png" in (i.get("src") or "") for i in parser.images)
    preheader = re.search(r'<body[^>]*><div style="display:none;[^"]*">([^<]*)</div>', body)
    assert preheader is not None and preheader.group(1).strip()
    assert preheader.group(1).strip() not in message.text.split("\n")[0]


def test_footer_columns_stack_and_carry_the_legal_parts(campaigns):
    for name in MARKETING:
        message = render_message(campaigns[name], with_extras(AWKWARD["non-ascii"]), KEY)
        assert "mj-column-per-60" in message.html and "mj-column-per-40" in message.html
        for line in SHOP.postal_address.splitlines():
            assert line in message.text and html.escape(line) in message.html
        assert "Unsubscribe (" in message.text and "Manage preferences (" in message.text
        assert message.unsubscribe_url is not None
        token = message.unsubscribe_url.removeprefix(f"{BASE}/u/")
        unsubscribe = verify_unsubscribe_token(KEY, token)
        assert unsubscribe is not None
        assert (unsubscribe.contact_id, unsubscribe.campaign_id) == (3, 31)
        assert f'href="{message.unsubscribe_url}"' in message.html
        assert "You are receiving this email because" in message.text


def _clicks(message) -> list[int]:
    indexes = []
    for token in re.findall(re.escape(BASE) + r"/c/([A-Za-z0-9_-]+)", message.html):
        click = verify_click_token(KEY, token)
        assert click is not None
        indexes.append(click.link_index)
    return indexes


def test_nps_has_eleven_distinct_tracked_score_links(campaigns):
    compiled_nps = campaigns["nps"]
    message = render_message(compiled_nps, with_extras(AWKWARD["non-ascii"]), KEY)
    by_name = {link.name: link for link in compiled_nps.links}
    scores = [by_name[f"score-{n}"] for n in range(11)]
    assert len({link.index for link in scores}) == 11
    assert len({link.url for link in scores}) == 11
    for n, link in enumerate(scores):
        assert link.url.startswith(f"https://shop.example/?score={n}&utm_source=patron")
        assert f"utm_content=score-{n}" in link.url
    clicked = _clicks(message)
    assert {link.index for link in scores} <= set(clicked)
    for n in range(11):
        assert re.search(rf"^{n} \({re.escape(BASE)}/c/[\w-]+\)$", message.text, re.M)


def test_nps_scores_link_to_the_survey_page_when_given():
    survey = compiled("nps", content={"survey_url": "https://shop.example/thanks?lang=fr"})
    urls = [link.url for link in survey.links if link.name.startswith("score-")]
    assert urls[7].startswith("https://shop.example/thanks?lang=fr&score=7&utm_source=patron")


def test_discount_shows_the_recipients_code_and_expiry(campaigns):
    message = render_message(campaigns["discount"], with_extras(AWKWARD["non-ascii"]), KEY)
    assert "SPRING-7QX2" in message.html and "SPRING-7QX2" in message.text
    assert "Valid until 30 June 2026." in message.text
    assert message.subject == "Your code for 15% off your next order"
    other = Recipient(9, "b@example.com", "B", None, discount=Discount("OTHER-CODE", None))
    message = render_message(campaigns["discount"], other, KEY)
    assert "OTHER-CODE" in message.text and "SPRING-7QX2" not in message.html
    assert "Valid until" not in message.text


def test_discount_without_a_code_blocks_scheduling(campaigns):
    with pytest.raises(TemplateError) as raised:
        check_renders(campaigns["discount"], [Recipient(12, "ada@example.com", "Ada")])
    message = str(raised.value)
    assert message.startswith('template "discount" line ')
    assert "'discount' is undefined" in message and "recipient #12 <ada@example.com>" in message


def test_winback_shows_a_code_only_to_those_who_have_one(campaigns):
    plain = render_message(campaigns["winback"], Recipient(1, "a@example.com", "A"), KEY)
    assert "this code is yours" not in plain.text
    gifted = render_message(campaigns["winback"], with_extras(AWKWARD["non-ascii"]), KEY)
    assert "this code is yours: SPRING-7QX2 (valid until 30 June 2026)" in gifted.text


def test_confirmation_is_untracked_and_has_nothing_but_the_confirm_link(campaigns):
    confirmation = campaigns["confirmation"]
    assert confirmation.links == ()
    message = render_message(confirmation, with_extras(AWKWARD["non-ascii"]), KEY)
    hrefs = re.findall(r'<a [^>]*href="([^"]*)"', message.html)
    assert hrefs and set(hrefs) == {CONFIRM_URL}
    assert "/c/" not in message.html and "/o/" not in message.html and "utm_" not in message.html
    assert 'width="1" height="1"' not in message.html
    assert message.unsubscribe_url is None and "nsubscribe" not in message.text
    assert f"Yes, subscribe me ({CONFIRM_URL})" in message.text
    assert SHOP.postal_address.splitlines()[1] in message.text
    assert "shop.example" not in message.html.replace(SHOP.logo_url, "")


def test_confirmation_needs_its_confirm_url(campaigns):
    with pytest.raises(TemplateError, match="'confirm_url' is undefined"):
        render_message(campaigns["confirmation"], Recipient(1, "a@example.com"), KEY)


def test_content_fields_are_checked():
    with pytest.raises(TemplateError, match=r"content\.headline is required"):
        compiled("newsletter", content={"body": "x"})
    with pytest.raises(TemplateError, match="unknown content field 'headlin'"):
        compiled("newsletter", content={"headline": "x", "headlin": "y"})


def test_docs_describe_every_template_and_content_field():
    doc = (Path(__file__).resolve().parent.parent / "docs" / "templates.md").read_text()
    for name, info in SHIPPED.items():
        assert f"`{name}`" in doc, name
        for field in info.fields:
            assert f"`{field.name}`" in doc, (name, field.name)
