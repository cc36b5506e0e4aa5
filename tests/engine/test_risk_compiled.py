"""The compiled screen (`switch.engine.risk.compiled`) decides as the typed rules say.

`risk_golden.json` holds, for seeded random rule sets (every kind, mode, action and scope, lists in
the config and in the journal, sliding and daily windows) and seeded sequences of payments, bank
declines, operator blocks and clock jumps, every verdict and every `explain` the stage gave before
its rules were compiled, when each kind was a function interpreting a `Rule`.  The compiled stage must
give the same, on SQLite (its writer's memory) and on PostgreSQL (rows read and locked per payment).
"""

from __future__ import annotations

import ipaddress
import json
import random
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from prometheus_client import CollectorRegistry
from twisted.internet.task import Clock as ReactorClock

from switch.engine.risk import Facts, RiskRules, RiskStage, Rule, Scope, Verdict
from switch.engine.risk.compiled import compile_guess
from tests.journal.conftest import backend, clock, config, journal, key_files, pg_schema, registry  # noqa: F401

GOLDEN = Path(__file__).with_name("risk_golden.json")
CARDS = ["c" * 51 + x for x in "abcde"]


def _rule(rnd: random.Random, i: int) -> Rule:
    kind = rnd.choice(["blocklist", "amount_limit", "cumulative", "velocity", "card_testing", "country", "duplicate"])
    kw: dict[str, Any] = dict(name=f"r{i}", kind=kind, action=rnd.choice(["allow", "block", "review", "step_up"]),
                              mode=rnd.choice(["enforce", "enforce", "shadow"]),
                              otherwise=rnd.choice(["block", "review", "allow"]))
    if rnd.random() < 0.2:
        kw["scope"] = Scope(merchants=frozenset({"M1"}))
    if kind == "blocklist":
        kw["lists"] = tuple(rnd.sample(["card", "bin", "ip", "device", "email", "customer"], rnd.randint(1, 6)))
        kw["entries"] = frozenset(rnd.sample([("card", CARDS[0]), ("bin", "411111"), ("ip", "10.0.0.1"),
                                              ("device", "d1"), ("customer", "u1"), ("bin", "41111111")],
                                             rnd.randint(0, 3)))
        if rnd.random() < 0.3:
            kw["networks"] = (ipaddress.ip_network("10.0.0.0/30"),)
    elif kind == "amount_limit":
        kw["max_amount"], kw["min_amount"] = rnd.choice([None, 500, 900]), rnd.choice([None, 150])
    elif kind == "cumulative":
        kw["per"] = rnd.choice(["card", "customer", "merchant", "ip"])
        kw["max_count"] = rnd.choice([None, 3, 5])
        kw["max_amount"] = rnd.choice([None, 2000]) if kw["max_count"] else 2000
        kw["window"] = rnd.choice([60.0, 600.0])
        if rnd.random() < 0.3:
            kw["period"], kw["timezone"] = "day", rnd.choice(["UTC", "Asia/Tokyo"])
    elif kind == "velocity":
        kw["per"], kw["max_count"] = rnd.choice(["card", "ip", "device", "email"]), rnd.choice([2, 4])
        kw["window"] = rnd.choice([60.0, 300.0])
    elif kind == "card_testing":
        kw["per"], kw["declines"], kw["window"] = rnd.choice(["card", "ip"]), rnd.choice([1, 2]), 600.0
        kw["hold"] = rnd.choice([120.0, 900.0])
    elif kind == "country":
        kw["deny"] = frozenset(rnd.sample(["US", "JP", "KH"], rnd.randint(0, 2)))
        kw["allow"] = rnd.choice([None, frozenset({"US", "KH"})])
        kw["unknown_matches"] = rnd.random() < 0.5
    else:
        kw["window"] = rnd.choice([60.0, 600.0])
    return Rule(**kw)


def _facts(rnd: random.Random) -> Facts:
    return Facts(rnd.choice(["M1", "M2"]), rnd.choice([100, 200, 600, 1000]), "USD", "card", rnd.choice(CARDS),
                 "411111******1111", rnd.choice(["411111", "422222", None]), rnd.choice(["41111111", None]),
                 rnd.choice(["US", "JP", None]), rnd.choice(["u1", "u2", None]),
                 rnd.choice(["10.0.0.1", "10.0.0.9", "2001:db8::1", None]), rnd.choice(["d1", "d2", None]),
                 rnd.choice(["e" * 52, None]), rnd.choice([None, None, "k1"]), None)


async def play(journal: Any, seed: int) -> list[list[Any]]:
    """What the stage answered along seeded random steps (the golden file's format)."""
    rnd = random.Random(seed)
    now = ReactorClock()
    now.advance(1_800_000_000 + rnd.randint(0, 86400))
    stage = RiskStage(now, journal, RiskRules(tuple(_rule(rnd, i) for i in range(rnd.randint(1, 6)))),
                      CollectorRegistry())
    out: list[list[Any]] = []
    for n in range(60):
        step, f = rnd.random(), _facts(rnd)
        if step < 0.6:
            v = await stage.evaluate(f"t{n}", f, step_up=rnd.random() < 0.5)
            out.append(["eval", v.action, v.rule, list(v.matches), [list(r) for r in v.reserved], v.journal_as])
            if rnd.random() < 0.7:
                await stage.answered(f, v, rnd.choice(["approved", "declined", "declined", "failed"]))
        elif step < 0.75:
            v = await stage.explain(f)
            out.append(["explain", v.action, v.rule, list(v.matches)])
        elif step < 0.85:
            await stage.answered(f, Verdict("allow", None, ()), "declined")
        elif step < 0.9:
            kind, value = rnd.choice([("card", CARDS[1]), ("ip", "10.0.0.9"), ("bin", "422222"), ("device", "d2")])
            if rnd.random() < 0.5:
                await journal.risk_block(kind, value, "shown", "op")
            else:
                await journal.risk_unblock(kind, value)
        else:
            now.advance(rnd.choice([1, 30, 61, 700, 3600, 86400]))
    return json.loads(json.dumps(out))  # tuples as lists, as the golden file has them


@pytest.mark.parametrize("seed", range(1, 13))
@pytest_twisted.ensureDeferred
async def test_the_compiled_stage_decides_as_the_interpreted_rules_did(journal, seed):
    expected = json.loads(GOLDEN.read_text())[str(seed)]
    assert await play(journal, seed) == expected


def test_every_seed_of_the_golden_file_has_verdicts_of_each_action():
    """The golden file is worth comparing against: its runs block, review, step up and allow."""
    runs = json.loads(GOLDEN.read_text()).values()
    actions = {step[1] for run in runs for step in run if step[0] == "eval"}
    kinds = {m["kind"] for run in runs for step in run for m in step[3]}
    assert actions == {"allow", "block", "review", "step_up"}
    assert kinds == {"blocklist", "amount_limit", "cumulative", "velocity", "card_testing", "country", "duplicate"}


@pytest_twisted.ensureDeferred
async def test_a_rule_name_is_data_in_the_compiled_screen_never_code(journal):
    name = 'x", "seen": 1}); raise SystemExit("ran")  # '
    stage = RiskStage(ReactorClock(), journal, RiskRules((Rule(name, "amount_limit", "block", max_amount=5),)),
                      CollectorRegistry())
    facts = Facts("M100", 10, "USD", "card", "c" * 52, None, None, None, None)
    verdict = await stage.evaluate("t1", facts)
    assert (verdict.action, verdict.rule) == ("block", name)
    assert name not in stage.rules.plan(facts).screen.__doc__


def test_only_rules_that_read_nothing_from_the_journal_can_be_guessed_before_it_is_read():
    with pytest.raises(ValueError, match="reads the journal"):
        compile_guess([Rule("v", "velocity", "block", max_count=1)])
