"""Signed tokens carried in tracking URLs: click, open, unsubscribe/preferences.

A token is ``base64url(version || varint fields || mac)`` without padding, where ``mac`` is
HMAC-SHA256 over a domain prefix, the token kind, the version and the fields, truncated to
12 bytes (96 bits: forging one online is hopeless). The kind is part of the MAC but not of the
token, so a click token cannot be replayed as an unsubscribe token. ``verify_*`` returns None
for anything forged, altered, truncated or malformed, and never raises on bad input.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass
from enum import IntEnum

VERSION = 1
MAC_BYTES = 12
MAX_TOKEN_CHARS = 96
# Database ids fit a signed 64-bit integer; link indexes stay small.
MAX_ID = 2**63 - 1
MAX_LINK_INDEX = 9_999

# NUL never occurs in the other messages this installation key signs (addresses, webhooks).
_DOMAIN = b"\x00patron-token\x00"
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]+")
_URL_SAFE = bytes.maketrans(b"+/", b"-_")
_SMALL = [bytes((i,)) for i in range(128)]


class TokenKind(IntEnum):
    CLICK = 1
    OPEN = 2
    UNSUBSCRIBE = 3
    # 4 was a confirmation token: those are lists.consent.confirm_token now; never reuse 4.


@dataclass(frozen=True, slots=True)
class ClickToken:
    """A click on link ``link_index`` of ``campaign_id`` by ``contact_id``."""

    campaign_id: int
    contact_id: int
    link_index: int


@dataclass(frozen=True, slots=True)
class OpenToken:
    """An open of ``campaign_id`` by ``contact_id``."""

    campaign_id: int
    contact_id: int


@dataclass(frozen=True, slots=True)
class UnsubscribeToken:
    """The unsubscribe / preference-centre link of ``contact_id`` in ``campaign_id``."""

    contact_id: int
    campaign_id: int



def _uvarint(value: int) -> bytes:
    if value < 0 or value > MAX_ID:
        raise ValueError(f"token field out of range: {value}")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _parse_uvarints(data: bytes, count: int) -> list[int] | None:
    """Exactly ``count`` canonical varints filling ``data``, or None."""
    values: list[int] = []
    pos = 0
    for _ in range(count):
        value = shift = 0
        while True:
            if pos >= len(data) or shift > 63:
                return None
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                # A zero final byte after others is an overlong (non-canonical) encoding.
                if byte == 0 and shift > 7:
                    return None
                break
        if value > MAX_ID:
            return None
        values.append(value)
    return values if pos == len(data) else None


def _mac(key: bytes, kind: TokenKind, body: bytes) -> bytes:
    return hmac.digest(key, _DOMAIN + bytes((kind,)) + body, "sha256")[:MAC_BYTES]


def _encode(raw: bytes) -> str:
    return binascii.b2a_base64(raw, newline=False).rstrip(b"=").translate(_URL_SAFE).decode()


def _make(key: bytes, kind: TokenKind, *fields: int) -> str:
    body = bytes((VERSION,)) + b"".join(_uvarint(f) for f in fields)
    return _encode(body + _mac(key, kind, body))


def _open(key: bytes, kind: TokenKind, token: str, count: int) -> list[int] | None:
    """The fields of a genuine token of ``kind``, or None."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
        return None
    if not _TOKEN_RE.fullmatch(token):
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return None
    # Reject non-canonical spellings (stray padding bits) so one token has one spelling.
    if _encode(raw) != token or len(raw) < 1 + count + MAC_BYTES:
        return None
    body, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
    if not hmac.compare_digest(mac, _mac(key, kind, body)):
        return None
    if body[0] != VERSION:
        return None
    return _parse_uvarints(body[1:], count)


def make_click_token(key: bytes, campaign_id: int, contact_id: int, link_index: int) -> str:
    """The token of ``/c/{token}`` for one link of one campaign sent to one contact."""
    if not 0 <= link_index <= MAX_LINK_INDEX:
        raise ValueError(f"link index out of range: {link_index}")
    return _make(key, TokenKind.CLICK, campaign_id, contact_id, link_index)


def make_click_tokens(key: bytes, campaign_id: int, contact_id: int, count: int) -> list[str]:
    """The click tokens of links ``0 … count-1`` for one recipient (the per-message hot path)."""
    if count > MAX_LINK_INDEX + 1:
        raise ValueError(f"too many links: {count}")
    prefix = bytes((VERSION,)) + _uvarint(campaign_id) + _uvarint(contact_id)
    # The HMAC state after the shared prefix is computed once and copied for each link.
    shared = hmac.new(key, _DOMAIN + bytes((TokenKind.CLICK,)) + prefix, hashlib.sha256)
    tokens = []
    for index in range(count):
        suffix = _SMALL[index] if index < 128 else _uvarint(index)
        mac = shared.copy()
        mac.update(suffix)
        tokens.append(_encode(prefix + suffix + mac.digest()[:MAC_BYTES]))
    return tokens


def verify_click_token(key: bytes, token: str) -> ClickToken | None:
    """The click a genuine token stands for, or None."""
    fields = _open(key, TokenKind.CLICK, token, 3)
    if fields is None or fields[2] > MAX_LINK_INDEX:
        return None
    return ClickToken(fields[0], fields[1], fields[2])


def make_open_token(key: bytes, campaign_id: int, contact_id: int) -> str:
    """The token of the open pixel ``/o/{token}``."""
    return _make(key, TokenKind.OPEN, campaign_id, contact_id)


def verify_open_token(key: bytes, token: str) -> OpenToken | None:
    """The open a genuine pixel token stands for, or None."""
    fields = _open(key, TokenKind.OPEN, token, 2)
    return None if fields is None else OpenToken(fields[0], fields[1])


def make_unsubscribe_token(key: bytes, contact_id: int, campaign_id: int) -> str:
    """The token of ``/u/{token}`` (one-click unsubscribe and the preference centre)."""
    return _make(key, TokenKind.UNSUBSCRIBE, contact_id, campaign_id)


def verify_unsubscribe_token(key: bytes, token: str) -> UnsubscribeToken | None:
    """The contact and campaign a genuine unsubscribe token stands for, or None."""
    fields = _open(key, TokenKind.UNSUBSCRIBE, token, 2)
    return None if fields is None else UnsubscribeToken(fields[0], fields[1])
