"""The risk stage against a real journal with time driven by a Clock: holds end and counts slide out
when they should, step_up steps up where the bank can ask and else acts as its rule's `otherwise`,
shadow rules change nothing, reload."""

from __future__ import annotations

import base64

import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from twisted.internet.task import Clock as ReactorClock

from switch.domain.currency import by_alpha
from switch.domain.customer import Customer
from switch.domain.model import AuthorizeRequest, CardInstrument
from switch.domain.panscan import holds_card_number
from switch.engine.risk import Facts, RiskRules, RiskStage, Rule, Scope, Verdict, tag
from switch.engine.risk.rules import Remembered
from tests.journal.conftest import backend, clock, config, journal, key_files, pg_schema, registry  # noqa: F401

VISA = "4111111111111111"


def request(amount: int = 1000, pan: str = VISA, **customer: str) -> AuthorizeRequest:
    usd = by_alpha("USD")
    assert usd is not None
    return AuthorizeRequest("M100", "web", "o-1", amount, usd, True, CardInstrument(pan, "3012"),
                            customer=Customer(**customer) if customer else None)


def stage(journal, *rules: Rule) -> tuple[RiskStage, ReactorClock]:
    now = ReactorClock()
    now.advance(1_800_000_000)
    return RiskStage(now, journal, RiskRules(tuple(rules)), CollectorRegistry()), now


NOTHING = Verdict("allow", None, ())
GUARD = Rule("card-testing", "card_testing", "block", declines=3, window=600.0, hold=1800.0)


@pytest_twisted.ensureDeferred
async def test_a_hold_starts_at_the_third_decline_in_the_window_and_ends_after_hold(journal):
    risk, now = stage(journal, GUARD)
    facts = risk.facts(request())
    await risk.answered(facts, NOTHING, "declined")
    await risk.answered(facts, NOTHING, "declined")
    assert (await risk.evaluate("t1", facts)).action == "allow"
    now.advance(660)  # a window (600 s) and a slot (60 s) later the first two declines have slid out
    await risk.answered(facts, NOTHING, "declined")
    await risk.answered(facts, NOTHING, "declined")
    assert (await risk.evaluate("t2", facts)).action == "allow"
    await risk.answered(facts, NOTHING, "declined")
    verdict = await risk.evaluate("t3", facts)
    assert (verdict.action, verdict.rule) == ("block", "card-testing")
    now.advance(1799)
    assert (await risk.evaluate("t4", facts)).action == "block"
    now.advance(2)
    assert (await risk.evaluate("t5", facts)).action == "allow"


@pytest_twisted.ensureDeferred
async def test_an_outcome_s_closing_is_built_from_the_request_and_its_verdict(journal):
    """A payment waits at its bank with its verdict only: the stage's part of its outcome comes from its request
    (the facts built again) and that verdict, so a bank's decline still counts for card testing."""
    risk, now = stage(journal, GUARD)
    for n in range(3):
        screening = risk.screening(f"t{n}", request(), can_step_up=False)
        verdict = await journal.risk_unit(screening.decide, now.seconds())
        assert verdict.action == "allow"
        assert risk.outcome_closing(request(), verdict, "approved") is None
        assert risk.outcome_closing(request(), None, "declined") is None  # never decided: nothing to close
        await journal.risk_unit(risk.outcome_closing(request(), verdict, "declined"), now.seconds())
    verdict = await risk.evaluate("t3", risk.facts(request()))
    assert (verdict.action, verdict.rule) == ("block", "card-testing")


@pytest_twisted.ensureDeferred
async def test_step_up_where_the_bank_can_ask_else_otherwise_and_shadow_changes_nothing(journal):
    shadow = Rule("big-shadow", "amount_limit", "block", mode="shadow", max_amount=500)
    step_up = Rule("big", "amount_limit", "step_up", otherwise="review", max_amount=800)
    risk, _ = stage(journal, shadow, step_up)
    verdict = await risk.evaluate("t1", risk.facts(request(amount=900)))
    assert (verdict.action, verdict.rule) == ("review", "big")
    assert [(m["rule"], m["mode"]) for m in verdict.matches] == [("big-shadow", "shadow"), ("big", "enforce")]
    verdict = await risk.evaluate("t2", risk.facts(request(amount=600)))
    assert (verdict.action, verdict.rule, verdict.answer_field()) == ("allow", None, None)
    assert (await journal.risk_decision("t2"))["matches"][0]["rule"] == "big-shadow"
    stepped = await risk.evaluate("t3", risk.facts(request(amount=900)), step_up=True)  # the bank can ask
    assert (stepped.action, stepped.answer_field()) == ("step_up", {"rule": "big", "action": "step_up"})
    assert (await journal.risk_decision("t3"))["action"] == "step_up"


@pytest_twisted.ensureDeferred
async def test_a_blocked_payment_gives_its_cumulative_reservation_back(journal):
    cumulative = Rule("daily", "cumulative", "block", per="customer", max_amount=3000, window=86400.0)
    blocked_device = Rule("devices", "blocklist", "block", entries=frozenset({("device", "d-bad")}))
    risk, _ = stage(journal, cumulative, blocked_device)
    assert (await risk.evaluate("t1", risk.facts(request(2000, id="c-1", device_id="d-bad")))).action == "block"
    assert (await risk.evaluate("t2", risk.facts(request(3000, id="c-1")))).action == "allow"  # the 2000 went back
    verdict = await risk.evaluate("t3", risk.facts(request(1, id="c-1")))
    assert verdict.matches[0]["seen"] == {"count": 1, "amount": 3000, "asked": 1}


@pytest_twisted.ensureDeferred
async def test_scope_and_replace(journal):
    limit = Rule("eur-only", "amount_limit", "block", scope=Scope(currencies=frozenset({"EUR"})), max_amount=10)
    risk, _ = stage(journal, limit)
    assert (await risk.evaluate("t1", risk.facts(request(amount=500)))).action == "allow"
    risk.replace(RiskRules((Rule("usd", "amount_limit", "block", max_amount=10),)))
    assert (await risk.evaluate("t2", risk.facts(request(amount=500)))).rule == "usd"


@pytest_twisted.ensureDeferred
async def test_a_blocklist_rule_compares_only_its_own_lists_though_the_payment_s_keys_are_shared(journal):
    ip_only = Rule("ip-list", "blocklist", "block", lists=("ip",))
    every_list = Rule("all-lists", "blocklist", "review")
    risk, _ = stage(journal, ip_only, every_list)
    facts = risk.facts(request(ip="192.0.2.7"))
    assert await journal.risk_block("card", facts.card, "411111******1111", "operator alice")
    verdict = await risk.evaluate("t1", facts)
    assert (verdict.rule, verdict.matches[0]["seen"]) == ("all-lists", {"list": "card", "entry": "411111******1111"})
    assert await journal.risk_block("ip", "192.0.2.7", "192.0.2.7", "operator alice")
    assert (await risk.evaluate("t2", facts)).rule == "ip-list"


@pytest_twisted.ensureDeferred
async def test_counts_stay_exact_past_the_names_remembered(journal, monkeypatch):
    monkeypatch.setattr("switch.engine.risk.rules.NAMES_REMEMBERED", 2)
    monkeypatch.setattr("switch.engine.risk.stage.NAMES_REMEMBERED", 2)
    velocity = Rule("ip-velocity", "velocity", "block", per="ip", max_count=2, window=60.0)
    risk, _ = stage(journal, velocity)
    ips = ["192.0.2.1", "192.0.2.2", "192.0.2.3"]  # one more than the names remembered: each is forgotten
    actions = [(await risk.evaluate(f"t{i}-{ip}", risk.facts(request(ip=ip)))).action for i in range(3) for ip in ips]
    assert actions == ["allow"] * 6 + ["block"] * 3


def test_remembered_names_are_spelt_once_and_bounded():
    spelt: list[str] = []
    names = Remembered(lambda subject: spelt.append(subject) or subject.upper(), 2)
    assert [names[s] for s in ("a", "b", "a", "c", "a")] == ["A", "B", "A", "C", "A"]
    assert spelt == ["a", "b", "c", "a"] and len(names) <= 2  # "c" found it full: all were forgotten


@given(st.binary(min_size=8, max_size=32))
def test_hash_tags_never_look_like_a_card_number_to_the_journal_guard(digest):
    assert not holds_card_number(tag(digest))


@given(st.binary(max_size=64))  # a SHA-256 digest is 32 bytes; past 40 the spelling takes another way
def test_a_tag_is_base32_as_the_blocklist_has_always_stored_it(digest):
    assert tag(digest) == base64.b32encode(digest).decode().rstrip("=").lower()


@pytest_twisted.ensureDeferred
async def test_a_payment_that_fails_or_is_declined_gives_its_cumulative_counts_back(journal):
    cumulative = Rule("daily", "cumulative", "block", per="customer", max_amount=3000, window=3600.0)
    risk, now = stage(journal, cumulative)
    facts = risk.facts(request(2000, id="c-1"))
    declined = await risk.evaluate("t1", facts)
    await risk.answered(facts, declined, "declined")
    approved = await risk.evaluate("t2", facts)
    await risk.answered(facts, approved, "approved")
    assert (await risk.evaluate("t3", risk.facts(request(1001, id="c-1")))).action == "block"
    timed_out = await risk.evaluate("t4", risk.facts(request(1000, id="c-1")))
    now.advance(3960)  # its slot has slid out of the window since: giving back must not touch what came after
    fresh = await risk.evaluate("t5", risk.facts(request(2500, id="c-1")))
    await risk.answered(facts, timed_out, "timeout")
    assert fresh.action == "allow"
    verdict = await risk.evaluate("t6", risk.facts(request(501, id="c-1")))
    assert verdict.action == "block" and verdict.matches[0]["seen"]["amount"] == 2500


@pytest_twisted.ensureDeferred
async def test_a_count_slides_down_slot_by_slot_instead_of_resetting(journal):
    burst = Rule("card-burst", "velocity", "block", mode="shadow", max_count=1, window=60.0)  # slots of 6 s
    risk, now = stage(journal, burst)
    facts = risk.facts(request())

    async def in_window() -> int:  # explain counts the payment as one more and changes nothing
        matches = (await risk.explain(facts)).matches
        return matches[0]["seen"]["count"] - 1 if matches else 0

    for i in range(4):
        await risk.evaluate(f"t{i}", facts)
        now.advance(6)
    assert await in_window() == 4
    counts = []
    for _ in range(6):  # from 60 s after the first payment on
        now.advance(6 if counts else 36)
        counts.append(await in_window())
    assert counts == [4, 3, 2, 1, 0, 0]  # a window is 60 s plus at most one slot: each payment leaves on its own


def test_a_daily_counter_turns_at_midnight_in_its_time_zone_whatever_the_order_of_payments():
    """A rule keeps the last day it worked out; a payment before or after that day gets its own."""
    rule = Rule("daily", "cumulative", "block", per="customer", max_amount=5000, period="day",
                timezone="Asia/Phnom_Penh")  # UTC+7: midnight there is 17:00 UTC
    f = Facts("M100", 1000, "USD", "card", "c" * 52, None, None, None, None, customer="c-1")
    midnight_us = 1_800_000_000 * 1_000_000 - (1_800_000_000 + 7 * 3600) % 86400 * 1_000_000
    day_us = 86_400 * 1_000_000
    for now_us, start in ((midnight_us - 1, midnight_us - day_us), (midnight_us, midnight_us),
                          (midnight_us + day_us - 1, midnight_us), (midnight_us - 1, midnight_us - day_us),
                          (midnight_us + day_us, midnight_us + day_us)):
        counter = rule.counter(f, now_us)
        assert counter is not None
        assert (counter.start, counter.since, counter.expires) == (start, start, start + day_us)
        assert counter.name.startswith("daily:sum:customer:")
