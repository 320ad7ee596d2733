"""VERP envelope senders: ``bounces+<campaign>-<contact>-<mac>@<return-path domain>``.

The envelope sender (MAIL FROM) becomes the Return-Path at the receiver and is where bounces
go, so encoding the (campaign, contact) pair in it attributes every bounce to its send without
parsing the bounce body (checklist B6). The HMAC keeps anyone from forging a bounce against
another recipient. Only lower-case letters, digits and '-' are used: some relays fold the case of
local parts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass

from campaigns.message.headers import to_ascii_domain
from lists.errors import InvalidInputError

_MAC_BYTES = 10  # 80 bits: 16 base32 characters
_TOKEN = re.compile(r"([0-9a-f]{1,16})-([0-9a-f]{1,16})-([a-z2-7]{16})")
_PREFIX = re.compile(r"[a-z0-9][a-z0-9._-]*")


@dataclass(frozen=True, slots=True)
class VerpTag:
    """The send a bounce address belongs to."""

    campaign_id: int
    contact_id: int


def _mac(key: bytes, campaign_id: int, contact_id: int) -> str:
    message = b"patron-verp\x00%d\x00%d" % (campaign_id, contact_id)
    digest = hmac.new(key, message, hashlib.sha256).digest()[:_MAC_BYTES]
    return base64.b32encode(digest).decode("ascii").lower()


def verp_address(
    *, campaign_id: int, contact_id: int, domain: str, key: bytes, prefix: str = "bounces"
) -> str:
    """The envelope sender for one (campaign, contact) send."""
    if campaign_id < 0 or contact_id < 0:
        raise InvalidInputError("VERP ids must not be negative")
    if not _PREFIX.fullmatch(prefix):
        raise InvalidInputError(f"invalid bounce address prefix {prefix!r}")
    mac = _mac(key, campaign_id, contact_id)
    return f"{prefix}+{campaign_id:x}-{contact_id:x}-{mac}@{to_ascii_domain(domain)}"


def parse_verp(address: str, *, key: bytes, prefix: str = "bounces") -> VerpTag | None:
    """The send behind a bounce address, or None if it is not one of ours or its MAC is wrong."""
    local = address.strip().strip("<>").rpartition("@")[0].lower()
    head, plus, token = local.partition("+")
    if head != prefix or not plus:
        return None
    match = _TOKEN.fullmatch(token)
    if match is None:
        return None
    campaign_id, contact_id = int(match.group(1), 16), int(match.group(2), 16)
    if not hmac.compare_digest(match.group(3), _mac(key, campaign_id, contact_id)):
        return None
    return VerpTag(campaign_id=campaign_id, contact_id=contact_id)
