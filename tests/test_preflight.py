"""A campaign whose template fails for a real recipient is neither started nor scheduled (C3)."""

from __future__ import annotations

import json

TEMPLATE = """<mjml><mj-body><mj-section><mj-column>
<mj-text>Hello {{ contact.first_name }},</mj-text>
<mj-text>Your size: {{ attr.size }}</mj-text>
<mj-text>{{ shop.postal_address }} <a href="{{ unsubscribe_url }}">Unsubscribe</a></mj-text>
</mj-column></mj-section></mj-body></mjml>
"""


def _setup(cli, tmp_path, rows):
    assert cli("lists", "create", "news", "--single-opt-in").code == 0
    people = tmp_path / "people.csv"
    people.write_text("email,first_name,size\n" + rows)
    assert cli("contacts", "import", str(people), "--list", "news",
               "--consent-source", "test").code == 0
    template = tmp_path / "sizes.mjml"
    template.write_text(TEMPLATE)
    r = cli("campaigns", "create", "--name", "Sizes", "--kind", "newsletter", "--template",
            str(template), "--subject", "Hi", "--list", "news", "--json")
    assert r.code == 0, r.err
    return str(json.loads(r.out)["id"])


def test_a_recipient_without_the_variable_blocks_send_and_schedule(cli, tmp_path):
    cid = _setup(cli, tmp_path, "ana@shop.example,Ana,M\nbob@shop.example,Bob,\n")
    r = cli("campaigns", "send", cid)
    assert r.code == 1
    assert len(r.err.splitlines()) == 1
    assert "size" in r.err and "bob@shop.example" in r.err and "line 3" in r.err
    r = cli("campaigns", "schedule", cid, "--at", "2099-01-01T09:00:00+00:00")
    assert r.code == 1 and "bob@shop.example" in r.err
    shown = json.loads(cli("campaigns", "show", cid, "--json").out)
    assert shown["status"] == "draft" and shown["audience_frozen_at"] is None


def test_a_template_that_renders_for_everyone_starts(cli, tmp_path):
    cid = _setup(cli, tmp_path, "ana@shop.example,Ana,M\nbob@shop.example,Bob,L\n")
    r = cli("campaigns", "send", cid, "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["stats"]["queued"] == 2
