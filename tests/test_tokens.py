"""Signed tracking tokens: they round-trip, stay compact and URL-safe, and anything forged,
altered, truncated, re-spelled or meant for another purpose is rejected."""

from __future__ import annotations

import base64
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from campaigns.tokens import (
    MAX_ID,
    ClickToken,
    OpenToken,
    UnsubscribeToken,
    make_click_token,
    make_click_tokens,
    make_open_token,
    make_unsubscribe_token,
    verify_click_token,
    verify_open_token,
    verify_unsubscribe_token,
)

KEY = b"k" * 32
OTHER_KEY = b"j" * 32
URL_SAFE = set(string.ascii_letters + string.digits + "-_")
ids = st.integers(min_value=0, max_value=MAX_ID)


@settings(max_examples=200, deadline=None)
@given(ids, ids, st.integers(min_value=0, max_value=9999))
def test_click_token_round_trips(campaign_id, contact_id, index):
    token = make_click_token(KEY, campaign_id, contact_id, index)
    assert set(token) <= URL_SAFE
    assert verify_click_token(KEY, token) == ClickToken(campaign_id, contact_id, index)
    assert verify_click_token(OTHER_KEY, token) is None


@settings(max_examples=100, deadline=None)
@given(ids, ids)
def test_other_tokens_round_trip(a, b):
    assert verify_open_token(KEY, make_open_token(KEY, a, b)) == OpenToken(a, b)
    assert verify_unsubscribe_token(KEY, make_unsubscribe_token(KEY, a, b)) == UnsubscribeToken(
        a, b
    )


def test_tokens_are_compact():
    # A million contacts, thousands of campaigns: a click URL stays short.
    assert len(make_click_token(KEY, 4_321, 1_234_567, 12)) <= 28
    assert len(make_open_token(KEY, 4_321, 1_234_567)) <= 28


def test_batch_click_tokens_equal_single_ones():
    batch = make_click_tokens(KEY, 9, 77, 12)
    assert batch == [make_click_token(KEY, 9, 77, i) for i in range(12)]
    assert len(set(batch)) == 12


def _flip(token: str, i: int) -> str:
    replacement = "A" if token[i] != "A" else "B"
    return token[:i] + replacement + token[i + 1 :]


def test_every_single_character_change_is_rejected():
    token = make_click_token(KEY, 5, 123456, 3)
    for i in range(len(token)):
        assert verify_click_token(KEY, _flip(token, i)) is None, i


def test_truncated_extended_and_garbage_tokens_are_rejected():
    token = make_click_token(KEY, 5, 123456, 3)
    bad = [
        "", "A", token[:-1], token[:-4], token + "A", token + "AAAA", token + "=",
        token + "==", "=" + token, token[:5] + "+" + token[6:], " " + token, token + "\n",
        "é" * 20, "x" * 10_000, "../../etc/passwd", "%00", token.upper(), token[::-1],
    ]
    for candidate in bad:
        assert candidate != token
        assert verify_click_token(KEY, candidate) is None, candidate


def test_token_of_one_kind_is_not_valid_as_another():
    click = make_click_token(KEY, 5, 6, 0)
    opened = make_open_token(KEY, 5, 6)
    unsubscribe = make_unsubscribe_token(KEY, 5, 6)
    assert verify_open_token(KEY, click) is None
    assert verify_unsubscribe_token(KEY, opened) is None
    assert verify_click_token(KEY, unsubscribe + "A") is None
    assert verify_open_token(KEY, unsubscribe) is None


def test_forged_token_with_a_guessed_mac_is_rejected():
    # Same fields, a MAC made with another key: the layout alone proves nothing.
    forged = make_click_token(OTHER_KEY, 5, 6, 1)
    assert verify_click_token(KEY, forged) is None


def test_non_canonical_spelling_is_rejected():
    # 1 + 1 + 1 + 1 + 12 = 16 bytes: the last base64 character carries 4 unused bits.
    token = make_click_token(KEY, 1, 1, 1)
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
    last = alphabet.index(token[-1])
    respelled = token[:-1] + alphabet[last ^ 1]
    assert base64.urlsafe_b64decode(respelled + "=" * (-len(respelled) % 4)) == raw
    assert verify_click_token(KEY, respelled) is None
    assert verify_click_token(KEY, token) is not None


@pytest.mark.parametrize("bad", [-1, MAX_ID + 1])
def test_out_of_range_ids_cannot_be_signed(bad):
    with pytest.raises(ValueError):
        make_open_token(KEY, bad, 1)
    with pytest.raises(ValueError):
        make_click_token(KEY, 1, 1, 10_000)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=sorted(URL_SAFE), max_size=40))
def test_random_tokens_never_verify(candidate):
    assert verify_click_token(KEY, candidate) is None
    assert verify_open_token(KEY, candidate) is None
    assert verify_unsubscribe_token(KEY, candidate) is None
