"""The rendering pipeline: compile once per campaign, render per recipient. Links are rewritten
to signed click URLs with UTM parameters, the open pixel is added, the plain-text part is
readable, recipient data is never code, and every error names the template and the line."""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markupsafe import escape

import campaigns.rendering.compile as compile_module
from campaigns.rendering import (
    CampaignInfo,
    Discount,
    MessageKind,
    Recipient,
    Shop,
    TemplateError,
    TemplateSource,
    check_renders,
    compile_campaign,
    html_to_text,
    load_shipped_template,
    load_template_file,
    render_message,
)
from campaigns.rendering.render import one_line
from campaigns.tokens import make_click_token, verify_click_token, verify_open_token
from lists.errors import InvalidInputError, NotFoundError
from lists.models import Contact

KEY = b"rendering-test-key"
BASE = "https://t.example"
SHOP = Shop("Ma Boutique", "1 Rue de la Gare, L-4001 Esch-sur-Alzette", "https://shop.example/")
CAMPAIGN = CampaignInfo(12, "Été 2026: Soldes!", "Hello {{ contact.first_name_or('you') }}")
ADA = Recipient(101, "ada@example.com", "Ada", "Lovelace", {"city": "Esch", "vip": True})
CLICK_RE = re.compile(re.escape(BASE) + r"/c/([A-Za-z0-9_-]+)")


def page(body: str, head: str = "") -> str:
    """A compliant MJML page around ``body`` (the shipped footer brings the legal parts)."""
    return (
        '<mjml lang="en">\n'
        f"  <mj-head>{head}</mj-head>\n"
        "  <mj-body>\n"
        "    <mj-section><mj-column>\n"
        f"{body}\n"
        "    </mj-column></mj-section>\n"
        '    <mj-include path="partials/footer.mjml" />\n'
        "  </mj-body>\n"
        "</mjml>\n"
    )


def write(tmp_path: Path, text: str, name: str = "mine.mjml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def compile_file(path: Path, campaign: CampaignInfo = CAMPAIGN, **kwargs):
    return compile_campaign(
        load_template_file(path),
        campaign=campaign,
        shop=SHOP,
        tracking_base_url=BASE + "/",
        **kwargs,
    )


def line_of(source: str, needle: str) -> int:
    return source[: source.index(needle)].count("\n") + 1


LINKS_BODY = """\
<mj-text>
  <a href="https://shop.example/a">First link</a>
  <a href="https://shop.example/b?ref=x&amp;utm_source=mine#frag" data-name="Hero CTA">Go</a>
  <a href="https://shop.example/img"><img src="https://shop.example/i.png" alt="Summer hat"></a>
  <a href="https://shop.example/a">First link</a>
  <a href="https://shop.example/e"> </a>
  <a href="{{ content.link }}">Campaign level</a>
  <a href="mailto:help@shop.example">Mail us</a>
  <a href="tel:+352123456">Call us</a>
  <a href="#top">Top</a>
  <a href="/relative">Relative</a>
  <a href="https://shop.example/private" data-track="off">Untracked</a>
</mj-text>
<mj-button href="https://shop.example/c" name="buy">Buy now</mj-button>"""


@pytest.fixture
def links_campaign(tmp_path):
    return compile_file(
        write(tmp_path, page(LINKS_BODY)), content={"link": "https://shop.example/from-content"}
    )


def test_link_table_names_and_utm(links_campaign):
    table = {link.name: link for link in links_campaign.links}
    assert list(table) == [
        "first-link", "hero-cta", "summer-hat", "first-link-2", "link-4", "campaign-level", "buy",
    ]
    assert [link.index for link in links_campaign.links] == list(range(len(table)))
    slug = "ete-2026-soldes"
    assert table["first-link"].url == (
        "https://shop.example/a?utm_source=patron&utm_medium=email"
        f"&utm_campaign={slug}&utm_content=first-link"
    )
    # The marketer's query and UTM values stay; the fragment stays last.
    hero = table["hero-cta"].url
    assert hero.startswith("https://shop.example/b?ref=x&utm_source=mine&utm_medium=email")
    assert hero.endswith("&utm_content=hero-cta#frag")
    assert dict(parse_qsl(urlsplit(hero).query))["utm_source"] == "mine"
    assert table["summer-hat"].original_url == "https://shop.example/img"
    assert table["first-link-2"].original_url == "https://shop.example/a"
    assert table["link-4"].original_url == "https://shop.example/e"
    assert table["campaign-level"].original_url == "https://shop.example/from-content"
    assert table["buy"].url.endswith("utm_content=buy")


def test_every_trackable_link_is_rewritten_and_its_token_leads_back(links_campaign):
    message = render_message(links_campaign, ADA, KEY)
    hrefs = re.findall(r'<a [^>]*href="([^"]*)"', message.html)
    tracked = [h for h in hrefs if h.startswith(f"{BASE}/c/")]
    assert len(tracked) == len(links_campaign.links)
    for href in tracked:
        click = verify_click_token(KEY, href.removeprefix(f"{BASE}/c/"))
        assert click is not None
        assert (click.campaign_id, click.contact_id) == (12, 101)
    indexes = [verify_click_token(KEY, t).link_index for t in CLICK_RE.findall(message.html)]
    assert indexes == list(range(len(links_campaign.links)))
    untouched = {h for h in hrefs if not h.startswith(f"{BASE}/c/")}
    assert untouched == {
        "mailto:help@shop.example", "tel:+352123456", "#top", "/relative",
        "https://shop.example/private", message.unsubscribe_url,
    }
    assert "shop.example/a" not in message.html and "utm_" not in message.html
    assert "data-name" not in message.html and "data-track" not in message.html
    # Another recipient gets other tokens for the same links.
    other = render_message(links_campaign, Recipient(202, "b@example.com"), KEY)
    assert set(CLICK_RE.findall(other.html)).isdisjoint(CLICK_RE.findall(message.html))


def test_forged_or_altered_click_tokens_lead_nowhere(links_campaign):
    message = render_message(links_campaign, ADA, KEY)
    token = CLICK_RE.findall(message.html)[0]
    altered = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    assert verify_click_token(KEY, altered) is None
    assert verify_click_token(b"another key", token) is None
    # A genuine token for an index the campaign does not have redirects nowhere.
    beyond = verify_click_token(KEY, make_click_token(KEY, 12, 101, 50))
    assert beyond is not None and links_campaign.link(beyond.link_index) is None
    assert links_campaign.link(-1) is None


def test_open_pixel_ends_the_body(links_campaign):
    message = render_message(links_campaign, ADA, KEY)
    pixel = re.search(
        r'<img src="' + re.escape(BASE) + r'/o/([A-Za-z0-9_-]+)" width="1" height="1" alt="" '
        r'style="display:block;border:0"></body>',
        message.html,
    )
    assert pixel is not None
    opened = verify_open_token(KEY, pixel.group(1))
    assert opened is not None and (opened.campaign_id, opened.contact_id) == (12, 101)
    assert "/o/" not in message.text


def test_recipient_dependent_href_is_refused_with_its_line(tmp_path):
    body = (
        '<mj-text>\n<a href="https://shop.example/apply/{{ discount.code }}">Apply</a>\n</mj-text>'
    )
    source = page(body)
    with pytest.raises(TemplateError) as raised:
        compile_file(write(tmp_path, source))
    assert str(raised.value) == (
        f'template "mine" line {line_of(source, "/apply/")}: link href {{{{ discount.code }}}} '
        "differs per recipient, so it cannot be click-tracked; use a campaign-level URL or add "
        'data-track="off"'
    )
    assert isinstance(raised.value, InvalidInputError)


def test_recipient_dependent_href_may_go_untracked(tmp_path):
    body = (
        '<mj-text><a data-track="off" href="https://shop.example/apply/{{ discount.code }}">'
        "Apply</a></mj-text>"
    )
    compiled = compile_file(write(tmp_path, page(body)))
    recipient = Recipient(7, "d@example.com", discount=Discount("CODE-1"))
    message = render_message(compiled, recipient, KEY)
    assert 'href="https://shop.example/apply/CODE-1"' in message.html
    assert "Apply (https://shop.example/apply/CODE-1)" in message.text


def test_plain_text_is_readable():
    source = load_shipped_template("newsletter")
    compiled = compile_campaign(
        source,
        campaign=CampaignInfo(3, "News", "{{ content.headline }}"),
        shop=SHOP,
        tracking_base_url=BASE,
        content={
            "headline": "Spring is here",
            "preheader": "Fresh arrivals inside",
            "body_html": (
                "<p>Three things:</p><ul><li>Hats</li><li>Shoes &amp; bags</li></ul>"
                "<h2>Opening hours</h2><ol><li>Mon</li><li>Tue</li></ol>"
                '<p>Read <a href="https://shop.example/blog">our blog</a>.</p>'
            ),
            "cta_url": "https://shop.example/spring",
            "cta_text": "See the collection",
        },
    )
    text = render_message(compiled, ADA, KEY).text
    cta = next(link for link in compiled.links if link.name == "cta")
    blog = next(link for link in compiled.links if link.name == "our-blog")
    assert "# Spring is here\n" in text
    assert "- Hats\n- Shoes & bags\n" in text and "## Opening hours" in text
    assert "1. Mon\n2. Tue" in text
    assert re.search(r"See the collection \(" + re.escape(BASE) + r"/c/[\w-]+\)", text)
    tokens = re.findall(re.escape(BASE) + r"/c/([\w-]+)", text)
    indexes = {verify_click_token(KEY, t).link_index for t in tokens}
    assert {cta.index, blog.index} <= indexes
    assert SHOP.postal_address in text
    assert "Fresh arrivals inside" not in text  # the hidden preheader
    assert not re.search(r"<[a-zA-Z/!]", text)
    for junk in ("{", "}", "color:", "@media", "mso", "font-family", "&amp;", "&nbsp;"):
        assert junk not in text, junk
    assert "\n\n\n" not in text and text.endswith("\n")


def test_html_to_text_on_its_own():
    text = html_to_text(
        "<html><head><style>p{color:red}</style><title>T</title></head><body>"
        '<div style="display:none">preheader</div><h1>Title</h1><p>One&nbsp;two<br>three</p>'
        '<!--[if mso]><p>outlook only</p><![endif]--><script>alert(1)</script>'
        '<p><a href="https://x.example/">https://x.example/</a> '
        '<a href="mailto:a@x.example">a@x.example</a> <a href="https://x.example/i">'
        '<img src="i.png" alt="Logo"></a></p><blockquote>quoted</blockquote></body></html>'
    )
    assert text == (
        "# Title\n\nOne two\nthree\n\n"
        "https://x.example/ a@x.example Logo (https://x.example/i)\n\n> quoted\n"
    )


ERROR_BODY = """\
<mj-text>
  Hello {{ contact.first_name }},
  your nickname is {{ contact.nickname }}.
</mj-text>"""


def test_undefined_attribute_error_names_template_line_and_variable(tmp_path):
    source = page(ERROR_BODY)
    compiled = compile_file(write(tmp_path, source))
    with pytest.raises(TemplateError) as raised:
        render_message(compiled, ADA, KEY)
    line = line_of(source, "nickname")
    assert str(raised.value) == (
        f"template \"mine\" line {line}: 'contact' has no attribute 'nickname'"
    )
    assert raised.value.line == line


def test_missing_attribute_and_check_renders_names_the_recipient(tmp_path):
    source = page("<mj-text>\nFrom {{ attr.city }}\n</mj-text>")
    compiled = compile_file(write(tmp_path, source))
    stranger = Recipient(55, "s@bücher.example", "S", attributes={"country": "LU"})
    with pytest.raises(TemplateError) as raised:
        check_renders(compiled, [ADA, stranger])
    assert str(raised.value) == (
        f"template \"mine\" line {line_of(source, 'attr.city')}: 'attr' has no attribute "
        "'city' (recipient #55 <s@bücher.example>)"
    )
    check_renders(compiled, [ADA])


def test_syntax_error_names_its_line(tmp_path):
    source = page("<mj-text>\nok\n{{ contact.first_name | }}\n</mj-text>")
    with pytest.raises(TemplateError) as raised:
        compile_file(write(tmp_path, source))
    assert str(raised.value).startswith(
        f'template "mine" line {line_of(source, "| }}")}: '
    )


def test_mjml_error_names_its_line(tmp_path):
    # MRML reports byte offsets into the text it was given; Jinja tags (here one spanning
    # lines) and non-ASCII text before the error must not shift the line reported.
    source = (
        "<mjml>\n<mj-body>\n<mj-section>\n<mj-column>\n"
        "<mj-text>Grüße, {{ contact.first_name_or(\n  'liebe Kundin') }} — ça va?</mj-text>\n"
        "</mj-column>\n</mj-column>\n</mj-section>\n</mj-body>\n</mjml>\n"
    )
    with pytest.raises(TemplateError) as raised:
        compile_file(write(tmp_path, source), kind=MessageKind.TRANSACTIONAL)
    assert str(raised.value) == (
        f'template "mine" line {line_of(source, "</mj-body>")}: MJML: unexpected token'
    )


def test_error_in_a_partial_names_the_partial(tmp_path):
    write(tmp_path, "<mj-text>\n  Your code: {{ discount.code }}\n</mj-text>\n", "parts/offer.mjml")
    compiled = compile_file(write(tmp_path, page('<mj-include path="parts/offer.mjml" />')))
    with pytest.raises(TemplateError) as raised:
        render_message(compiled, ADA, KEY)
    assert str(raised.value) == (
        "template \"mine\" (parts/offer.mjml) line 2: 'discount' is undefined"
    )


def test_subject_errors_and_one_line_subjects(tmp_path):
    path = write(tmp_path, page("<mj-text>x</mj-text>"))
    bad = CampaignInfo(1, "c", "Hi {{ contact.nick }}")
    with pytest.raises(TemplateError) as raised:
        render_message(compile_file(path, bad), ADA, KEY)
    assert str(raised.value) == (
        "template \"mine\" (subject) line 1: 'contact' has no attribute 'nick'"
    )
    with pytest.raises(TemplateError, match=r"\(subject\) line 1: "):
        compile_file(path, CampaignInfo(1, "c", "Hi {{ contact. }}"))
    multi = CampaignInfo(1, "c", "Hi\r\n{{ attr.note }}\t!")
    note = Recipient(3, "n@example.com", attributes={"note": "a\r\nBcc: x@y\u2028z\x00"})
    assert render_message(compile_file(path, multi), note, KEY).subject == "Hi a Bcc: x@y z !"
    empty = CampaignInfo(1, "c", "{{ contact.first_name }}")
    with pytest.raises(TemplateError, match="the subject is empty"):
        render_message(compile_file(path, empty), Recipient(4, "e@example.com"), KEY)


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=60))
def test_attribute_values_are_data_never_code(value):
    compiled = _attribute_campaign()
    recipient = Recipient(9, "x@example.com", value, None, {"note": value})
    message = render_message(compiled, recipient, KEY)
    assert re.search(r"<p[^>]*>\[" + re.escape(str(escape(value))) + r"\]</p>", message.html)
    assert message.subject == one_line(f"About {value} now") or not one_line(value)
    flat = " ".join(value.split()) if ("\n" in value or "\r" in value) else value
    assert f"[{flat}]" in message.text or not value.strip()


@functools.cache
def _attribute_campaign():
    source = TemplateSource("attrs", page("<mj-text><p>[{{ attr.note }}]</p></mj-text>"), Path("."))
    return compile_campaign(
        source,
        campaign=CampaignInfo(5, "a", "About {{ contact.first_name }} now"),
        shop=SHOP,
        tracking_base_url=BASE,
    )


def test_content_values_are_data_too(tmp_path):
    body = "<mj-text><p>{{ content.headline }}{{ contact.first_name }}</p></mj-text>"
    path = write(tmp_path, page(body))
    compiled = compile_file(path, content={"headline": "Sale {{ 6*7 }} <b>now</b> {"})
    message = render_message(compiled, ADA, KEY)
    assert re.search(r"<p[^>]*>Sale \{\{ 6\*7 }} &lt;b&gt;now&lt;/b&gt; \{Ada</p>", message.html)
    assert "Sale {{ 6*7 }} <b>now</b> {Ada" in message.text


def test_own_mjml_file_with_own_and_shipped_partials(tmp_path):
    write(
        tmp_path,
        '<mj-section><mj-column><mj-text>Hello from {{ attr.city }}</mj-text>'
        "</mj-column></mj-section>\n",
        "bits/hello.mjml",
    )
    text = """<mjml lang="en">
  <mj-head><mj-include path="partials/head.mjml" /></mj-head>
  <mj-body>
    <mj-include path="partials/header.mjml" />
    <mj-include path="bits/hello.mjml" />
    <mj-raw>{% if attr.vip is defined and attr.vip %}</mj-raw>
    <mj-section><mj-column><mj-text>VIP corner</mj-text></mj-column></mj-section>
    <mj-raw>{% else %}</mj-raw>
    <mj-section><mj-column><mj-text>Join the club</mj-text></mj-column></mj-section>
    <mj-raw>{% endif %}</mj-raw>
    <mj-include path="partials/footer.mjml" />
  </mj-body>
</mjml>
"""
    compiled = compile_file(write(tmp_path, text, "spring.mjml"))
    assert compiled.template_name == "spring" and compiled.kind is MessageKind.MARKETING
    vip = render_message(compiled, ADA, KEY)
    assert "Hello from Esch" in vip.text and "VIP corner" in vip.text
    assert "Join the club" not in vip.text and "Join the club" not in vip.html
    wiltz = Recipient(3, "p@example.com", attributes={"city": "Wiltz"})
    plain = render_message(compiled, wiltz, KEY)
    assert "Join the club" in plain.text and "VIP corner" not in plain.html
    # Included sections keep the body width (MRML's own include loses it).
    assert vip.html.count("max-width:600px") >= 4
    assert {"header-shop"} <= {link.name for link in compiled.links}


def test_template_files_that_cannot_be_used(tmp_path):
    with pytest.raises(NotFoundError):
        load_template_file(tmp_path / "absent.mjml")
    escaping = write(tmp_path, page('<mj-include path="../../etc/passwd" />'))
    with pytest.raises(TemplateError, match="must stay inside"):
        compile_file(escaping)
    loop = write(tmp_path, '<mj-include path="loop.mjml" />\n', "loop.mjml")
    with pytest.raises(TemplateError, match="includes itself"):
        compile_file(loop)
    with pytest.raises(NotFoundError, match="no template named 'nope'"):
        load_shipped_template("nope")


def test_block_tag_that_mjml_would_move_is_refused(tmp_path):
    title = "<mj-title>{% if contact.first_name %}Hi{% endif %}</mj-title>"
    source = page("<mj-text>x</mj-text>", head=title)
    with pytest.raises(TemplateError, match=r"line 2: MJML dropped or repeated the Jinja tag"):
        compile_file(write(tmp_path, source))


def test_marketing_mail_needs_unsubscribe_link_and_postal_address(tmp_path):
    bare = (
        "<mjml><mj-body><mj-section><mj-column><mj-text>{}</mj-text></mj-column></mj-section>"
        "</mj-body></mjml>"
    )
    no_link = write(tmp_path, bare.format("{{ shop.postal_address }}"), "a.mjml")
    with pytest.raises(TemplateError, match="needs an unsubscribe link"):
        compile_file(no_link)
    link = '<a href="{{ unsubscribe_url }}">Unsubscribe</a>'
    no_address = write(tmp_path, bare.format(link), "b.mjml")
    with pytest.raises(TemplateError, match="postal address does not appear"):
        compile_file(no_address)
    # Transactional mail is neither tracked nor required to carry an unsubscribe link.
    compiled = compile_file(no_link, kind=MessageKind.TRANSACTIONAL)
    message = render_message(compiled, ADA, KEY)
    assert compiled.links == () and message.unsubscribe_url is None and "/o/" not in message.html


def test_mjml_is_compiled_once_per_campaign(monkeypatch):
    calls = []
    real = compile_module.mjml2html

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(compile_module, "mjml2html", counting)
    compiled = compile_campaign(
        load_shipped_template("welcome"), campaign=CAMPAIGN, shop=SHOP, tracking_base_url=BASE
    )
    assert calls == [1]
    subjects = set()
    for n in range(50):
        recipient = Recipient(n + 1, f"r{n}@example.com", f"Name{n}")
        message = render_message(compiled, recipient, KEY)
        subjects.add(message.subject)
        assert f"Hi Name{n}," in message.text
    assert calls == [1] and len(subjects) == 50


def test_recipient_from_a_stored_contact():
    contact = Contact(
        id=5, email="c@example.com", first_name="Cleo", last_name=None,
        attributes={"city": "Esch"}, created_at=datetime.now(UTC), updated_at=datetime.now(UTC),
    )
    recipient = Recipient.from_contact(contact, discount=Discount("X"))
    assert recipient == Recipient(5, "c@example.com", "Cleo", None, {"city": "Esch"}, Discount("X"))
    with pytest.raises(ValueError):
        Recipient.from_contact(Contact(email="n@example.com"))


CHAINS_BODY = """\
<mj-text>
  {% if content.promo %}<a href="https://shop.example/promo">Promo</a>
  {% else %}<a href="https://shop.example/plain">Plain</a>{% endif %}
  <p>{% if content.flag %}Flagged{% elif attr.vip is defined %}VIP{% else %}Other{% endif %}</p>
  <p>{% if content.promo %}{{ contact.no_such_thing }}{% endif %}</p>
  <p>{% for tag in attr.tags | default([]) %}[{{ tag }}]{% else %}no tags{% endfor %}</p>
</mj-text>"""


def test_campaign_level_conditions_are_decided_once(tmp_path):
    path = write(tmp_path, page(CHAINS_BODY))
    compiled = compile_file(path, content={"promo": "", "flag": ""})
    # The branch that can never show contributes no link and no error.
    assert [link.name for link in compiled.links] == ["plain"]
    vip = render_message(compiled, ADA, KEY)
    assert "Plain (" in vip.text and "Promo" not in vip.html
    assert "VIP" in vip.text and "Other" not in vip.text and "no tags" in vip.text
    tagged = Recipient(8, "t@example.com", attributes={"tags": ["a", "<b>"]})
    other = render_message(compiled, tagged, KEY)
    assert "Other" in other.text and "[a][<b>]" in other.text and "[a][&lt;b&gt;]" in other.html

    flagged = compile_file(path, content={"promo": "yes", "flag": "yes"})
    assert [link.name for link in flagged.links] == ["promo"]
    line = line_of(page(CHAINS_BODY), "no_such_thing")
    with pytest.raises(TemplateError) as raised:
        render_message(flagged, ADA, KEY)
    assert str(raised.value) == (
        f"template \"mine\" line {line}: 'contact' has no attribute 'no_such_thing'"
    )


def test_loops_over_table_rows_survive_the_html_parser(tmp_path):
    # Bare text between <tr>s would be moved out of the table by the CSS inliner's parser.
    body = (
        "<mj-text><table>{% for item in attr['items'] %}<tr><td>{{ item }}</td></tr>"
        "{% endfor %}</table></mj-text>"
    )
    compiled = compile_file(write(tmp_path, page(body)))
    shopper = Recipient(4, "s@example.com", attributes={"items": ["Hat", "Shoes"]})
    message = render_message(compiled, shopper, KEY)
    # (The parser adds the implied <tbody>, which the loop then repeats: valid HTML.)
    rows = r"<tr><td[^>]*>Hat</td></tr>(?:<tbody>)?<tr><td[^>]*>Shoes</td></tr>"
    assert re.search(rows, message.html)
    assert "Hat\nShoes" in message.text
