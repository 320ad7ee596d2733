"""DKIM signing: our OpenSSL-backed signer against dkimpy, the independent verifier (SPEC D7)."""

from __future__ import annotations

import base64
import re

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from dkim.canonicalization import Relaxed
from hypothesis import given, settings
from hypothesis import strategies as st

from campaigns.message.dkim import (
    SIGNED_FIELDS,
    DkimSigner,
    generate_dkim_key,
    relaxed_body,
    relaxed_header,
)
from lists.errors import ConfigurationError

T = 1781524800  # 2026-06-15 12:00 UTC: in the past, as dkimpy refuses t= in the future

MESSAGE = (
    b"From: Shop <news@shop.example>\r\n"
    b"To: anna@example.com\r\n"
    b"Subject: Summer  sale\r\n"
    b"\tstarts today\r\n"
    b"Date: Mon, 15 Jun 2026 12:00:00 +0000\r\n"
    b"Message-ID: <abc@shop.example>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Received: from somewhere\r\n"
    b"\r\n"
    b"Hello   Anna,  \r\n"
    b"\twelcome.\r\n"
    b"\r\n"
    b"\r\n"
)


@pytest.fixture(scope="module")
def key() -> tuple[bytes, str]:
    return generate_dkim_key()


@pytest.fixture(scope="module")
def signer(key: tuple[bytes, str]) -> DkimSigner:
    return DkimSigner("shop.example", "s2026", key[0])


def dns_for(txt: str):
    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"s2026._domainkey.shop.example."
        return txt.encode("ascii")

    return dnsfunc


def tags(signed: bytes) -> dict[str, str]:
    field = signed.split(b"\r\n\r\n")[0].split(b"\r\nFrom:")[0].decode("ascii")
    value = re.sub(r"\s+", "", field.partition(":")[2])
    return dict(part.split("=", 1) for part in value.split(";") if part)


def test_signed_message_verifies_with_dkimpy(key, signer):
    signed = signer.sign(MESSAGE, timestamp=T)
    assert signed.endswith(MESSAGE)
    assert dkim.verify(signed, dnsfunc=dns_for(key[1]))


def test_signature_tags_follow_the_checklist(signer):
    t = tags(signer.sign(MESSAGE, timestamp=T))
    assert (t["v"], t["a"], t["c"], t["d"], t["s"], t["t"]) == (
        "1", "rsa-sha256", "relaxed/relaxed", "shop.example", "s2026", str(T)
    )
    assert "l" not in t
    names = t["h"].split(":")
    # Present fields once more than they occur, absent ones once; never Received.
    for name in SIGNED_FIELDS:
        assert names.count(name) == 2 - (name.startswith("list-") or name == "feedback-id")
    assert "received" not in names and "return-path" not in names


def test_body_hash_equals_dkimpys(key, signer):
    ours = tags(signer.sign(MESSAGE, timestamp=T))["bh"]
    theirs = dkim.sign(
        MESSAGE, b"s2026", b"shop.example", key[0], canonicalize=(b"relaxed", b"relaxed"),
        include_headers=[b"from"],
    )
    assert ours == re.search(rb"bh=([^;]+);", theirs.replace(b"\r\n ", b"")).group(1).decode()


def test_signature_is_2048_bit_rsa(key, signer):
    assert signer.key_bits == 2048
    signature = base64.b64decode(tags(signer.sign(MESSAGE, timestamp=T))["b"])
    assert len(signature) == 256
    assert key[1].startswith("v=DKIM1; k=rsa; p=")
    assert signer.dns_txt_value == key[1]


@pytest.mark.parametrize(
    "tamper",
    [
        lambda m: m.replace(b"To: anna@", b"From: evil@evil.example\r\nTo: anna@"),
        lambda m: m.replace(b"\r\n\r\nHello", b"\r\nSubject: Second subject\r\n\r\nHello"),
        lambda m: m.replace(b"Hello", b"Hallo"),
        lambda m: m.replace(b"Summer", b"Winter"),
        lambda m: m.replace(b"<abc@", b"<abd@"),
    ],
    ids=["second-from", "second-subject", "body-byte", "subject", "message-id"],
)
def test_tampering_breaks_verification(key, signer, tamper):
    signed = signer.sign(MESSAGE, timestamp=T)
    changed = tamper(signed)
    assert changed != signed
    assert not dkim.verify(changed, dnsfunc=dns_for(key[1]))


@pytest.mark.parametrize(
    "relax",
    [
        lambda m: m.replace(b"Subject: Summer  sale", b"SUBJECT:   Summer \t sale "),
        lambda m: m.replace(b"\r\n\tstarts today", b" starts\r\n     today"),
        lambda m: m.replace(b"Hello   Anna,  \r\n", b"Hello Anna,\r\n"),
        lambda m: m + b"\r\n\r\n",
        lambda m: m.replace(b"Received: from somewhere\r\n", b""),
    ],
    ids=["header-spaces-and-case", "refold", "body-spaces", "trailing-lines", "unsigned-field"],
)
def test_changes_relaxed_canonicalization_allows_still_verify(key, signer, relax):
    signed = signer.sign(MESSAGE, timestamp=T)
    changed = relax(signed)
    assert changed != signed
    assert dkim.verify(changed, dnsfunc=dns_for(key[1]))


def test_wrong_key_does_not_verify(signer):
    _, other_txt = generate_dkim_key(1024)
    assert not dkim.verify(signer.sign(MESSAGE, timestamp=T), dnsfunc=dns_for(other_txt))


def test_unreadable_or_unsuitable_keys_are_configuration_errors():
    with pytest.raises(ConfigurationError, match="cannot be read"):
        DkimSigner("shop.example", "s1", b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END")
    ed = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ConfigurationError, match="RSA"):
        DkimSigner("shop.example", "s1", ed)
    pem, _ = generate_dkim_key(1024)
    with pytest.raises(ConfigurationError, match="selector"):
        DkimSigner("shop.example", "bad selector", pem)


def test_idn_signing_domain_is_written_as_a_label():
    pem, _ = generate_dkim_key(1024)
    assert DkimSigner("bücher.example", "s1", pem).domain == "xn--bcher-kva.example"


_BODY_BYTES = st.lists(
    st.sampled_from([b"a", b"Z", b" ", b"  ", b"\t", b"\r\n", b"\r", b"\n", b"=", b"\xc3\xa4"]),
    max_size=60,
).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(_BODY_BYTES)
def test_relaxed_body_equals_dkimpys(body):
    assert relaxed_body(body) == Relaxed.canonicalize_body(body)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([b"Subject", b"LIST-Unsubscribe", b"x-a"]),
    st.lists(st.sampled_from([b"v", b" ", b"\t", b"\r\n ", b"\r\n\t", b";", b"=?"]), max_size=30),
)
def test_relaxed_header_equals_dkimpys(name, pieces):
    value = b"".join(pieces)
    [(c_name, c_value)] = Relaxed.canonicalize_headers([(name, value + b"\r\n")])
    assert relaxed_header(name + b":" + value + b"\r\n") == c_name + b":" + c_value
