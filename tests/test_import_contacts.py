"""Contact import (A5), rule by rule with small hand-written CSV files, and its CLI (§10)."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass

import pytest
from sqlalchemy import func, select

from lists.consent import Provenance, unsubscribe
from lists.errors import InvalidInputError, NotFoundError, PatronError
from lists.imports.contacts import import_contacts
from lists.imports.reader import parsed_batches
from lists.mailing_lists import create_list, get_list
from lists.models import (
    ConsentEvent,
    Contact,
    ImportRun,
    Subscription,
    SuppressionReason,
)
from lists.suppressions import suppress

from .conftest import NOW


def _list(ctx, name="news", *, double=True):
    with ctx.session() as s:
        create_list(s, name, NOW, double_opt_in=double)


def _csv(tmp_path, text, name="contacts.csv", *, bom=False, encoding="utf-8"):
    path = tmp_path / name
    data = text.encode(encoding)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    return path


def _import(ctx, path, list_name="news", source="signup form at the shop", **kw):
    return import_contacts(
        ctx.engine(), ctx.key, path, list_name=list_name, consent_source=source,
        now=ctx.now(), **kw,
    )


def _rejects(path):
    with path.open(encoding="utf-8-sig", newline="") as fh:
        sample = fh.readline()
        fh.seek(0)
        if fh.read(1) != "\ufeff":
            fh.seek(0)
        return list(csv.DictReader(fh, delimiter=";" if sample.count(";") > sample.count(",") else ","))


def _contacts(ctx):
    with ctx.session() as s:
        return {c.email: c for c in s.execute(select(Contact)).scalars()}


def _status(ctx, email, list_name="news"):
    with ctx.session() as s:
        lst = get_list(s, list_name)
        row = s.execute(
            select(Subscription.status)
            .join(Contact, Contact.id == Subscription.contact_id)
            .where(Contact.email == email, Subscription.list_id == lst.id)
        ).scalar_one_or_none()
        return row


def _ledger(ctx, email=None):
    with ctx.session() as s:
        q = select(Contact.email, ConsentEvent.action, ConsentEvent.source, ConsentEvent.list_id).join(
            Contact, Contact.id == ConsentEvent.contact_id
        ).order_by(ConsentEvent.id)
        if email:
            q = q.where(Contact.email == email)
        return [tuple(r) for r in s.execute(q)]


def _count(ctx, model):
    with ctx.session() as s:
        return s.execute(select(func.count()).select_from(model)).scalar_one()


# Subscription status and the ledger ----------------------------------------------------------


def test_double_opt_in_list_gets_pending_with_granted_in_ledger(ctx, tmp_path):
    _list(ctx)
    path = _csv(tmp_path, "email,first_name,last_name\nAna@Shop.Example,Ana,Lopes\nben@shop.example,,\n")
    summary = _import(ctx, path)
    assert (summary.rows, summary.imported, summary.updated, summary.unchanged) == (2, 2, 0, 0)
    assert (summary.rejected, summary.rejects_file, summary.pending, summary.confirmed) == (
        0, None, 2, 0,
    )
    contacts = _contacts(ctx)
    # Domain lower-cased, local part kept (A1).
    assert set(contacts) == {"Ana@shop.example", "ben@shop.example"}
    assert (contacts["Ana@shop.example"].first_name, contacts["Ana@shop.example"].last_name) == (
        "Ana", "Lopes",
    )
    assert contacts["ben@shop.example"].first_name is None
    assert _status(ctx, "Ana@shop.example") == "pending"
    ledger = _ledger(ctx, "Ana@shop.example")
    assert [(a, src) for _, a, src, _ in ledger] == [
        ("granted", "signup form at the shop (import of contacts.csv)")
    ]
    assert not (tmp_path / "contacts.rejects.csv").exists()


def test_single_opt_in_list_gets_confirmed_with_both_ledger_rows(ctx, tmp_path):
    _list(ctx, "vip", double=False)
    summary = _import(ctx, _csv(tmp_path, "email\nana@shop.example\n"), "vip")
    assert (summary.imported, summary.pending, summary.confirmed) == (1, 0, 1)
    assert _status(ctx, "ana@shop.example", "vip") == "confirmed"
    assert [a for _, a, _, _ in _ledger(ctx)] == ["granted", "confirmed"]
    with ctx.session() as s:
        sub = s.execute(select(Subscription)).scalar_one()
        assert sub.confirmed_at == NOW


def test_confirmed_attests_consent_on_double_opt_in(ctx, tmp_path):
    _list(ctx)
    summary = _import(ctx, _csv(tmp_path, "email\nana@shop.example\n"), confirmed=True)
    assert (summary.pending, summary.confirmed) == (0, 1)
    assert _status(ctx, "ana@shop.example") == "confirmed"
    assert [(a, src) for _, a, src, _ in _ledger(ctx)] == [
        ("granted", "signup form at the shop (import of contacts.csv)"),
        ("confirmed", "signup form at the shop (import of contacts.csv)"),
    ]


def test_confirmed_upgrades_pending_and_records_only_the_confirmation(ctx, tmp_path):
    _list(ctx)
    path = _csv(tmp_path, "email\nana@shop.example\n")
    _import(ctx, path)
    second = _import(ctx, path, source="double opt-in in the old tool", confirmed=True)
    assert (second.imported, second.updated, second.unchanged, second.confirmed) == (0, 1, 0, 1)
    assert _status(ctx, "ana@shop.example") == "confirmed"
    assert [(a, src) for _, a, src, _ in _ledger(ctx)] == [
        ("granted", "signup form at the shop (import of contacts.csv)"),
        ("confirmed", "double opt-in in the old tool (import of contacts.csv)"),
    ]


def test_pending_stays_pending_and_confirmed_stays_confirmed(ctx, tmp_path):
    _list(ctx)
    path = _csv(tmp_path, "email\npending@shop.example\n")
    _import(ctx, path)
    other = _csv(tmp_path, "email\nconfirmed@shop.example\n", "b.csv")
    _import(ctx, other, confirmed=True)
    both = _csv(tmp_path, "email\npending@shop.example\nconfirmed@shop.example\n", "c.csv")
    summary = _import(ctx, both)
    assert (summary.imported, summary.updated, summary.unchanged) == (0, 0, 2)
    assert _status(ctx, "pending@shop.example") == "pending"
    assert _status(ctx, "confirmed@shop.example") == "confirmed"
    assert len(_ledger(ctx)) == 3


def test_existing_contact_joins_another_list_as_imported(ctx, tmp_path):
    _list(ctx)
    _list(ctx, "vip", double=False)
    path = _csv(tmp_path, "email,first_name\nana@shop.example,Ana\n")
    _import(ctx, path)
    summary = _import(ctx, path, "vip")
    assert (summary.imported, summary.updated, summary.confirmed) == (1, 0, 1)
    assert _status(ctx, "ana@shop.example", "news") == "pending"
    assert _status(ctx, "ana@shop.example", "vip") == "confirmed"
    assert len(_contacts(ctx)) == 1


# Fields, attributes, updates ------------------------------------------------------------------


def test_other_columns_become_attributes_and_empty_cells_are_not_stored(ctx, tmp_path):
    _list(ctx)
    path = _csv(
        tmp_path,
        "email,first_name,locale,timezone,City,tags,loyalty\n"
        "ana@shop.example,Ana,fr-LU,europe/luxembourg,Esch, vip ,\n",
    )
    _import(ctx, path)
    ana = _contacts(ctx)["ana@shop.example"]
    assert ana.attributes == {"City": "Esch", "tags": "vip"}
    assert (ana.locale, ana.timezone) == ("fr-LU", "Europe/Luxembourg")
    assert ana.created_at == NOW


def test_existing_contacts_get_new_values_and_merged_attributes_never_a_new_email(ctx, tmp_path):
    _list(ctx)
    _import(ctx, _csv(tmp_path, "email,first_name,last_name,city,plan\nana@shop.example,Ana,Lopes,Esch,gold\n"))
    summary = _import(
        ctx,
        _csv(tmp_path, "email,first_name,last_name,city,plan,size\nANA@SHOP.EXAMPLE,,Lopes-Reis,,silver,M\n",
             "update.csv"),
    )
    # A different case of the local part is another normalized address (A1): a new contact.
    assert summary.imported == 1
    summary = _import(
        ctx,
        _csv(tmp_path, "email,first_name,last_name,city,plan,size\nana@shop.example,,Lopes-Reis,,silver,M\n",
             "update2.csv"),
    )
    assert (summary.imported, summary.updated, summary.unchanged) == (0, 1, 0)
    ana = _contacts(ctx)["ana@shop.example"]
    assert (ana.email, ana.first_name, ana.last_name) == ("ana@shop.example", "Ana", "Lopes-Reis")
    assert ana.attributes == {"city": "Esch", "plan": "silver", "size": "M"}
    assert len(_ledger(ctx, "ana@shop.example")) == 1


def test_bom_and_semicolons(ctx, tmp_path):
    _list(ctx)
    path = _csv(tmp_path, "email;first_name;city\r\nana@shop.example;Ana;Esch-sur-Alzette\r\n", bom=True)
    summary = _import(ctx, path)
    assert summary.imported == 1
    ana = _contacts(ctx)["ana@shop.example"]
    assert ana.first_name == "Ana"
    assert ana.attributes == {"city": "Esch-sur-Alzette"}


def test_header_names_are_case_insensitive_for_known_columns(ctx, tmp_path):
    _list(ctx)
    _import(ctx, _csv(tmp_path, " Email ,First_Name\nana@shop.example,Ana\n"))
    assert _contacts(ctx)["ana@shop.example"].first_name == "Ana"


# Rejects ------------------------------------------------------------------------------------


def test_every_reject_reason_with_its_physical_line_number(ctx, tmp_path):
    _list(ctx)
    text = (
        "email,first_name,timezone,note\n"               # line 1
        'ana@shop.example,"Ana\nMaria",,"two\nlines"\n'  # lines 2-4
        "not-an-address,X,,\n"                           # line 5
        "postmaster@shop.example,,,\n"                   # line 6
        "someone@mailinator.com,,,\n"                    # line 7
        "ANA@shop.example,,,\n"                          # line 8 (same address, other case)
        "\n"                                             # line 9: blank, not a row
        "ben@shop.example,,Mars/Olympus,\n"              # line 10
        "cy@shop.example,,,,extra\n"                     # line 11
        "dee@shop.example,Dee,,\n"                       # line 12
    )
    path = _csv(tmp_path, text)
    summary = _import(ctx, path)
    assert summary.rows == 8
    assert (summary.imported, summary.rejected) == (2, 6)
    rejects = _rejects(path.with_name("contacts.rejects.csv"))
    assert summary.rejects_file == path.with_name("contacts.rejects.csv").absolute()
    got = [(r["reject_line"], r["reject_reason"].split(":")[0], r["email"]) for r in rejects]
    assert got == [
        ("5", "invalid address", "not-an-address"),
        ("6", "role address", "postmaster@shop.example"),
        ("7", "disposable domain", "someone@mailinator.com"),
        ("8", "duplicate in file", "ANA@shop.example"),
        ("10", "invalid time zone", "ben@shop.example"),
        ("11", "too many fields", "cy@shop.example"),
    ]
    assert summary.rejected_by_reason == {
        "invalid address": 1, "role address": 1, "disposable domain": 1,
        "duplicate in file": 1, "invalid time zone": 1, "too many fields": 1,
    }
    assert rejects[0]["reject_reason"].startswith("invalid address: ")
    assert "@" in rejects[0]["reject_reason"]  # the validator's reason says what is wrong
    assert set(_contacts(ctx)) == {"ana@shop.example", "dee@shop.example"}
    assert _contacts(ctx)["ana@shop.example"].first_name == "Ana\nMaria"


def test_the_rejects_file_keeps_the_original_fields_and_can_be_imported_again(ctx, tmp_path):
    _list(ctx)
    path = _csv(tmp_path, "email;first_name;city\ninfo@shop.example;Info;Esch\nana@;Ana;Wiltz\n", bom=True)
    summary = _import(ctx, path)
    rejects_path = summary.rejects_file
    assert rejects_path is not None
    raw = rejects_path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # same encoding flavour and delimiter as the input
    rows = _rejects(rejects_path)
    assert [(r["email"], r["first_name"], r["city"]) for r in rows] == [
        ("info@shop.example", "Info", "Esch"), ("ana@", "Ana", "Wiltz"),
    ]
    fixed = rejects_path.read_text(encoding="utf-8-sig").replace("ana@;", "ana@shop.example;")
    fixed_path = _csv(tmp_path, fixed, "fixed.csv")
    again = _import(ctx, fixed_path)
    assert (again.imported, again.rejected) == (1, 1)
    # The annotation columns of a rejects file are not attributes.
    assert _contacts(ctx)["ana@shop.example"].attributes == {"city": "Wiltz"}


def test_hygiene_flags_are_stored_when_not_excluded(ctx, tmp_path):
    _list(ctx)
    path = _csv(tmp_path, "email\ninfo@shop.example\nsomeone@mailinator.com\n")
    summary = _import(ctx, path, exclude_role=False, exclude_disposable=False)
    assert (summary.imported, summary.rejected) == (2, 0)
    contacts = _contacts(ctx)
    assert (contacts["info@shop.example"].is_role, contacts["info@shop.example"].is_disposable) == (
        True, False,
    )
    assert contacts["someone@mailinator.com"].is_disposable is True


def test_suppressed_addresses_are_rejected_in_any_case(ctx, tmp_path):
    _list(ctx)
    with ctx.session() as s:
        suppress(s, ctx.key, "gone@shop.example", SuppressionReason.HARD_BOUNCE, NOW)
    path = _csv(tmp_path, "email\nGONE@shop.example\nok@shop.example\n")
    summary = _import(ctx, path, confirmed=True)
    assert (summary.imported, summary.rejected) == (1, 1)
    assert summary.rejected_by_reason == {"suppressed": 1}
    assert set(_contacts(ctx)) == {"ok@shop.example"}


def test_an_import_never_resubscribes_an_unsubscribed_contact(ctx, tmp_path):
    _list(ctx)
    path = _csv(tmp_path, "email,first_name\nana@shop.example,Ana\n")
    _import(ctx, path)
    with ctx.session() as s:
        ana = s.execute(select(Contact)).scalar_one()
        unsubscribe(s, ctx.key, ana, Provenance(source="one-click"), NOW,
                    mailing_list=get_list(s, "news"))
    ledger_before = _ledger(ctx)
    changed = _csv(tmp_path, "email,first_name\nana@shop.example,Anna\n", "again.csv")
    summary = _import(ctx, changed, confirmed=True)
    assert (summary.imported, summary.updated, summary.rejected) == (0, 0, 1)
    assert summary.rejected_by_reason == {"unsubscribed": 1}
    assert _status(ctx, "ana@shop.example") == "unsubscribed"
    assert _contacts(ctx)["ana@shop.example"].first_name == "Ana"  # rejected rows store nothing
    assert _ledger(ctx) == ledger_before


def test_unreadable_rows_are_rejected_not_fatal(ctx, tmp_path):
    _list(ctx)
    path = tmp_path / "mixed.csv"
    path.write_bytes(
        b"email,first_name\nana@shop.example,Ana\nben@shop.example,J\xe9r\xf4me\n"
        b"cy@shop.example,C\x00y\ndee@shop.example,Dee\n"
    )
    summary = _import(ctx, path)
    assert (summary.imported, summary.rejected) == (2, 2)
    reasons = [(r["reject_line"], r["reject_reason"]) for r in _rejects(summary.rejects_file)]
    assert reasons == [
        ("3", "unreadable row: not valid UTF-8 (save the file as UTF-8)"),
        ("4", "unreadable row: contains a NUL character"),
    ]


def test_too_long_and_malformed_values_are_rejected(ctx, tmp_path):
    _list(ctx)
    path = _csv(
        tmp_path,
        f"email,first_name,locale\na@shop.example,{'x' * 201},\nb@shop.example,,not a locale\n"
        "c@shop.example,Cy,pt_BR\n",
    )
    summary = _import(ctx, path)
    assert summary.rejected_by_reason == {"first name too long": 1, "invalid locale": 1}
    assert _contacts(ctx)["c@shop.example"].locale == "pt_BR"


def test_no_rejects_leaves_no_file_and_removes_a_stale_one(ctx, tmp_path):
    _list(ctx)
    path = _csv(tmp_path, "email\nbad\n")
    first = _import(ctx, path)
    assert first.rejects_file is not None and first.rejects_file.exists()
    path.write_text("email\ngood@shop.example\n")
    second = _import(ctx, path)
    assert second.rejects_file is None
    assert not first.rejects_file.exists()


def test_explicit_rejects_path(ctx, tmp_path):
    _list(ctx)
    target = tmp_path / "out" / "refused.csv"
    target.parent.mkdir()
    summary = _import(ctx, _csv(tmp_path, "email\nbad\n"), rejects_path=target)
    assert summary.rejects_file == target
    assert _rejects(target)[0]["email"] == "bad"
    with pytest.raises(InvalidInputError, match="cannot be the input"):
        _import(ctx, tmp_path / "contacts.csv", rejects_path=tmp_path / "contacts.csv")
    with pytest.raises(NotFoundError, match="no such directory"):
        _import(ctx, tmp_path / "contacts.csv", rejects_path=tmp_path / "nowhere" / "r.csv")


# Idempotence, crash safety, the run record ----------------------------------------------------


def test_importing_the_same_file_twice_changes_nothing(ctx, tmp_path):
    _list(ctx)
    path = _csv(
        tmp_path,
        "email,first_name,city\nana@shop.example,Ana,Esch\nbad\nben@shop.example,Ben,\n"
        "ana@shop.example,Again,\n",
    )
    first = _import(ctx, path, confirmed=True)
    rejects_once = first.rejects_file.read_bytes()
    ledger = _ledger(ctx)
    with ctx.session() as s:
        updated = {c.email: c.updated_at for c in s.execute(select(Contact)).scalars()}
    second = _import(ctx, path, confirmed=True)
    assert (second.imported, second.updated, second.unchanged, second.rejected) == (0, 0, 2, 2)
    assert (second.pending, second.confirmed) == (0, 0)
    assert _ledger(ctx) == ledger
    assert second.rejects_file.read_bytes() == rejects_once
    with ctx.session() as s:
        assert {c.email: c.updated_at for c in s.execute(select(Contact)).scalars()} == updated


def test_a_killed_import_keeps_its_committed_batches_and_a_rerun_completes_it(ctx, tmp_path):
    _list(ctx)
    lines = "".join(f"user{i}@shop.example,U{i}\n" for i in range(10))
    path = _csv(tmp_path, "email,first_name\n" + lines + "bad\n")

    class Killed(Exception):
        pass

    calls = []

    def die_after_two_batches(done, total):
        calls.append(done)
        if len(calls) == 2:
            raise Killed

    with pytest.raises(Killed):
        _import(ctx, path, batch_size=3, progress=die_after_two_batches)
    kept = len(_contacts(ctx))
    assert 3 <= kept < 10  # whole batches only, never a half one
    summary = _import(ctx, path, batch_size=3)
    assert (summary.imported, summary.unchanged, summary.rejected) == (10 - kept, kept, 1)
    assert len(_contacts(ctx)) == 10
    assert _count(ctx, ConsentEvent) == 10
    with ctx.session() as s:
        runs = s.execute(select(ImportRun).order_by(ImportRun.id)).scalars().all()
        assert [r.finished_at is not None for r in runs] == [False, True]


def test_each_run_is_recorded(ctx, tmp_path):
    _list(ctx)
    path = _csv(tmp_path, "email\nana@shop.example\nbad\n")
    summary = _import(ctx, path)
    with ctx.session() as s:
        run = s.execute(select(ImportRun)).scalar_one()
        assert run.kind == "contacts"
        assert run.file_name == str(path.resolve())
        assert run.file_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        assert run.list_id == get_list(s, "news").id
        assert run.consent_source == "signup form at the shop"
        assert (run.rows, run.imported, run.rejected) == (2, 1, 1)
        assert run.rejects_file == str(summary.rejects_file)
        assert run.started_at == NOW and run.finished_at >= NOW


# Refusals before any row is read --------------------------------------------------------------


def test_unknown_list_is_refused_before_reading_the_file(ctx, tmp_path):
    with pytest.raises(NotFoundError, match="no list named 'nope'"):
        _import(ctx, tmp_path / "does-not-exist.csv", "nope")


def test_missing_email_column_names_the_file_and_the_columns_found(ctx, tmp_path):
    _list(ctx)
    path = _csv(tmp_path, "mail,name\na@b.example,A\n")
    with pytest.raises(InvalidInputError) as err:
        _import(ctx, path)
    assert str(err.value) == "contacts.csv: no 'email' column (the header has 'mail', 'name')"
    assert _count(ctx, ImportRun) == 0


@pytest.mark.parametrize("source", ["", "   "])
def test_a_consent_source_is_required(ctx, tmp_path, source):
    _list(ctx)
    with pytest.raises(InvalidInputError, match="consent source is required"):
        _import(ctx, _csv(tmp_path, "email\na@shop.example\n"), source=source)


def test_empty_file_and_missing_file(ctx, tmp_path):
    _list(ctx)
    with pytest.raises(InvalidInputError, match="empty"):
        _import(ctx, _csv(tmp_path, ""))
    with pytest.raises(NotFoundError, match="no such file"):
        _import(ctx, tmp_path / "nothing.csv")


# CLI ------------------------------------------------------------------------------------------


def _one_line_error(r, code=1):
    assert r.code == code
    assert r.out == ""
    assert r.err.startswith("patron: error: ")
    assert r.err.count("\n") == 1
    return r.err


def test_cli_import_json(cli, tmp_path):
    assert cli("lists", "create", "news").code == 0
    path = _csv(tmp_path, "email,city\nana@shop.example,Esch\ninfo@shop.example,\n")
    r = cli("contacts", "import", str(path), "--list", "news", "--consent-source", "form", "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert {k: doc[k] for k in ("imported", "updated", "rejected", "pending", "confirmed")} == {
        "imported": 1, "updated": 0, "rejected": 1, "pending": 1, "confirmed": 0,
    }
    assert doc["rejects_file"] == str(tmp_path.absolute() / "contacts.rejects.csv")
    assert doc["rejected_by_reason"] == {"role address": 1}
    assert r.err == ""


def test_cli_import_confirmed_and_rejects_option(cli, tmp_path):
    assert cli("lists", "create", "news").code == 0
    path = _csv(tmp_path, "email\nana@shop.example\nbad\n")
    out = tmp_path / "refused.csv"
    r = cli("contacts", "import", str(path), "--list", "news", "--consent-source", "old tool",
            "--confirmed", "--rejects", str(out), "--json")
    doc = json.loads(r.out)
    assert (doc["confirmed"], doc["rejects_file"]) == (1, str(out))


def test_cli_human_summary_explains_rejects(cli, tmp_path):
    assert cli("lists", "create", "news").code == 0
    path = _csv(tmp_path, "email\nana@shop.example\nbad\nana@shop.example\ninfo@shop.example\n")
    r = cli("contacts", "import", str(path), "--list", "news", "--consent-source", "form")
    assert r.code == 0, r.err
    assert "4 rows: 1 imported, 0 updated, 0 unchanged, 3 rejected" in r.out
    assert "1 now pending" in r.out
    for reason in ("invalid address", "duplicate in file", "role address"):
        assert f"1  {reason}" in r.out
    assert f"rejects written to {tmp_path.absolute() / 'contacts.rejects.csv'}" in r.out


def test_cli_hygiene_settings_decide_role_and_disposable(cli, tmp_path, monkeypatch):
    assert cli("lists", "create", "news").code == 0
    monkeypatch.setenv("PATRON_HYGIENE__EXCLUDE_ROLE_ADDRESSES", "false")
    path = _csv(tmp_path, "email\ninfo@shop.example\nx@mailinator.com\n")
    doc = json.loads(cli("contacts", "import", str(path), "--list", "news",
                         "--consent-source", "form", "--json").out)
    assert (doc["imported"], doc["rejected_by_reason"]) == (1, {"disposable domain": 1})


def test_cli_one_line_errors(cli, tmp_path):
    assert cli("lists", "create", "news").code == 0
    good = _csv(tmp_path, "email\nana@shop.example\n")
    no_email = _csv(tmp_path, "name\nAna\n", "names.csv")
    base = ("contacts", "import")
    err = _one_line_error(cli(*base, str(tmp_path / "missing.csv"), "--list", "news",
                              "--consent-source", "form"))
    assert "no such file" in err
    err = _one_line_error(cli(*base, str(no_email), "--list", "news", "--consent-source", "form"))
    assert "names.csv: no 'email' column (the header has 'name')" in err
    err = _one_line_error(cli(*base, str(good), "--list", "nope", "--consent-source", "form"))
    assert "no list named 'nope'" in err
    err = _one_line_error(cli(*base, str(good), "--list", "news", "--consent-source", " "))
    assert "consent source is required" in err
    err = _one_line_error(cli(*base, str(good), "--list", "news"), code=2)
    assert "--consent-source" in err


# The helper reader process (large files) ------------------------------------------------------


def test_a_helper_reader_process_gives_the_same_result_as_reading_in_process(ctx, tmp_path):
    _list(ctx)
    _list(ctx, "other")
    lines = "".join(
        f"user{i}@shop.example,U{i},{'Mars/Base' if i % 7 == 0 else ''},c{i % 3}\n" for i in range(40)
    )
    path = _csv(tmp_path, "email,first_name,timezone,city\n" + lines + "bad\ninfo@shop.example,,,\n")
    inline = _import(ctx, path, batch_size=7, parallel=False)
    inline_rejects = inline.rejects_file.read_bytes()
    inline_state = (_contacts(ctx).keys(), _ledger(ctx))
    with ctx.session() as s:
        s.execute(ConsentEvent.__table__.delete())
        s.execute(Subscription.__table__.delete())
        s.execute(Contact.__table__.delete())
    helper = _import(ctx, path, batch_size=7, parallel=True)
    assert helper.rejects_file.read_bytes() == inline_rejects
    assert (helper.imported, helper.rejected, helper.rejected_by_reason) == (
        inline.imported, inline.rejected, inline.rejected_by_reason,
    )
    assert _contacts(ctx).keys() == inline_state[0]
    assert [(e, a, s) for e, a, s, _ in _ledger(ctx)] == [(e, a, s) for e, a, s, _ in inline_state[1]]


@dataclass(frozen=True)
class FailingSpec:
    """A parser spec whose parser cannot be built (in the helper process)."""

    exit_code: int | None = None

    @property
    def row_type(self):
        return tuple

    def build(self):
        if self.exit_code is not None:
            os._exit(self.exit_code)
        raise InvalidInputError("no parser today")


def test_errors_of_the_helper_reader_process_reach_the_caller(tmp_path):
    path = _csv(tmp_path, "email\na@shop.example\n")
    with pytest.raises(InvalidInputError, match="no parser today"):
        list(parsed_batches(path, FailingSpec(), 10, parallel=True))
    with pytest.raises(PatronError, match="reader process stopped: exit code 3"):
        list(parsed_batches(path, FailingSpec(exit_code=3), 10, parallel=True))


def test_the_ledger_source_fits_its_column(ctx, tmp_path):
    _list(ctx)
    long_name = _csv(tmp_path, "email\na@shop.example\n", "x" * 200 + ".csv")
    _import(ctx, long_name, source="s" * 400)
    (source,) = {src for _, _, src, _ in _ledger(ctx)}
    assert len(source) == 500 and source.startswith("s" * 400 + " (import of xxx") and source.endswith("…)")
    with pytest.raises(InvalidInputError, match="too long"):
        _import(ctx, long_name, source="s" * 486)
