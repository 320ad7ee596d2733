"""Header fields of outgoing mail: RFC 2047 encoded-words, folding, addresses and their guards.

Every field is produced as folded lines of at most 78 octets where a break is possible and never
more than 998 (RFC 5322 §2.1.1); a value that cannot meet the hard limit is refused.

What a line break (or another control character) in a value does, per field (SPEC D6):

- Subject: CR, LF, NUL and every other control character except TAB are refused with
  InvalidInputError. A subject is authored text; a line break in it is a template or data bug
  (or an injection attempt) that must surface (the scheduling check renders real recipients),
  not be quietly rewritten in what thousands of people read.
- Recipient display names (To): each run of whitespace and control characters, CR, LF and NUL
  included, becomes one space. A phrase's folding whitespace means one space anyway (RFC 5322
  §3.2.2), so nothing a reader sees is lost, and a contact's messy name must not stop a send.
- Campaign values (the From display name, the list name in List-Id): control characters are
  refused. They are checked once, when the campaign's skeleton is built, so a bad setting stops
  the campaign before its first message.
- Machine values (addresses, unsubscribe URIs, the List-Id identifier, Feedback-ID, domains,
  Message-IDs): only their own strict character sets are accepted; anything else is refused.
"""

from __future__ import annotations

import binascii
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, parseaddr
from functools import lru_cache

import idna

from lists.errors import InvalidInputError

MAX_LINE = 78  # RFC 5322 §2.1.1 SHOULD
HARD_LINE = 998  # RFC 5322 §2.1.1 MUST
_MAX_ENCODED_WORD = 75  # RFC 2047 §2

_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~\-"
# Printable ASCII words separated by single spaces: sendable as they are once folded.
_PLAIN_TEXT = re.compile(r"[!-~]+(?: [!-~]+)*")
_ATOM_PHRASE = re.compile(rf"[{_ATEXT}]+(?: [{_ATEXT}]+)*")
_PRINTABLE = re.compile(r"[ -~]*")
_DOT_ATOM = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*")
# RFC 6532: any non-ASCII character is atext in an internationalized local part.
_UTF8_DOT_ATOM = re.compile(rf"[{_ATEXT}\u0080-\U0010ffff]+(?:\.[{_ATEXT}\u0080-\U0010ffff]+)*")
_LDH_DOMAIN = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
)
# Control characters refused in authored text (TAB is ordinary whitespace there).
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
# What collapses to one space in a display name: whitespace, controls, line separators.
_NAME_SPACE = re.compile(r"[\x00-\x20\x7f-\x9f\u2028\u2029]+")
_URI = re.compile(r"[!-;=?-~]+")  # printable ASCII without '<' and '>'

# RFC 2047 §5(3): the characters a "Q" encoded-word may carry literally, even inside a phrase.
_Q_LITERAL = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")
_Q_TABLE = tuple(
    chr(b) if b in _Q_LITERAL else "_" if b == 0x20 else f"={b:02X}" for b in range(256)
)


@dataclass(frozen=True, slots=True)
class Mailbox:
    """An address with an optional display name, as given (see the module doc for the name)."""

    email: str
    name: str = ""


@dataclass(frozen=True, slots=True)
class AddrSpec:
    """An address as written in the header and in the SMTP envelope."""

    text: str
    smtputf8: bool  # True when the local part is non-ASCII: the relay must offer SMTPUTF8


def parse_mailbox(text: str) -> Mailbox:
    """Read ``Name <local@domain>`` (or a bare address), for example the configured From."""
    check_no_controls(text, "the address")
    name, email = parseaddr(text)
    if not email or "@" not in email:
        raise InvalidInputError(f"{text!r} is not an address of the form 'Name <user@domain>'")
    addr_spec(email)  # refuse now what could not be sent later
    return Mailbox(email=email, name=name)


def fold(name: str, words: Sequence[str]) -> bytes:
    """The field ``name: word word …`` with CRLF, breaking before a word where the line would
    pass 78 octets; InvalidInputError if a word cannot fit within 998."""
    out = [name, ":"]
    length = len(name) + 1
    first = True
    for word in words:
        size = len(word) if word.isascii() else len(word.encode("utf-8"))
        if not first and length + 1 + size > MAX_LINE:
            out.append("\r\n ")
            length = 1 + size
        else:
            out.append(" ")
            length += 1 + size
        if length > HARD_LINE:
            raise InvalidInputError(f"the {name} header cannot be folded within 998 octets")
        out.append(word)
        first = False
    out.append("\r\n")
    return "".join(out).encode("utf-8")


def _word_budget(name: str) -> int:
    # An encoded-word that fits after "Name: " fits on every continuation line too.
    return min(_MAX_ENCODED_WORD, MAX_LINE - len(name) - 2)


def encoded_words(text: str, budget: int) -> list[str]:
    """``text`` as RFC 2047 UTF-8 encoded-words of at most ``budget`` characters each, never
    splitting a character; "Q" or "B", whichever is shorter for this text."""
    data = text.encode("utf-8")
    q_size = sum(len(_Q_TABLE[b]) for b in data)
    b_size = (len(data) + 2) // 3 * 4
    payload = budget - len("=?utf-8?q??=")
    words: list[str] = []
    if q_size <= b_size:
        chunk: list[str] = []
        used = 0
        for char in text:
            piece = "".join([_Q_TABLE[b] for b in char.encode("utf-8")])
            if used + len(piece) > payload and chunk:
                words.append("=?utf-8?q?" + "".join(chunk) + "?=")
                chunk, used = [], 0
            chunk.append(piece)
            used += len(piece)
        if chunk:
            words.append("=?utf-8?q?" + "".join(chunk) + "?=")
        return words
    max_bytes = payload // 4 * 3
    start = size = 0
    for char in text:
        width = len(char.encode("utf-8"))
        if size + width > max_bytes:
            words.append(_b_word(data[start : start + size]))
            start, size = start + size, 0
        size += width
    if size:
        words.append(_b_word(data[start : start + size]))
    return words


def _b_word(data: bytes) -> str:
    return "=?utf-8?b?" + binascii.b2a_base64(data, newline=False).decode("ascii") + "?="


def subject_words(subject: str) -> list[str]:
    """The words of a Subject field: plain ASCII as it is, anything else encoded."""
    check_no_controls(subject, "the subject")
    return _text_words(subject, "Subject")


def check_no_controls(value: str, what: str) -> None:
    """InvalidInputError if ``value`` has a control character other than TAB (CR, LF, NUL …)."""
    bad = _CONTROL.search(value)
    if bad:
        raise InvalidInputError(
            f"{what} contains a control character (U+{ord(bad.group()):04X}); "
            "line breaks are not allowed there"
        )


def _text_words(text: str, field: str) -> list[str]:
    if not text:
        return []
    budget = _word_budget(field)
    # "=?" would let a receiver decode ASCII text as an encoded-word: encode such text instead.
    if _PLAIN_TEXT.fullmatch(text) and "=?" not in text:
        words = text.split(" ")
        if max(map(len, words)) <= budget:
            return words
    return encoded_words(text, budget)


def clean_display_name(name: str) -> str:
    """``name`` with each run of whitespace and control characters made one space, trimmed."""
    return _NAME_SPACE.sub(" ", name).strip(" ")


def phrase_words(name: str, field: str) -> list[str]:
    """A display name as phrase words: atoms, a quoted-string, or encoded-words."""
    name = clean_display_name(name)
    if not name:
        return []
    budget = _word_budget(field)
    if "=?" not in name:
        if _ATOM_PHRASE.fullmatch(name):
            words = name.split(" ")
            if max(map(len, words)) <= budget:
                return words
        elif _PRINTABLE.fullmatch(name):
            quoted = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
            if len(quoted) <= budget:
                return [quoted]
    return encoded_words(name, budget)


def mailbox_field(field: str, mailbox: Mailbox, spec: AddrSpec) -> bytes:
    """A From or To field for ``mailbox`` whose address is already formatted as ``spec``."""
    words = phrase_words(mailbox.name, field)
    if words:
        words.append("<" + spec.text + ">")
    else:
        words = [spec.text]
    return fold(field, words)


def addr_spec(email: str) -> AddrSpec:
    """``email`` ready for a header and the envelope.

    A non-ASCII local part needs SMTPUTF8 (the flag is set and the domain is kept as given);
    otherwise an internationalized domain is written in its ASCII (punycode) form. Local parts
    that would need quoting are refused: normalized contact addresses never do.
    """
    local, at, domain = email.rpartition("@")
    if not at or not local or not domain:
        raise InvalidInputError(f"invalid address {email!r}: it needs a local part and a domain")
    ascii_domain = to_ascii_domain(domain)
    if local.isascii():
        if not _DOT_ATOM.fullmatch(local):
            raise InvalidInputError(f"invalid address {email!r}: unsupported local part")
        text, smtputf8 = f"{local}@{ascii_domain}", False
    else:
        if not _UTF8_DOT_ATOM.fullmatch(local) or _NAME_SPACE.search(local):
            raise InvalidInputError(f"invalid address {email!r}: unsupported local part")
        text, smtputf8 = f"{local}@{domain}", True
    if len(local.encode("utf-8")) > 64 or len(text.encode("utf-8")) > 254:
        raise InvalidInputError(f"invalid address {email!r}: too long")
    return AddrSpec(text=text, smtputf8=smtputf8)


@lru_cache(maxsize=4096)
def to_ascii_domain(domain: str) -> str:
    """The ASCII (A-label) form of a domain; InvalidInputError if it is not a host name."""
    if domain.isascii():
        ascii_domain = domain
    else:
        try:
            ascii_domain = idna.encode(domain, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise InvalidInputError(f"invalid domain {domain!r}: {exc}") from exc
    if len(ascii_domain) > 253 or not _LDH_DOMAIN.fullmatch(ascii_domain):
        raise InvalidInputError(f"invalid domain {domain!r}")
    return ascii_domain


def format_date(when: datetime) -> str:
    """An RFC 5322 date-time in UTC, e.g. ``Mon, 15 Jun 2026 12:00:00 +0000``."""
    if when.tzinfo is None:
        raise InvalidInputError("the Date of a message needs a timezone-aware datetime")
    return format_datetime(when.astimezone(UTC))


def make_message_id(domain: str) -> str:
    """A fresh ``<random@domain>`` Message-ID; unlike email.utils.make_msgid, no DNS lookup."""
    return f"<{secrets.token_hex(16)}@{domain}>"


def check_message_id(message_id: str) -> str:
    """``message_id`` if it is a ``<left@right>`` msg-id of printable ASCII, else refused."""
    inner = message_id[1:-1]
    left, at, right = inner.partition("@")
    if (
        not (message_id.startswith("<") and message_id.endswith(">"))
        or not at
        or not _DOT_ATOM.fullmatch(left)
        or not _DOT_ATOM.fullmatch(right)
        or len(message_id) > 250
    ):
        raise InvalidInputError(f"invalid Message-ID {message_id!r}")
    return message_id


def unsubscribe_words(url: str, mailto: str | None) -> list[str]:
    """The List-Unsubscribe URIs (RFC 2369, RFC 8058): the web one first, then mailto."""
    if not url.startswith(("https://", "http://")) or not _URI.fullmatch(url):
        raise InvalidInputError(f"invalid unsubscribe URL {url!r}")
    if mailto is None:
        return ["<" + url + ">"]
    if not mailto.startswith("mailto:") or not _URI.fullmatch(mailto):
        raise InvalidInputError(f"invalid unsubscribe mailto URI {mailto!r}")
    return ["<" + url + ">,", "<" + mailto + ">"]


def list_id_field(name: str, identifier: str) -> bytes:
    """``List-Id: Name <identifier>`` (RFC 2919); the identifier is a dotted ASCII atom."""
    if "." not in identifier or not _DOT_ATOM.fullmatch(identifier) or len(identifier) > 255:
        raise InvalidInputError(f"invalid List-Id {identifier!r}: use something like news.shop.com")
    check_no_controls(name, "the list name")
    return fold("List-Id", [*phrase_words(name, "List-Id"), "<" + identifier + ">"])


_FEEDBACK_PART = re.compile(r"[A-Za-z0-9._-]+")
_FEEDBACK_ID = re.compile(r"(?:[A-Za-z0-9._-]*:){1,3}[A-Za-z0-9._-]+")


def feedback_id(*identifiers: str, sender: str) -> str:
    """A Feedback-ID value ``a:b:c:SenderId`` (Gmail's format: up to three identifiers, then
    the stable sender id); each part is letters, digits, '.', '_' or '-'."""
    if len(identifiers) > 3:
        raise InvalidInputError("a Feedback-ID has at most three identifiers before the sender")
    parts = [*identifiers, sender]
    for part in parts:
        if not _FEEDBACK_PART.fullmatch(part):
            raise InvalidInputError(f"invalid Feedback-ID part {part!r}")
    return ":".join(parts)


def feedback_id_field(value: str) -> bytes:
    """The ``Feedback-ID`` field for a value made by :func:`feedback_id` (or of its form)."""
    if not _FEEDBACK_ID.fullmatch(value):
        raise InvalidInputError(f"invalid Feedback-ID {value!r}: expected a:b:c:SenderId")
    return fold("Feedback-ID", [value])
