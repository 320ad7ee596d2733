"""Campaigns from the command line: create from a shipped template or an own MJML file, list,
show, preview as HTML, text and signed eml, and a test send to a real SMTP server."""

from __future__ import annotations

import email
import email.policy
import json
from email.header import decode_header, make_header

import dkim
import pytest

from campaigns.message.dkim import generate_dkim_key
from tests.servers.smtp import Faults, FaultySmtpServer


@pytest.fixture(scope="module")
def dkim_key():
    return generate_dkim_key(2048)


@pytest.fixture
def shop(cli, tmp_path, monkeypatch, dkim_key):
    pem, txt = dkim_key
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(pem)
    monkeypatch.setenv("PATRON_DKIM__DOMAIN", "shop.example")
    monkeypatch.setenv("PATRON_DKIM__SELECTOR", "s1")
    monkeypatch.setenv("PATRON_DKIM__PRIVATE_KEY_FILE", str(key_file))
    monkeypatch.setenv("PATRON_SENDER__FROM", "Épicerie Ana <news@shop.example>")
    monkeypatch.setenv("PATRON_TRACKING__BASE_URL", "https://t.shop.example")
    assert cli("lists", "create", "news", "--single-opt-in").code == 0
    people = tmp_path / "people.csv"
    people.write_text(
        "email,first_name,last_name,city\n"
        "ana@shop.example,Ana,Sousa,Esch\n"
        "zoe@shop.example,Zoë,Müller,<script>alert(1)</script>\n"
    )
    r = cli("contacts", "import", str(people), "--list", "news", "--consent-source", "test")
    assert r.code == 0, r.err
    return txt


def _dns(txt):
    def dnsfunc(name, timeout=5):
        assert name == b"s1._domainkey.shop.example."
        return txt.encode()
    return dnsfunc


def _create(cli, *extra):
    r = cli("campaigns", "create", "--name", "Spring news", "--kind", "newsletter",
            "--template", "newsletter", "--subject", "Hello {{ contact.first_name_or('friend') }}",
            "--list", "news", "--content", "headline=Spring is here",
            "--content", "cta_url=https://shop.example/spring", "--json", *extra)
    assert r.code == 0, r.err
    return json.loads(r.out)["id"]


def test_create_ls_show(cli, shop):
    cid = _create(cli)
    listed = json.loads(cli("campaigns", "ls", "--json").out)
    assert [(c["id"], c["status"], c["kind"]) for c in listed] == [(cid, "draft", "newsletter")]
    shown = json.loads(cli("campaigns", "show", str(cid), "--json").out)
    assert shown["lists"] == ["news"] and shown["slug"] == "spring-news"


def test_preview_eml_is_signed_and_personal(cli, shop):
    cid = _create(cli)
    r = cli("campaigns", "preview", str(cid), "--contact", "zoe@shop.example", "--format", "eml")
    assert r.code == 0, r.err
    raw = r.out.encode("utf-8", "surrogateescape")
    assert dkim.verify(raw, dnsfunc=_dns(shop))
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert str(make_header(decode_header(msg["Subject"]))) == "Hello Zoë"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["List-Unsubscribe"].startswith("<https://t.shop.example/u/")
    html = msg.get_body(("html",)).get_content()
    assert "Spring is here" in html
    assert "<script>alert(1)</script>" not in html
    assert "https://t.shop.example/c/" in html and "https://t.shop.example/o/" in html
    assert "https://shop.example/spring" not in html  # every link is tracked


def test_preview_text_and_html(cli, shop):
    cid = _create(cli)
    text = cli("campaigns", "preview", str(cid), "--format", "text")
    assert text.code == 0 and "Spring is here" in text.out and "<" not in text.out.split("http")[0]
    html = cli("campaigns", "preview", str(cid))
    assert html.code == 0 and html.out.lstrip().lower().startswith("<!doctype html")


def test_template_errors_are_one_line(cli, shop, tmp_path):
    bad = tmp_path / "mine.mjml"
    bad.write_text("<mjml><mj-body><mj-section><mj-column><mj-text>{{ contact.first_name "
                   "</mj-text></mj-column></mj-section></mj-body></mjml>")
    r = cli("campaigns", "create", "--name", "Bad", "--kind", "newsletter", "--template",
            str(bad), "--subject", "x", "--list", "news")
    assert r.code == 1 and len(r.err.splitlines()) == 1 and "mine" in r.err
    r = cli("campaigns", "create", "--name", "Bad", "--kind", "newsletter", "--template",
            "nope", "--subject", "x", "--list", "news")
    assert r.code == 1 and "no template named 'nope'" in r.err
    r = cli("campaigns", "create", "--name", "Bad", "--kind", "newsletter", "--template",
            "newsletter", "--subject", "x", "--list", "missing")
    assert r.code == 1 and "no list named 'missing'" in r.err
    r = cli("campaigns", "preview", "999")
    assert r.code == 1 and r.err == "patron: error: no campaign 999 (see `patron campaigns ls`)\n"


def test_test_send_reaches_a_real_smtp_server(cli, shop, monkeypatch):
    cid = _create(cli)
    with FaultySmtpServer(Faults()) as server:
        monkeypatch.setenv("PATRON_SMTP__PORT", str(server.port))
        r = cli("campaigns", "test-send", str(cid), "--to", "me@inbox.example",
                "--contact", "ana@shop.example", "--json")
        assert r.code == 0, r.err
        assert json.loads(r.out)["reply"].startswith("250")
        received = list(server.ledger)
    assert [m.recipient for m in received] == ["me@inbox.example"]
    assert dkim.verify(received[0].data, dnsfunc=_dns(shop))
    msg = email.message_from_bytes(received[0].data, policy=email.policy.default)
    assert msg["To"] == "Ana Sousa <me@inbox.example>"


def test_test_send_refused_is_one_line(cli, shop, monkeypatch):
    cid = _create(cli)
    with FaultySmtpServer(Faults(user_unknown={"gone@inbox.example"})) as server:
        monkeypatch.setenv("PATRON_SMTP__PORT", str(server.port))
        r = cli("campaigns", "test-send", str(cid), "--to", "gone@inbox.example")
    assert r.code == 1 and len(r.err.splitlines()) == 1 and "550" in r.err
    monkeypatch.setenv("PATRON_SMTP__PORT", "9")
    r = cli("campaigns", "test-send", str(cid), "--to", "me@inbox.example")
    assert r.code == 1 and r.err.startswith("patron: error: cannot send through 127.0.0.1:9")
