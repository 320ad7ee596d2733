"""Pure parts of delivery: reading SMTP replies, retry timing, pace, warm-up, windows and local
times, DATA framing, provider grouping (with a real DNS server on loopback)."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from campaigns.delivery.mx import DnsResolver, parse_nameserver
from campaigns.delivery.outcomes import (
    Accepted,
    Action,
    ConnectionLost,
    NotStarted,
    OutcomeUnknown,
    Rejected,
    Stage,
    classify,
    split_enhanced,
)
from campaigns.delivery.providers import ProviderDirectory, organizational_domain
from campaigns.delivery.retry import RetryPolicy
from campaigns.delivery.scheduling import (
    local_instant,
    next_in_window,
    parse_at,
    parse_window,
    schedule,
)
from campaigns.delivery.smtp import prepare_data
from campaigns.delivery.throttle import Pace, ProviderLane, ProviderLimits, RateLimiter, warmup_cap
from campaigns.models import Campaign
from lists.errors import ConflictError, InvalidInputError
from tests.servers.dns import DnsServer, Zones


def reply(code, text, stage=Stage.RCPT):
    enhanced, rest = split_enhanced(text)
    return Rejected(code, enhanced, rest, stage)


@pytest.mark.parametrize(
    ("outcome", "action", "failure", "suppress", "pause"),
    [
        (Accepted("250 ok"), Action.DELIVERED, None, False, False),
        (reply(451, "4.7.1 Greylisted"), Action.RETRY, None, False, False),
        (reply(421, "4.7.0 closing", Stage.MAIL), Action.RETRY, None, False, False),
        (reply(452, "4.5.3 Too many recipients"), Action.RETRY, None, False, False),
        (reply(552, "5.5.3 Too many recipients"), Action.RETRY, None, False, False),
        (reply(552, "5.3.4 Message too big", Stage.CONTENT), Action.FAIL, "error", False, False),
        (reply(550, "5.1.1 User unknown"), Action.BOUNCE, "hard_bounce", True, False),
        (reply(550, "No such user here"), Action.BOUNCE, "hard_bounce", True, False),
        (reply(550, "5.2.1 Mailbox disabled"), Action.BOUNCE, "hard_bounce", False, False),
        (reply(550, "5.7.1 Blocked by policy"), Action.FAIL, "policy", False, True),
        (reply(554, "Service unavailable; client host blocked"), Action.FAIL, "policy", False,
         True),
        (reply(550, "5.7.26 Unauthenticated email", Stage.CONTENT), Action.FAIL, "policy", False,
         True),
        (reply(553, "5.1.8 Sender address rejected", Stage.MAIL), Action.FAIL, "error", False,
         False),
        (reply(550, "5.1.1 bad", Stage.MAIL), Action.FAIL, "error", False, False),
        (ConnectionLost("reset", Stage.RCPT), Action.RETRY, None, False, False),
        (OutcomeUnknown("timeout"), Action.UNKNOWN, None, False, False),
        (NotStarted("paused"), Action.RELEASE, None, False, False),
    ],
)
def test_replies_are_read_as_rfc_5321_and_3463_mean_them(outcome, action, failure, suppress,
                                                        pause):
    verdict = classify(outcome)
    assert verdict.action is action
    assert (verdict.failure.value if verdict.failure else None) == failure
    assert verdict.suppress is suppress
    assert verdict.pause_provider is pause


def test_deferrals_slow_the_provider_down():
    assert classify(reply(451, "4.7.1 later")).slow_down
    assert not classify(Accepted("250 ok")).slow_down


def test_retry_backs_off_exponentially_with_jitter_and_gives_up_after_its_lifetime():
    policy = RetryPolicy(initial_seconds=600, multiplier=2, max_interval_seconds=3600,
                         jitter=0.2, lifetime_seconds=4 * 86400)
    assert [policy.interval(n) for n in (1, 2, 3, 4, 5)] == [600, 1200, 2400, 3600, 3600]
    first = datetime(2026, 6, 1, tzinfo=UTC)
    rng = random.Random(1)
    waits = [(policy.next_attempt(2, first, first, rng) - first).total_seconds() for _ in range(50)]
    assert min(waits) >= 960 and max(waits) <= 1440 and len(set(waits)) > 40
    assert policy.next_attempt(9, first, first + timedelta(days=3, hours=23, minutes=15), rng) is None
    assert policy.next_attempt(9, first, first + timedelta(days=3), rng) is not None
    assert RetryPolicy().interval(1) >= 300  # minutes, in the spirit of RFC 5321
    assert RetryPolicy().lifetime_seconds >= 4 * 86400  # days


def test_rate_limiter_spaces_messages_and_allows_its_burst():
    now = [100.0]
    limiter = RateLimiter(10.0, burst=3, clock=lambda: now[0])
    waits = [limiter.reserve() for _ in range(6)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3:] == pytest.approx([0.1, 0.2, 0.3])
    now[0] += 10
    assert limiter.reserve() == 0.0


def test_aimd_pace_halves_per_deferral_window_and_recovers_gradually():
    t0 = datetime(2026, 6, 1, tzinfo=UTC)
    pace = Pace().halved(t0, step=0.1, recovery=30, floor=0.05)
    assert pace.factor == 0.5
    pace = pace.halved(t0 + timedelta(seconds=1), step=0.1, recovery=30, floor=0.05)
    assert pace.factor == 0.25
    assert pace.effective(t0 + timedelta(seconds=30), 0.1, 30) == 0.25
    assert pace.effective(t0 + timedelta(seconds=31), 0.1, 30) == pytest.approx(0.35)
    assert pace.effective(t0 + timedelta(seconds=92), 0.1, 30) == pytest.approx(0.55)
    assert pace.effective(t0 + timedelta(hours=1), 0.1, 30) == 1.0
    floor = Pace(0.06, t0).halved(t0, step=0.1, recovery=30, floor=0.05)
    assert floor.factor == 0.05


def test_provider_lane_bounds_concurrency_by_its_factor():
    async def scenario():
        lane = ProviderLane("google.com", ProviderLimits(concurrency=4, rate=1000))
        lane.set_pace(ProviderLimits(4, 1000), 0.5)
        peak = 0

        async def one():
            nonlocal peak
            async with lane.slot():
                peak = max(peak, lane.in_flight)
                await asyncio.sleep(0.01)

        await asyncio.gather(*(one() for _ in range(12)))
        return peak

    assert asyncio.run(scenario()) == 2


def test_provider_lane_rate():
    async def scenario():
        lane = ProviderLane("x", ProviderLimits(concurrency=10, rate=50))
        began = time.perf_counter()
        for _ in range(11):
            async with lane.slot():
                pass
        return time.perf_counter() - began

    assert asyncio.run(scenario()) >= 0.11  # 11 messages at 50/s, the first 5 as a burst


def test_warmup_ramp_caps_each_day_then_lifts():
    ramp = (50, 100, 200)
    start = date(2026, 6, 1)
    assert warmup_cap(ramp, start, date(2026, 5, 30)) == 50
    assert [warmup_cap(ramp, start, start + timedelta(days=d)) for d in range(4)] == [
        50, 100, 200, None]


def test_sending_windows_and_local_times():
    paris = ZoneInfo("Europe/Paris")
    window = parse_window("09:00-20:00")
    late = datetime(2026, 6, 15, 19, 30, tzinfo=UTC)  # 21:30 in Paris
    assert next_in_window(late, paris, window) == datetime(2026, 6, 16, 7, 0, tzinfo=UTC)
    inside = datetime(2026, 6, 15, 10, 0, tzinfo=UTC)
    assert next_in_window(inside, paris, window) == inside
    early = datetime(2026, 6, 15, 5, 0, tzinfo=UTC)  # 07:00 in Paris
    assert next_in_window(early, paris, window) == datetime(2026, 6, 15, 7, 0, tzinfo=UTC)
    overnight = parse_window("22:00-06:00")
    assert overnight.contains(clock_time(23, 0)) and not overnight.contains(clock_time(12, 0))
    assert local_instant(date(2026, 6, 15), clock_time(10), ZoneInfo("America/New_York")) == \
        datetime(2026, 6, 15, 14, 0, tzinfo=UTC)
    for bad in ("9-20", "09:00", "10:00-10:00", "25:00-26:00"):
        with pytest.raises(InvalidInputError):
            parse_window(bad)


def _campaign(status="draft"):
    now = datetime(2026, 6, 15, 12, tzinfo=UTC)
    return Campaign(name="c", slug="c", kind="newsletter", template="t", template_source="",
                    subject="s", status=status, created_at=now, updated_at=now), now


def test_schedule_at_a_time_or_at_local_time():
    campaign, now = _campaign()
    at = parse_at("2026-06-20T10:00:00+02:00", "UTC")
    assert schedule(campaign, at, now, window="09:00-20:00") == datetime(2026, 6, 20, 8, 0,
                                                                          tzinfo=UTC)
    assert (campaign.status, campaign.window_start, campaign.window_end) == (
        "scheduled", "09:00", "20:00")
    campaign, now = _campaign()
    starts = schedule(campaign, parse_at("2026-06-20", "UTC"), now, local_time="10:00")
    assert starts == datetime(2026, 6, 19, 20, 0, tzinfo=UTC)  # 10:00 at UTC+14
    assert campaign.local_send_time == "10:00"
    assert parse_at("2026-06-20T10:00", "Europe/Paris") == datetime(2026, 6, 20, 8, 0, tzinfo=UTC)
    campaign, now = _campaign()
    with pytest.raises(InvalidInputError):
        schedule(campaign, parse_at("2026-06-01T10:00Z", "UTC"), now)  # in the past
    with pytest.raises(InvalidInputError):
        schedule(campaign, parse_at("2026-06-20", "UTC"), now)  # a date needs --local-time
    campaign, now = _campaign("sent")
    with pytest.raises(ConflictError):
        schedule(campaign, parse_at("2026-06-20T10:00Z", "UTC"), now)


def test_data_is_framed_with_crlf_and_dot_stuffing():
    assert prepare_data(b"Subject: x\r\n\r\n.hidden\r\nend") == (
        b"Subject: x\r\n\r\n..hidden\r\nend\r\n.\r\n")
    assert prepare_data(b".first\nbare lf\n") == b"..first\r\nbare lf\r\n.\r\n"
    assert prepare_data(b"bare cr\rnext\r\n") == b"bare cr\r\nnext\r\n.\r\n"
    assert prepare_data(b"") == b"\r\n.\r\n"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b".", b"a", b" ", b"\r\n."]),
                max_size=30).map(b"".join))
def test_data_payload_reads_back_as_the_message_with_crlf_lines(data):
    """What the server reads back (dot-unstuffed, up to the final dot) is the message with each
    CR, LF or CRLF as one CRLF; nothing inside ends the DATA early."""
    payload = prepare_data(data)
    assert payload.endswith(b"\r\n.\r\n")
    lines = payload[:-3].split(b"\r\n")[:-1]
    assert b"\r" not in payload.replace(b"\r\n", b"") and b"\n" not in payload.replace(
        b"\r\n", b"")
    assert all(line != b"." for line in lines)
    unstuffed = b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)
    expected = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    assert unstuffed + b"\r\n" == (expected if expected.endswith(b"\r\n") else expected + b"\r\n")


def test_organizational_domain_of_mx_hosts():
    assert organizational_domain("gmail-smtp-in.l.google.com.") == "google.com"
    assert organizational_domain("mx1.shop.co.uk") == "shop.co.uk"
    assert organizational_domain("localhost") == "localhost"
    assert parse_nameserver("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert parse_nameserver("[::1]:53") == ("::1", 53)
    assert parse_nameserver("10.0.0.1") == ("10.0.0.1", 53)


def test_providers_are_grouped_by_mx_and_dns_trouble_never_blocks():
    zones = Zones(
        mx={
            "gmail.com": [(5, "gmail-smtp-in.l.google.com"), (10, "alt1.gmail-smtp-in.l.google.com")],
            "googlemail.com": [(5, "gmail-smtp-in.l.google.com")],
            "outlook.com": [(10, "outlook-com.olc.protection.outlook.com")],
            "shop.co.uk": [(10, "mx.shop.co.uk")],
        },
        a={"nomx.example": "192.0.2.1"},
        silent={"slow.example"},
    )
    with DnsServer(zones) as server:
        directory = ProviderDirectory(DnsResolver([server.address], timeout=0.3), timeout=0.3)

        async def lookups():
            began = time.perf_counter()
            groups = await asyncio.gather(
                *(directory.provider_of(d) for d in (
                    "gmail.com", "googlemail.com", "GMAIL.com", "outlook.com", "shop.co.uk",
                    "nomx.example", "missing.example", "slow.example", "slow.example",
                ))
            )
            return groups, time.perf_counter() - began

        groups, seconds = asyncio.run(lookups())
        assert groups == ["google.com", "google.com", "google.com", "outlook.com", "shop.co.uk",
                          "nomx.example", "missing.example", "slow.example", "slow.example"]
        assert seconds < 1.5  # a silent name server costs one timeout, not one per message
        assert server.queries["gmail.com/MX"] == 1  # cached and shared by concurrent callers
        assert directory.failures == 1
