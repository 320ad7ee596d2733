"""What an SMTP attempt came to, and what the send log makes of it (D5).

The transport reports a :data:`SmtpOutcome` (accepted, 4xx, 5xx, connection lost before the
content was complete, or lost after it with no reply); :func:`classify` turns it into a
:class:`Verdict`: the message state to record, whether to retry, suppress the address, slow the
provider down or pause its stream."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from campaigns.models import DeliveryFailure, MessageState


class Stage(StrEnum):
    """The step of the SMTP transaction a reply answered."""

    CONNECT = "connect"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"  # the DATA command itself (354 expected)
    CONTENT = "content"  # the reply to the message content


@dataclass(frozen=True, slots=True)
class Accepted:
    """250 after the content: the receiving server took responsibility for the message."""

    reply: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """A 4xx or 5xx reply at some stage; nothing was accepted."""

    code: int
    enhanced: str | None
    text: str
    stage: Stage

    @property
    def reply(self) -> str:
        parts = [str(self.code), self.enhanced or "", self.text]
        return " ".join(p for p in parts if p)


@dataclass(frozen=True, slots=True)
class ConnectionLost:
    """The connection failed or timed out before the content was complete: the server cannot
    have accepted the message (an SMTP server drops an unfinished transaction)."""

    reason: str
    stage: Stage


@dataclass(frozen=True, slots=True)
class OutcomeUnknown:
    """The content was sent but no reply came: the server may or may not have accepted it."""

    reason: str


@dataclass(frozen=True, slots=True)
class NotStarted:
    """The commit point refused the attempt (lease lost, campaign paused, consent withdrawn):
    the transaction was abandoned before DATA."""

    reason: str


SmtpOutcome = Accepted | Rejected | ConnectionLost | OutcomeUnknown | NotStarted

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")
_USER_UNKNOWN = re.compile(
    r"user unknown|unknown user|no such user|mailbox (?:not found|unavailable|does not exist)|"
    r"recipient (?:unknown|rejected|address rejected)|does not exist|invalid recipient",
    re.IGNORECASE,
)


def split_enhanced(text: str) -> tuple[str | None, str]:
    """Split an RFC 3463 enhanced status code (``5.1.1``) off the start of a reply text."""
    text = text.strip()
    match = _ENHANCED.match(text)
    if match is None:
        return None, text
    return match.group(0), text[match.end() :].strip()


class Action(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    BOUNCE = "bounce"
    FAIL = "fail"
    UNKNOWN = "unknown"
    RELEASE = "release"  # never started: give the row back untouched


@dataclass(frozen=True, slots=True)
class Verdict:
    """The send log's reading of an outcome."""

    action: Action
    reply: str
    failure: DeliveryFailure | None = None
    suppress: bool = False  # hard bounce on 5.1.x: the address goes on the suppression list
    slow_down: bool = False  # a deferral by the provider: halve its pace (AIMD)
    pause_provider: bool = False  # a policy block: pause the stream to the provider, alert

    @property
    def state(self) -> MessageState:
        return {
            Action.DELIVERED: MessageState.SENT,
            Action.RETRY: MessageState.DEFERRED,
            Action.BOUNCE: MessageState.BOUNCED,
            Action.FAIL: MessageState.FAILED,
            Action.UNKNOWN: MessageState.UNKNOWN,
            Action.RELEASE: MessageState.QUEUED,
        }[self.action]


def classify(outcome: SmtpOutcome) -> Verdict:
    """Read one SMTP outcome the way RFC 5321 / 3463 and the mailbox providers mean it."""
    if isinstance(outcome, Accepted):
        return Verdict(Action.DELIVERED, outcome.reply)
    if isinstance(outcome, NotStarted):
        return Verdict(Action.RELEASE, outcome.reason)
    if isinstance(outcome, OutcomeUnknown):
        return Verdict(Action.UNKNOWN, f"outcome unknown: {outcome.reason}")
    if isinstance(outcome, ConnectionLost):
        # Not the provider's word on us, but a sign of trouble: slow down a little too.
        return Verdict(Action.RETRY, f"{outcome.stage}: {outcome.reason}", slow_down=True)
    return _classify_reply(outcome)


def _classify_reply(r: Rejected) -> Verdict:
    reply = r.reply
    enhanced = r.enhanced or ""
    if 400 <= r.code < 500 or enhanced.startswith("4."):
        return Verdict(Action.RETRY, reply, slow_down=True)
    # 552 on RCPT means "too many recipients" (RFC 5321 §4.5.3.1.10): temporary whatever its
    # first digit says.
    if r.code == 552 and r.stage is Stage.RCPT:
        return Verdict(Action.RETRY, reply, slow_down=True)
    if enhanced.startswith("5.7.") or (r.code == 554 and not enhanced.startswith("5.1.")):
        return Verdict(Action.FAIL, reply, DeliveryFailure.POLICY, pause_provider=True)
    if r.stage in (Stage.CONNECT, Stage.MAIL) or enhanced in _SENDER_CODES:
        # About us (the sender address, the session), never about the recipient.
        return Verdict(Action.FAIL, reply, DeliveryFailure.ERROR)
    if enhanced.startswith("5.1.") or (
        not enhanced
        and r.code in (550, 551, 553)
        and r.stage is Stage.RCPT
        and _USER_UNKNOWN.search(r.text) is not None
    ):
        return Verdict(Action.BOUNCE, reply, DeliveryFailure.HARD_BOUNCE, suppress=True)
    if r.stage is Stage.RCPT or enhanced.startswith("5.2."):
        # About the mailbox (disabled, full for good, refused) but not "no such user": a hard
        # bounce, without suppressing an address that may exist.
        return Verdict(Action.BOUNCE, reply, DeliveryFailure.HARD_BOUNCE)
    return Verdict(Action.FAIL, reply, DeliveryFailure.ERROR)


# RFC 3463: 5.1.7 bad sender mailbox syntax, 5.1.8 bad sender's system address.
_SENDER_CODES = frozenset({"5.1.7", "5.1.8"})
