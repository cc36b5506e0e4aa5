"""Notifications end to end: events from the journal pushed to subscribed web-tier connections,
acknowledged, redelivered after a reconnect, in order, and only to clients allowed the merchant."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import CancelledError
from twisted.internet.task import deferLater

from tests.e2e.harness import Env, LineClient, authorize, eventually

OTHER_TOKEN = "e2e-token-0123456789-other"
PUSH_WAIT = 10.0


class Inbox:
    """Splits a connection's lines into answers (they have an ``id``) and pushes (they do not)."""

    def __init__(self, client: LineClient) -> None:
        self.client = client
        self.pushes: list[dict[str, Any]] = []
        self._answers: dict[Any, dict[str, Any]] = {}

    async def _next_line(self, timeout: float) -> dict[str, Any] | None:
        line = self.client.answers.get()
        line.addTimeout(timeout, reactor)
        try:
            return await line
        except CancelledError:
            return None

    async def call(self, request: dict[str, Any]) -> dict[str, Any]:
        self.client.send(request)
        while request["id"] not in self._answers:
            line = await self._next_line(PUSH_WAIT)
            assert line is not None, f"no answer to {request}"
            self._sort(line)
        return self._answers.pop(request["id"])

    async def push(self, timeout: float = PUSH_WAIT) -> dict[str, Any]:
        while not self.pushes:
            line = await self._next_line(timeout)
            assert line is not None, "no push arrived"
            self._sort(line)
        return self.pushes.pop(0)

    async def quiet(self, wait: float = 0.6) -> list[dict[str, Any]]:
        """Whatever is pushed within ``wait`` seconds (several poll intervals)."""
        await deferLater(reactor, wait, lambda: None)
        await self.call({"id": "quiet", "op": "ping"})
        pushes, self.pushes = self.pushes, []
        return pushes

    def _sort(self, line: dict[str, Any]) -> None:
        if "id" in line:
            self._answers[line["id"]] = line
        else:
            self.pushes.append(line)


async def subscriber(env: Env, client: str = "web-1", token: str | None = None, **fields: Any) -> tuple[Inbox, dict]:
    kwargs = {"client": client} if token is None else {"client": client, "token": token}
    inbox = Inbox(await env.connect(**kwargs))
    answer = await inbox.call({"id": "sub", "op": "subscribe", **fields})
    assert answer["ok"], answer
    return inbox, answer


async def disconnect(inbox: Inbox) -> None:
    inbox.client.transport.loseConnection()
    await inbox.client.closed


async def reversed_payment(env: Env, i: int = 1) -> dict[str, Any]:
    """A payment the bank never answers, so the switch answers timeout and reverses it (event payment.reversed)."""
    bank = env.sims["bank_a"]
    bank.set_faults(drop_ratio=1.0)
    payer = await env.connect()
    answer = await payer.call(authorize(i))
    assert answer["status"] == "timeout"
    bank.set_faults(drop_ratio=0.0)
    return answer


def sample(env: Env, name: str, **labels: str) -> float:
    return env.registry.get_sample_value(name, labels) or 0.0


@pytest_twisted.ensureDeferred
async def test_unacknowledged_event_is_redelivered_after_reconnect_until_acknowledged(fast):
    first, _ = await subscriber(fast)
    payment = await reversed_payment(fast)
    push = await first.push()
    assert push["event"] == "payment.reversed" and push["txn_id"] == payment["txn_id"]
    assert push["merchant_id"] == "M100" and isinstance(push["event_id"], str) and "id" not in push
    assert push["created_at"].endswith("Z") and push["data"]["reversal_response_code"] == "00"
    await disconnect(first)

    second, answer = await subscriber(fast)
    assert answer == {"id": "sub", "ok": True, "subscribed": True, "merchant_ids": ["M100"], "pending": 1}
    again = await second.push()
    assert again == push
    assert sample(fast, "kswitch_notify_redelivered_total", event="payment.reversed") == 1
    ack = await second.call({"id": "a", "op": "ack", "event_id": push["event_id"]})
    assert ack == {"id": "a", "ok": True, "acknowledged": [push["event_id"]]}
    twice = await second.call({"id": "b", "op": "ack", "event_ids": [push["event_id"]]})
    assert twice["ok"]
    assert sample(fast, "kswitch_notify_acked_total") == 1
    await disconnect(second)

    third, answer = await subscriber(fast)
    assert answer["pending"] == 0
    assert await third.quiet() == []
    assert sample(fast, "kswitch_notify_subscribers") == 1


@pytest_twisted.ensureDeferred
async def test_events_arrive_in_event_id_order_late_responses_and_reversals(fast):
    inbox, _ = await subscriber(fast, merchant_ids=["M100"])
    bank = fast.sims["bank_a"]
    bank.set_faults(delay=1.0)  # the bank answers after the switch gave up: late response, then reversal
    payer = await fast.connect()
    for i in (1, 2):
        payer.send(authorize(i))
    answers = [await payer.answers.get() for _ in (1, 2)]
    assert {a["status"] for a in answers} == {"timeout"}
    late = [await inbox.push() for _ in (1, 2)]
    assert {p["event"] for p in late} == {"payment.late_response"}
    assert {p["txn_id"] for p in late} == {a["txn_id"] for a in answers}
    assert all(p["data"]["approved"] is True and p["status"] == p["data"]["status"] for p in late)
    bank.set_faults(delay=0.0)
    reversals = [await inbox.push() for _ in (1, 2)]
    assert {p["event"] for p in reversals} == {"payment.reversed"}
    pushes = late + reversals
    ids = [int(p["event_id"]) for p in pushes]
    assert ids == sorted(ids) and len(set(ids)) == 4
    journal = [e.event_id for e in await fast.journal.events_after(["M100"], 0)]
    assert ids == journal
    ack = await inbox.call({"id": "a", "op": "ack", "event_ids": [p["event_id"] for p in pushes]})
    assert ack["ok"] and sorted(ack["acknowledged"], key=int) == [str(i) for i in ids]


@pytest_twisted.ensureDeferred
async def test_a_client_never_sees_events_of_merchants_it_may_not_use(fast):
    mine, _ = await subscriber(fast)
    other, answer = await subscriber(fast, client="other", token=OTHER_TOKEN)
    assert answer["merchant_ids"] == ["M200"]
    payment = await reversed_payment(fast)
    push = await mine.push()
    assert push["txn_id"] == payment["txn_id"]
    assert await other.quiet() == []
    stolen = await other.call({"id": "a", "op": "ack", "event_id": push["event_id"]})
    assert (stolen["ok"], stolen["error"]["code"], stolen["error"]["field"]) == (False, "not_found", "event_id")
    await disconnect(other)
    other, answer = await subscriber(fast, client="other", token=OTHER_TOKEN)
    assert answer["pending"] == 0 and await other.quiet() == []


@pytest_twisted.ensureDeferred
async def test_dead_letter_is_pushed(fast):
    inbox, _ = await subscriber(fast)
    fast.sims["bank_a"].set_faults(drop_ratio=1.0)
    payer = await fast.connect()
    payment = await payer.call(authorize(1))
    assert payment["status"] == "timeout"
    push = await inbox.push(timeout=20)
    assert push["event"] == "saf.dead_letter" and push["txn_id"] == payment["txn_id"]
    assert push["data"]["attempts"] == 5 and push["data"]["kind"] == "reversal"


@pytest_twisted.ensureDeferred
async def test_subscribe_and_ack_errors(env):
    stranger = Inbox(await env.connect(hello=False))
    early = await stranger.call({"id": 1, "op": "subscribe"})
    assert early["error"]["code"] == "unauthenticated"
    inbox = Inbox(await env.connect())
    forbidden = await inbox.call({"id": 2, "op": "subscribe", "merchant_ids": ["M100", "M200"]})
    assert (forbidden["error"]["code"], forbidden["error"]["field"]) == ("forbidden", "merchant_ids")
    assert "M200" in forbidden["error"]["message"]
    unknown = await inbox.call({"id": 3, "op": "ack", "event_id": "999999"})
    assert (unknown["error"]["code"], unknown["error"]["field"]) == ("not_found", "event_id")
    for bad in ({"event_id": 5}, {}, {"event_id": "1", "event_ids": ["2"]}, {"event_ids": []}, {"event_ids": ["0"]}):
        answer = await inbox.call({"id": 4, "op": "ack", **bad})
        assert answer["error"]["code"] == "invalid_request", (bad, answer)
    assert (await inbox.call({"id": 5, "op": "subscribe", "merchant_ids": "M100"}))["error"]["field"] == "merchant_ids"


@pytest_twisted.ensureDeferred
async def test_subscription_ends_with_its_connection(env):
    inbox, _ = await subscriber(env)
    assert sample(env, "kswitch_notify_subscribers") == 1
    await disconnect(inbox)
    await eventually(lambda: sample(env, "kswitch_notify_subscribers") == 0)


@pytest_twisted.ensureDeferred
async def test_a_void_is_pushed_and_may_be_acknowledged_on_another_connection_of_the_client(env):
    listener, _ = await subscriber(env)
    worker = Inbox(await env.connect())
    sale = await worker.call(authorize(1))
    assert (await worker.call({"id": 2, "op": "void", "txn_id": sale["txn_id"]}))["status"] == "reversed"
    push = await listener.push()
    assert (push["event"], push["txn_id"]) == ("payment.voided", sale["txn_id"])
    assert (await worker.call({"id": 3, "op": "ack", "event_ids": [push["event_id"]]}))["ok"]
    await disconnect(listener)
    _, answer = await subscriber(env)
    assert answer["pending"] == 0
