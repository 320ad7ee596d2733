"""The built-in SMTP sink as a real server on 127.0.0.1: what a client sends lands in the Maildir
byte for byte (behind the envelope lines), it advertises what it supports, refuses what is too
big or cannot be stored, and `patron sink` runs in its own process until SIGTERM or Ctrl-C."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import mailbox
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiosmtplib
import pytest

from lists.errors import InvalidInputError, PatronError
from patron.sink import SmtpSink, check_host, trace_headers

ROOT = Path(__file__).resolve().parent.parent

# Lines that start with a dot (stuffed on the wire, unstuffed by the server), 8-bit UTF-8, a
# lone "." line inside the body, and a bare line of spaces: all must come back unchanged.
MESSAGE = (
    "From: Épicerie Ana <news@shop.example>\r\n"
    "To: Zoë <zoë@exämple.test>\r\n"
    "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
    "Message-ID: <1.2.3@shop.example>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    ".a line that starts with a dot\r\n"
    "..two dots\r\n"
    ".\r\n"
    "Grüße aus Esch — ça va ?\r\n"
    "   \r\n"
    "end\r\n"
).encode()


def run(coro):
    return asyncio.run(coro)


async def _send(port: int, sender: str, recipients: list[str], data: bytes, **kw):
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=10)
    async with client:
        extensions = dict(client.esmtp_extensions)
        errors, reply = await client.sendmail(sender, recipients, data, **kw)
    return extensions, errors, reply


def test_a_message_lands_in_the_maildir_byte_for_byte(tmp_path):
    seen = []

    async def scenario():
        async with SmtpSink(tmp_path / "mail", port=0, on_message=seen.append) as sink:
            assert sink.host == "127.0.0.1" and sink.port > 0
            result = await _send(sink.port, "bounces@shop.example",
                                 ["zoë@exämple.test", "ana@shop.example"], MESSAGE,
                                 mail_options=["SMTPUTF8", "BODY=8BITMIME"])
            return sink, result

    sink, (extensions, errors, reply) = run(scenario())
    assert errors == {} and reply.startswith("2.0.0")
    # what it really supports, and nothing it does not
    assert {"size", "8bitmime", "smtputf8"} <= set(extensions)
    assert int(extensions["size"]) == 2**25
    assert not {"starttls", "auth"} & set(extensions)
    # one file per recipient in new/, each the envelope lines and then the message unchanged
    files = sorted((tmp_path / "mail" / "new").iterdir())
    assert len(files) == 2 and sink.received == 1 and sink.stored == 2
    stored = {f.read_bytes() for f in files}
    assert stored == {trace_headers("bounces@shop.example", rcpt) + MESSAGE
                      for rcpt in ("zoë@exämple.test", "ana@shop.example")}
    assert list((tmp_path / "mail" / "tmp").iterdir()) == []
    assert oct(files[0].stat().st_mode & 0o777) == "0o600"
    # a mail client (here Python's mailbox) reads it as a Maildir
    box = mailbox.Maildir(tmp_path / "mail", create=False, factory=lambda fh: (
        email.message_from_binary_file(fh, policy=email.policy.default)))
    assert sorted(m["Delivered-To"] for m in box) == ["ana@shop.example", "zoë@exämple.test"]
    assert {m["Return-Path"] for m in box} == {"<bounces@shop.example>"}
    assert [s.recipients for s in seen] == [("zoë@exämple.test", "ana@shop.example")]


def test_many_messages_over_one_connection_each_stored_once(tmp_path):
    async def scenario():
        async with SmtpSink(tmp_path / "mail", port=0) as sink:
            client = aiosmtplib.SMTP(hostname="127.0.0.1", port=sink.port, timeout=10)
            async with client:
                for i in range(25):
                    body = MESSAGE.replace(b"<1.2.3@", f"<{i}@".encode())
                    await client.sendmail("b@shop.example", [f"r{i}@example.test"], body)
            return sink

    sink = run(scenario())
    files = list((tmp_path / "mail" / "new").iterdir())
    assert sink.received == sink.stored == len(files) == 25
    ids = {re.search(rb"Message-ID: <(\d+)@", f.read_bytes()).group(1) for f in files}
    assert ids == {str(i).encode() for i in range(25)}


def test_too_big_a_message_is_refused_and_not_stored(tmp_path):
    async def scenario():
        async with SmtpSink(tmp_path / "mail", port=0, size_limit=1000) as sink:
            with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
                await _send(sink.port, "b@shop.example", ["r@example.test"],
                            MESSAGE + b"x" * 2000 + b"\r\n")
            extensions, _, _ = await _send(sink.port, "b@shop.example", ["r@example.test"],
                                           MESSAGE)
            return sink, refused.value.code, extensions

    sink, code, extensions = run(scenario())
    assert code == 552 and extensions["size"] == "1000"
    assert sink.received == 1 and len(list((tmp_path / "mail" / "new").iterdir())) == 1


def test_a_message_it_cannot_store_is_not_acknowledged(tmp_path):
    async def scenario():
        async with SmtpSink(tmp_path / "mail", port=0) as sink:
            new = tmp_path / "mail" / "new"
            new.rmdir()
            new.write_text("not a directory")  # every delivery now fails
            with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
                await _send(sink.port, "b@shop.example", ["r@example.test"], MESSAGE)
            return sink, refused.value

    sink, refused = run(scenario())
    assert refused.code == 451  # temporary: the sender keeps the message and retries
    assert sink.received == sink.stored == 0
    assert list((tmp_path / "mail" / "tmp").iterdir()) == []


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_hosts_are_accepted(host):
    check_host(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "::", "2001:db8::1"])
def test_other_hosts_need_the_explicit_flag(host):
    with pytest.raises(InvalidInputError, match="--allow-remote"):
        check_host(host)
    check_host(host, allow_remote=True)


def test_a_busy_port_is_a_one_line_error(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        async def scenario():
            async with SmtpSink(tmp_path / "mail", port=port):
                pass

        with pytest.raises(PatronError, match=rf"cannot listen on 127.0.0.1:{port}: address "
                                              "already in use"):
            run(scenario())


# -- `patron sink` -------------------------------------------------------------------------


def test_cli_refuses_a_non_loopback_host_without_the_flag(capsys, tmp_path):
    from patron.cli.app import main

    code = main(["sink", "--host", "192.0.2.10", "--maildir", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("patron: error: Invalid value for '--host': 192.0.2.10 is not a "
                          "loopback address")
    assert "--allow-remote" in err
    assert not (tmp_path / "m").exists()
    assert main(["sink", "--port", "70000"]) == 2


def _start(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "patron", "sink", "--port", "0", "--maildir",
         str(tmp_path / "mail"), *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _port(line: str) -> int:
    found = re.match(r"sink listening on 127\.0\.0\.1:(\d+), storing in (.+) \(Ctrl-C stops\)$",
                     line.strip())
    assert found, line
    return int(found.group(1))


def test_cli_runs_until_sigterm_and_says_what_it_received(tmp_path):
    proc = _start(tmp_path)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        port = _port(first)
        assert f"storing in {tmp_path / 'mail'}" in first
        run(_send(port, "b@shop.example", ["ana@example.test"], MESSAGE))
        run(_send(port, "b@shop.example", ["bob@example.test"], MESSAGE))
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    lines = out.strip().splitlines()
    assert re.search(r"b@shop\.example -> ana@example\.test \(\d[\d,]* bytes\)", lines[0])
    assert lines[-1] == f"sink stopped: 2 messages received, 2 files stored in {tmp_path / 'mail'}"
    assert len(list((tmp_path / "mail" / "new").iterdir())) == 2


def test_cli_json_stops_on_ctrl_c_with_one_document(tmp_path):
    proc = _start(tmp_path, "--json")
    try:
        assert proc.stderr is not None
        port = _port(proc.stderr.readline())
        run(_send(port, "b@shop.example", ["ana@example.test", "bob@example.test"], MESSAGE))
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    doc = json.loads(out)
    assert doc == {"host": "127.0.0.1", "port": port, "maildir": str(tmp_path / "mail"),
                   "received": 1, "stored": 2}
