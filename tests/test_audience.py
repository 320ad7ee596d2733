"""Audience freeze (C1, C5, C6, D1): who is queued, who is skipped and why, holdout and A/B
draws, discount codes."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from campaigns.audience import AWAITING_WINNER, draw, freeze_audience
from campaigns.models import CampaignKind, DiscountCode, Message
from campaigns.service import CampaignSpec, create_campaign
from lists.consent import Provenance, subscribe, unsubscribe
from lists.errors import ConflictError
from lists.mailing_lists import create_list
from lists.models import Contact, SuppressionReason
from lists.segments import create_segment
from lists.suppressions import suppress

from .conftest import NOW

KEY = b"k" * 32


def _contact(s, email, **kw):
    c = Contact(email=email, created_at=NOW, updated_at=NOW, **kw)
    s.add(c)
    s.flush()
    return c


def _spec(**kw):
    base = dict(name="Spring", kind=CampaignKind.NEWSLETTER, template="newsletter",
                template_source="<mjml></mjml>", subject="Hello", lists=["news"], seed=7)
    base.update(kw)
    return CampaignSpec(**base)


def _states(s, campaign_id):
    rows = s.execute(select(Message.contact_id, Message.state, Message.skip_reason)
                     .where(Message.campaign_id == campaign_id)).all()
    return {cid: (state, reason) for cid, state, reason in rows}


def test_skip_reasons_and_consent(ctx):
    with ctx.session() as s:
        news = create_list(s, "news", NOW)
        other = create_list(s, "other", NOW, double_opt_in=False)
        ok = _contact(s, "ok@shop.example")
        pending = _contact(s, "pending@shop.example")
        gone = _contact(s, "gone@shop.example")
        supp = _contact(s, "supp@shop.example")
        role = _contact(s, "info@shop.example", is_role=True)
        disp = _contact(s, "x@mailinator.com", is_disposable=True)
        outsider = _contact(s, "outsider@shop.example")
        for c in (ok, gone, supp, role, disp):
            subscribe(s, c.id, news, Provenance(source="test"), NOW, confirmed=True)
        subscribe(s, pending.id, news, Provenance(source="test"), NOW)
        subscribe(s, outsider.id, other, Provenance(source="test"), NOW)
        unsubscribe(s, KEY, gone, Provenance(source="test"), NOW, mailing_list=news)
        suppress(s, KEY, "SUPP@shop.example", SuppressionReason.HARD_BOUNCE, NOW)
        campaign = create_campaign(s, _spec(), NOW)
        summary = freeze_audience(s, campaign, KEY, NOW)
        states = _states(s, campaign.id)
    assert states == {
        ok.id: ("queued", None),
        pending.id: ("skipped", "not_confirmed"),
        gone.id: ("skipped", "unsubscribed"),
        supp.id: ("skipped", "suppressed"),
        role.id: ("skipped", "role_address"),
        disp.id: ("skipped", "disposable_domain"),
    }
    assert outsider.id not in states
    assert summary.queued == 1 and summary.targeted == 6


def test_freeze_is_once_and_segment_narrows(ctx):
    with ctx.session() as s:
        news = create_list(s, "news", NOW, double_opt_in=False)
        buyers = [_contact(s, f"b{i}@shop.example", orders_count=2) for i in range(3)]
        others = [_contact(s, f"o{i}@shop.example") for i in range(3)]
        for c in buyers + others:
            subscribe(s, c.id, news, Provenance(source="test"), NOW)
        create_segment(s, "repeat", "orders >= 2", NOW)
        campaign = create_campaign(s, _spec(segment="repeat"), NOW)
        first = freeze_audience(s, campaign, KEY, NOW)
        again = freeze_audience(s, campaign, KEY, NOW)
        count = s.execute(select(func.count()).select_from(Message)).scalar_one()
    assert first == again
    assert first.queued == 3 and count == 3


def test_holdout_and_variants_are_reproducible(ctx):
    with ctx.session() as s:
        news = create_list(s, "news", NOW, double_opt_in=False)
        people = [_contact(s, f"p{i}@shop.example") for i in range(400)]
        for c in people:
            subscribe(s, c.id, news, Provenance(source="test"), NOW)
        campaign = create_campaign(s, _spec(holdout_percent=10, ab_subjects=["A", "B"],
                                            ab_test_percent=50), NOW)
        summary = freeze_audience(s, campaign, KEY, NOW)
        rows = s.execute(select(Message.contact_id, Message.skip_reason, Message.variant)
                         .where(Message.campaign_id == campaign.id)).all()
    holdout = {cid for cid, reason, _ in rows if reason == "holdout"}
    expected = {c.id for c in people if draw(7, "holdout", c.id) * 100 < 10}
    assert holdout == expected
    assert 15 <= len(holdout) <= 70  # about 10 % of 400
    variants = [v for _, reason, v in rows if reason is None]
    assert set(variants) == {0, 1, AWAITING_WINNER}
    assert summary.holdout == len(holdout)


def test_discount_codes_distinct_and_pool_exhaustion_writes_nothing(ctx):
    with ctx.session() as s:
        news = create_list(s, "news", NOW, double_opt_in=False)
        for i in range(5):
            c = _contact(s, f"d{i}@shop.example")
            subscribe(s, c.id, news, Provenance(source="test"), NOW)
        generated = create_campaign(s, _spec(name="Gen", kind=CampaignKind.DISCOUNT,
                                             discount_prefix="SPRING-", discount_expiry_days=7), NOW)
        freeze_audience(s, generated, KEY, NOW)
        codes = s.execute(select(Message.discount_code).where(Message.campaign_id == generated.id)).scalars().all()
        assert len(codes) == 5 and len(set(codes)) == 5 and all(c.startswith("SPRING-") for c in codes)
        short = create_campaign(s, _spec(name="Short", kind=CampaignKind.DISCOUNT), NOW)
        s.add_all([DiscountCode(campaign_id=short.id, code=f"SHOP{i}") for i in range(3)])
        s.flush()
        with pytest.raises(ConflictError, match="needs 5 discount codes"):
            freeze_audience(s, short, KEY, NOW)
        assert s.execute(select(func.count()).select_from(Message)
                         .where(Message.campaign_id == short.id)).scalar_one() == 0
