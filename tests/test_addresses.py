"""lists.addresses: the fast path must give email-validator's answer (A1), and the hygiene flags
(A10) must flag what they say."""

from __future__ import annotations

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from lists.addresses import _fast_normalize, classify, is_disposable, is_role, normalize_email
from lists.errors import InvalidInputError

ATOM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+-"
LABEL = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-"

# Local parts near the fast path's shape: dots in odd places, case-insensitive mailbox names,
# lengths around the 64-octet limit, characters only the library handles.
local_parts = st.one_of(
    st.text(alphabet=ATOM + ".", min_size=1, max_size=12),
    st.sampled_from(["Postmaster", "ABUSE", "mailer-daemon", "a.b", ".a", "a.", "a..b", "x" * 64,
                     "x" * 65, "o'brien", "zoé", "a b", '"quoted"', "a!b", "#", "~", "é"]),
)
labels = st.one_of(
    st.text(alphabet=LABEL, min_size=1, max_size=10),
    st.sampled_from(["xn--bcher-kva", "a--b", "-a", "a-", "x" * 63, "x" * 64, "BÜCHER", "1"]),
)
tlds = st.one_of(
    st.sampled_from(["com", "COM", "org", "lu", "example", "test", "local", "localhost", "invalid",
                     "onion", "arpa", "internal", "a", "1com", "123", "xn--p1ai", "co", "x" * 63,
                     "x" * 64]),
    st.text(alphabet="abcXYZ", min_size=2, max_size=4),
)
domains = st.builds(lambda ls, tld: ".".join([*ls, tld]), st.lists(labels, min_size=0, max_size=4),
                    tlds)
near_miss = st.builds(lambda lp, d: f"{lp}@{d}", local_parts, domains)
addresses = st.one_of(
    near_miss,
    near_miss.map(lambda a: a.upper()),
    st.builds(lambda a, pad: pad + a + pad, near_miss, st.sampled_from(["", " ", "\t"])),
    st.emails(),
    st.text(max_size=30),
    st.builds(lambda n, d: "x" * n + "@" + d, st.integers(1, 250), st.sampled_from(["a.example", "b.co"])),
)


def _reference(text: str) -> str | None:
    try:
        return validate_email(text, check_deliverability=False).normalized
    except EmailNotValidError:
        return None


@given(addresses)
@settings(max_examples=3000, deadline=None)
def test_the_fast_path_answers_like_email_validator(text):
    fast = _fast_normalize(text)
    if fast is not None:
        assert fast == _reference(text)


@given(addresses)
@settings(max_examples=1500, deadline=None)
def test_normalize_email_accepts_and_refuses_like_email_validator(text):
    expected = _reference(text.strip())
    if expected is None:
        with pytest.raises(InvalidInputError):
            normalize_email(text)
    else:
        assert normalize_email(text) == expected


def test_normalization_keeps_the_local_part_and_lowers_the_domain():
    assert normalize_email("  Ana.Lopes@Shop.EXAMPLE ") == "Ana.Lopes@shop.example"
    assert normalize_email("Postmaster@Shop.Example") == "postmaster@shop.example"
    assert normalize_email("ana@Bücher.example") == "ana@bücher.example"


def test_refusals_carry_the_validators_reason():
    with pytest.raises(InvalidInputError) as err:
        normalize_email("ana@")
    assert isinstance(err.value.__cause__, EmailNotValidError)
    assert str(err.value).startswith("invalid address 'ana@': ")


def test_hygiene_flags():
    assert is_role("postmaster") and is_role("Info") and is_role("sales+eu")
    assert not is_role("ana")
    assert is_disposable("mailinator.com") and is_disposable("eu.mailinator.com")
    assert not is_disposable("shop.example")
    flagged = classify("Admin@Mailinator.com")
    assert (flagged.email, flagged.is_role, flagged.is_disposable) == ("Admin@mailinator.com", True, True)
    # RFC 2142 names are case-insensitive, so the validator lower-cases them.
    assert classify("Info@Shop.Example").email == "info@shop.example"
