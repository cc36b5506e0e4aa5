"""The risk stage end to end: rules from the TOML config, JSON answers on the socket, what the bank
received, journal rows and /metrics; counters across a restart and under concurrency; reload."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from prometheus_client import CollectorRegistry
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred, gatherResults

from switch.app import Switch
from switch.ops.config import load_config
from tests.e2e.harness import Env, authorize, start_env, stop_env
from tests.e2e.test_notifications import subscriber
from tests.e2e.test_saf_cli import kswitch

BIN_TABLE = Path(__file__).resolve().parents[2] / "config" / "bin-countries.csv"
VISA, DECLINING, BLOCKED = "4111111111111111", "4000000000000002", "4000000000000259"


def rules(*bodies: str) -> str:
    return f'\n[risk]\nbin_table = "{BIN_TABLE}"\n' + "".join(f"\n[[risk.rules]]\n{b.strip()}\n" for b in bodies)


BLOCKLIST = """
name = "blocklist"
kind = "blocklist"
action = "block"
cards = ["4000000000000259"]
bins = ["55555555"]
ips = ["198.51.100.0/24", "203.0.113.9"]
devices = ["dev-bad"]
emails = ["Fraud@Example.com"]
customers = ["c-bad"]
"""


async def risk_env(tmp_path: Path, *bodies: str) -> Env:
    return await start_env(tmp_path, extra_config=rules(*bodies))


def sample(env: Env, name: str, **labels: str) -> float:
    return env.registry.get_sample_value(name, labels) or 0.0


def assert_blocked(answer: dict[str, Any], rule: str) -> None:
    assert answer["ok"], answer
    assert (answer["status"], answer["reason"], answer["risk"]) == (
        "declined", "risk_declined", {"rule": rule, "action": "block"})
    assert answer["response_code"] is None and answer["rrn"] is None


@pytest.mark.parametrize(("pan", "customer"), [
    (BLOCKED, None),
    ("5555555555554444", None),  # its 8-digit BIN is listed
    (VISA, {"ip": "198.51.100.77"}),
    (VISA, {"ip": "203.0.113.9"}),
    (VISA, {"device_id": "dev-bad"}),
    (VISA, {"email": "fraud@example.COM"}),
    (VISA, {"id": "c-bad"}),
])
@pytest_twisted.ensureDeferred
async def test_blocklist_blocks_before_anything_is_sent(tmp_path, pan, customer):
    env = await risk_env(tmp_path, BLOCKLIST)
    try:
        c = await env.connect()
        extra = {"customer": customer} if customer else {}
        answer = await c.call(authorize(1, pan=pan, **extra))
        assert_blocked(answer, "blocklist")
        assert sum(s.received["0200"] for s in env.sims.values()) == 0, "no bank saw it"
        txn = await env.journal.get_transaction(answer["txn_id"])
        assert (txn.status.value, txn.reason) == ("declined", "risk_declined")
        status = await c.call({"id": 2, "op": "status", "txn_id": answer["txn_id"]})
        assert status["risk"]["action"] == "block" and status["risk"]["rule"] == "blocklist"
        assert status["risk"]["matches"][0]["kind"] == "blocklist"
        assert sample(env, "kswitch_risk_rule_matches_total", rule="blocklist", action="block", mode="enforce") == 1
        ok = await c.call(authorize(3, customer={"ip": "198.51.101.1", "device_id": "dev-good"}))
        assert ok["status"] == "approved" and "risk" not in ok
    finally:
        await stop_env(env)


AMOUNT = """
name = "m100-max"
kind = "amount_limit"
action = "block"
merchants = ["M100"]
currencies = ["USD"]
max_amount = 500000
"""


@pytest_twisted.ensureDeferred
async def test_amount_limit_per_merchant_and_currency(tmp_path):
    env = await risk_env(tmp_path, AMOUNT)
    try:
        c = await env.connect()
        assert (await c.call(authorize(1, amount=500000)))["status"] == "approved"
        assert_blocked(await c.call(authorize(2, amount=500001)), "m100-max")
        assert (await c.call(authorize(3, amount=500001, currency="EUR")))["reason"] != "risk_declined"
        assert env.sims["bank_a"].received["0200"] == 2
    finally:
        await stop_env(env)


VELOCITY = """
name = "card-velocity"
kind = "velocity"
action = "block"
per = "card"
max_count = 10
window = 60
"""


@pytest_twisted.ensureDeferred
async def test_velocity_blocks_the_eleventh_authorization_of_a_card_in_a_minute(tmp_path):
    env = await risk_env(tmp_path, VELOCITY)
    try:
        c = await env.connect()
        for i in range(10):
            assert (await c.call(authorize(i, amount=100)))["status"] == "approved"
        assert_blocked(await c.call(authorize(10, amount=100)), "card-velocity")
        assert (await c.call(authorize(11, pan="5555555555554444")))["status"] == "approved"  # another card
        assert env.sims["bank_a"].received["0200"] == 10
        decision = await env.journal.risk_decision((await c.call(authorize(12, amount=100)))["txn_id"])
        assert decision["matches"][0]["seen"] == {"count": 12}
    finally:
        await stop_env(env)


CARD_TESTING = """
name = "card-testing"
kind = "card_testing"
action = "block"
per = "card"
declines = 3
window = 600
hold = 1800
"""


@pytest_twisted.ensureDeferred
async def test_card_testing_guard_holds_a_card_after_three_bank_declines(tmp_path):
    env = await risk_env(tmp_path, CARD_TESTING)
    try:
        c = await env.connect()
        for i in range(3):
            answer = await c.call(authorize(i, pan=DECLINING))
            assert (answer["status"], answer["reason"]) == ("declined", "do_not_honour")
        assert_blocked(await c.call(authorize(3, pan=DECLINING)), "card-testing")
        assert env.sims["bank_a"].received["0200"] == 3
        assert (await c.call(authorize(4)))["status"] == "approved"  # other cards go on
        held = await env.journal.risk_blocklist()
        assert [(e.kind, e.shown, e.source) for e in held] == [
            ("hold:card-testing:card", "400000******0002", "rule card-testing")]
    finally:
        await stop_env(env)


@pytest_twisted.ensureDeferred
async def test_issuing_country_from_the_bin_table(tmp_path):
    env = await risk_env(tmp_path, 'name = "no-jp"\nkind = "country"\naction = "block"\ndeny_countries = ["JP"]')
    try:
        c = await env.connect()
        assert_blocked(await c.call(authorize(1, pan="5555555555554444")), "no-jp")  # 555555 is JP in the table
        assert (await c.call(authorize(2, pan="5105105105105100")))["status"] == "approved"  # 5: US
    finally:
        await stop_env(env)


DUPLICATE = """
name = "same-twice"
kind = "duplicate"
action = "review"
window = 300
"""


@pytest_twisted.ensureDeferred
async def test_duplicate_guard_reviews_a_repeat_without_idempotency_key_and_pushes_payment_review(tmp_path):
    env = await risk_env(tmp_path, DUPLICATE)
    try:
        inbox, _ = await subscriber(env)
        first = await inbox.call(authorize(1))
        assert first["status"] == "approved" and "risk" not in first
        again = await inbox.call(authorize(2))
        assert again["status"] == "approved" and again["risk"] == {"rule": "same-twice", "action": "review"}
        push = await inbox.push()
        assert push["event"] == "payment.review" and push["txn_id"] == again["txn_id"]
        assert push["data"]["rule"] == "same-twice"
        keyed = await inbox.call(authorize(3, idempotency_key="k-3"))
        assert "risk" not in keyed  # a retry with a key is the idempotency layer's business
        assert env.sims["bank_a"].received["0200"] == 3
    finally:
        await stop_env(env)


@pytest_twisted.ensureDeferred
async def test_shadow_rule_is_counted_and_journalled_without_effect(tmp_path):
    env = await risk_env(tmp_path, AMOUNT.replace('action = "block"', 'action = "block"\nmode = "shadow"'))
    try:
        c = await env.connect()
        answer = await c.call(authorize(1, amount=600000))
        assert answer["status"] == "approved" and "risk" not in answer
        decision = await env.journal.risk_decision(answer["txn_id"])
        assert decision["action"] == "allow" and decision["rule"] is None
        assert decision["matches"] == [{"rule": "m100-max", "kind": "amount_limit", "action": "block",
                                        "mode": "shadow", "seen": {"amount": 600000}}]
        assert sample(env, "kswitch_risk_rule_matches_total", rule="m100-max", action="block", mode="shadow") == 1
        assert sample(env, "kswitch_risk_evaluations_total", action="allow") == 1
    finally:
        await stop_env(env)


@pytest_twisted.ensureDeferred
async def test_allow_stops_evaluation_and_step_up_acts_as_otherwise(tmp_path):
    allow = 'name = "vip"\nkind = "blocklist"\naction = "allow"\ncustomers = ["c-vip"]'
    step_up = AMOUNT.replace('action = "block"', 'action = "step_up"\notherwise = "review"')
    env = await risk_env(tmp_path, allow, step_up)
    try:
        c = await env.connect()
        vip = await c.call(authorize(1, amount=600000, customer={"id": "c-vip"}))
        assert vip["status"] == "approved" and vip["risk"] == {"rule": "vip", "action": "allow"}
        other = await c.call(authorize(2, pan="5555555555554444", amount=600000, customer={"id": "c-1"}))
        assert other["status"] == "approved" and other["risk"] == {"rule": "m100-max", "action": "review"}
    finally:
        await stop_env(env)


CUMULATIVE = """
name = "customer-daily"
kind = "cumulative"
action = "block"
per = "customer"
max_amount = 5000
period = "day"
timezone = "Asia/Phnom_Penh"
"""


@pytest_twisted.ensureDeferred
async def test_concurrent_payments_never_exceed_a_cumulative_limit(tmp_path):
    env = await risk_env(tmp_path, CUMULATIVE)
    try:
        clients = [await env.connect() for _ in range(4)]
        before = env.sims["bank_a"].balance(VISA)
        calls = [clients[i % 4].call(authorize(i, amount=1000, customer={"id": "c-7"})) for i in range(12)]
        answers = await gatherResults([ensureDeferred(call) for call in calls])
        approved = [a for a in answers if a["status"] == "approved"]
        assert len(approved) == 5
        assert all(a["risk"] == {"rule": "customer-daily", "action": "block"} for a in answers if a not in approved)
        assert env.sims["bank_a"].balance(VISA) == before - 5000
    finally:
        await stop_env(env)


@pytest_twisted.ensureDeferred
async def test_counters_survive_a_restart(tmp_path):
    env = await risk_env(tmp_path, VELOCITY.replace("max_count = 10", "max_count = 2"))
    try:
        c = await env.connect()
        for i in range(2):
            assert (await c.call(authorize(i)))["status"] == "approved"
        await env.switch.stop()
        env.clients.clear()
        env.registry = CollectorRegistry()
        env.switch = Switch(load_config(tmp_path / "kswitch.toml"), reactor, env.registry)
        await env.switch.start()
        await gatherResults([bank.connector.when_ready() for bank in env.switch.banks.values()])
        c = await env.connect()
        assert_blocked(await c.call(authorize(2)), "card-velocity")
    finally:
        await stop_env(env)


@pytest_twisted.ensureDeferred
async def test_reload_takes_a_good_file_and_keeps_the_rules_when_the_file_is_bad(tmp_path):
    env = await risk_env(tmp_path, AMOUNT)
    try:
        c = await env.connect()
        config = tmp_path / "kswitch.toml"
        text = config.read_text()
        config.write_text(text.replace("max_amount = 500000", "max_amount = 1000"))
        assert env.switch.reload_risk()
        assert_blocked(await c.call(authorize(1, amount=1001)), "m100-max")
        config.write_text(text.replace("max_amount = 500000", "max_amount = 1000\nmax_count = 3"))
        assert not env.switch.reload_risk()  # an amount_limit takes no max_count: the old rules stay
        assert_blocked(await c.call(authorize(2, amount=1001)), "m100-max")
        assert (await c.call(authorize(3, amount=1000)))["status"] == "approved"
    finally:
        await stop_env(env)


@pytest_twisted.ensureDeferred
async def test_blocklist_cli_beside_a_running_switch_and_explain(tmp_path):
    env = await risk_env(tmp_path, BLOCKLIST, AMOUNT, CARD_TESTING)
    config = str(tmp_path / "kswitch.toml")
    try:
        c = await env.connect()
        code, out, err = await kswitch("risk", "block", "card", VISA, "--operator", "alice", "--config", config)
        assert (code, out.strip()) == (0, "card 411111******1111 blocked"), err
        assert_blocked(await c.call(authorize(1)), "blocklist")
        code, out, _ = await kswitch("risk", "block", "ip", "192.0.2.1", "--operator", "bob", "--config", config)
        assert code == 0
        code, out, _ = await kswitch("risk", "block", "email", "Mallory@Example.org", "--operator", "bob",
                                     "--config", config)
        assert (code, out.strip()) == (0, "email M***@Example.org blocked")
        mallory = await c.call(authorize(5, pan="5555555555554444", customer={"email": "mallory@example.ORG"}))
        assert_blocked(mallory, "blocklist")
        code, out, _ = await kswitch("risk", "list", "--config", config)
        assert code == 0 and VISA not in out and "mallory" not in out.lower()
        assert [line.split()[:4] for line in out.splitlines()] == [
            ["card", "411111******1111", "operator", "alice"], ["email", "M***@Example.org", "operator", "bob"],
            ["ip", "192.0.2.1", "operator", "bob"]]
        code, out, _ = await kswitch("risk", "explain", "--pan", VISA, "--amount", "600000", "--currency", "USD",
                                     "--merchant", "M100", "--config", config)
        assert code == 0 and VISA not in out
        lines = out.splitlines()
        assert lines[0].startswith("411111******1111 600000 USD at M100 (issuing country KH)")
        assert "MATCH" in lines[1] and lines[1].split()[0] == "blocklist"
        assert "MATCH" in lines[2] and lines[2].split()[0] == "m100-max"
        assert lines[3].split()[0] == "card-testing" and lines[3].endswith("no match")
        assert lines[-1] == "decision: block by blocklist"
        code, out, _ = await kswitch("risk", "unblock", "card", VISA, "--config", config)
        assert (code, out.strip()) == (0, "card 411111******1111 unblocked")
        assert (await c.call(authorize(2)))["status"] == "approved"
        code, _, err = await kswitch("risk", "unblock", "card", VISA, "--config", config)
        assert (code, err.strip()) == (2, "kswitch: card 411111******1111 is not on the blocklist")
        code, _, err = await kswitch("risk", "block", "card", "4111111111111112", "--operator", "a", "--config", config)
        assert code == 2 and "Luhn" in err
    finally:
        await stop_env(env)


@pytest_twisted.ensureDeferred
async def test_the_demo_rules_work_as_the_readme_says(tmp_path):
    demo = (Path(__file__).resolve().parents[2] / "config" / "kswitch.toml").read_text()
    env = await start_env(tmp_path, extra_config=demo[demo.index("\n[risk]"):])
    try:
        c = await env.connect()
        assert_blocked(await c.call(authorize(1, pan=BLOCKED)), "blocklist")
        assert_blocked(await c.call(authorize(2, amount=500001)), "m100-max-per-payment")
        for i in range(3):
            assert (await c.call(authorize(10 + i, pan=DECLINING)))["reason"] == "do_not_honour"
        assert_blocked(await c.call(authorize(13, pan=DECLINING)), "card-testing")
        answers = [await c.call(authorize(20 + i, amount=100, customer={"ip": "203.0.113.8"})) for i in range(11)]
        assert [a["status"] for a in answers] == ["approved"] * 10 + ["declined"]
        assert answers[-1]["risk"] == {"rule": "card-velocity", "action": "block"}
        more = [await c.call(authorize(40 + i, pan=card, amount=100, customer={"ip": "203.0.113.8"}))
                for i, card in enumerate(["5555555555554444"] * 10 + ["5105105105105100"])]
        # the blocked 11th stopped at card-velocity, so the last is the IP's 21st counted: the shadow rule's match
        assert [a["status"] for a in more] == ["approved"] * 11 and all("risk" not in a for a in more)
        assert sample(env, "kswitch_risk_rule_matches_total", rule="ip-velocity-watch", action="review",
                      mode="shadow") == 1
        decision = await env.journal.risk_decision(more[-1]["txn_id"])
        assert decision["action"] == "allow" and decision["matches"][0]["seen"] == {"count": 21}
        assert env.sims["bank_a"].received["0200"] == 13
        # above 2,000.00 USD: bank_a cannot ask the customer to confirm, so it is sent flagged (the card is expired)
        big = await c.call(authorize(60, pan="4000000000000069", amount=250000))
        assert (big["reason"], big["risk"]) == ("expired_card", {"rule": "m100-step-up", "action": "review"})
    finally:
        await stop_env(env)


@pytest_twisted.ensureDeferred
async def test_without_rules_there_is_no_risk_stage(tmp_path):
    env = await start_env(tmp_path)
    try:
        c = await env.connect()
        answer = await c.call(authorize(1, pan=BLOCKED))
        assert answer["reason"] != "risk_declined" and "risk" not in answer
        assert await env.journal.risk_decision(answer["txn_id"]) is None
        assert sample(env, "kswitch_risk_evaluations_total", action="allow") == 0
    finally:
        await stop_env(env)
