"""The chaos test's web tier: worker threads that take orders through their whole lifecycle.

Each worker owns one socket API connection and one order at a time: a sale or a
pre-authorization, then the steps its plan draws (full or partial capture, void, one or
two refunds).  It behaves as a careful real web tier would:

* every request carries an idempotency key, chosen and kept before it is sent;
* no answer (connection lost, switch down, client timeout), ``busy`` or ``internal``:
  the identical request with the same key again, until an answer comes;
* an operation answered ``pending``, ``timeout`` or ``failed``: ask ``status`` until nothing about the
  payment is still being resolved, and only if the operation did not take effect, try it
  again as a new attempt with a new key;
* now and then a shopper double-clicks: the same operation under the same key goes out
  twice at once, on two connections (both answers are kept).

Today's switch refuses ``idempotency_key`` on capture/void/refund (an unknown field).
The worker then sends the operation without a key, records that it had to, and goes on,
so that the rest of the lifecycle is still exercised; the checks report it.

Everything the worker was told is kept on the `Order` for `tests.chaos.invariants`.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from switch.gateway.client import BlockingClient, KSwitchConnectionError, KSwitchError
from tests.crash.harness import CARDS, CLIENT, CVV, EXPIRY, MERCHANT, STORE, TOKEN
from tests.crash.webtier import WebWorkers

RETRY_PAUSE = 0.05
FAILED_PAUSE = 0.2
RESOLVE_POLL = 0.25
MAX_OP_ATTEMPTS = 3
DOUBLE_SUBMIT = 0.1  # share of operations sent twice at once under one key
CLIENT_TIMEOUT = 15.0  # above the switch's answer time (request timeout 1 s + a void's wait)


@dataclass
class Attempt:
    """One request under one idempotency key, and every answer it got."""

    op: str
    key: str | None
    fields: dict[str, Any]
    outcomes: list[str] = field(default_factory=list)  # per send: a status, "no_answer:<code>", "error:<code>"
    answer: dict[str, Any] | None = None
    error: str | None = None  # "code field: message" of a final error answer
    keyless: bool = False  # the switch refused idempotency_key; sent without it
    twin: bool = False  # the second of a double submission

    @property
    def told(self) -> str | None:
        """What this attempt's final answer said about the operation itself."""
        if self.answer is None:
            return None
        operation = self.answer.get("operation")
        if self.op in ("capture", "refund") and isinstance(operation, dict):
            return str(operation.get("status"))
        return str(self.answer.get("status"))

    @property
    def operation_id(self) -> str | None:
        operation = (self.answer or {}).get("operation")
        return operation.get("txn_id") if isinstance(operation, dict) else None

    def describe(self) -> str:
        runs: list[list[Any]] = []
        for outcome in self.outcomes:
            if runs and runs[-1][0] == outcome:
                runs[-1][1] += 1
            else:
                runs.append([outcome, 1])
        answers = ", ".join(o if n == 1 else f"{o} x{n}" for o, n in runs)
        amount = f" {self.fields['amount']}" if "amount" in self.fields else ""
        told = f" -> {self.told}" if self.told else f" -> error {self.error}" if self.error else " -> no answer"
        notes = "".join(f" ({n})" for n, on in (("keyless", self.keyless), ("double submit", self.twin)) if on)
        return f"{self.op}{amount}{notes} [{answers}]{told}"


@dataclass
class Order:
    n: int
    worker: int
    order_id: str
    pan: str
    bank: str
    capture: bool
    amount: int
    plan: list[str]
    attempts: list[Attempt] = field(default_factory=list)
    txn_id: str | None = None
    known: dict[str, Any] | None = None  # the latest answer describing the payment
    final: dict[str, Any] | None = None  # `status` after the run (filled in by the scenario)

    @property
    def kind(self) -> str:
        return "sale" if self.capture else "preauth"

    def ops(self, op: str) -> list[Attempt]:
        return [a for a in self.attempts if a.op == op]

    def describe(self) -> str:
        steps = "; ".join(a.describe() for a in self.attempts)
        return f"order {self.order_id} ({self.kind} {self.amount} on {self.pan[:6]}…{self.pan[-4:]}, " \
               f"txn {self.txn_id}): {steps}"


def draw_plan(rng: random.Random, capture: bool) -> list[str]:
    """What the shop will do after an approval: ``capture``/``capture_part``, ``void``,
    ``refund`` (the rest, amount omitted), ``refund_all`` (explicit amount), ``refund_part``."""
    r = rng.random()
    if capture:
        if r < 0.25:
            return ["refund_all"]
        if r < 0.45:
            return ["refund_part", "refund"]
        if r < 0.55:
            return ["refund_part"]
        if r < 0.70:
            return ["void"]
        return []
    if r < 0.15:
        return ["void"]
    if r < 0.30:
        return []
    steps = ["capture" if r < 0.65 else "capture_part"]
    r = rng.random()
    if r < 0.25:
        steps.append("refund")
    elif r < 0.40:
        steps += ["refund_part", "refund"]
    return steps


class LifecycleWebTier(WebWorkers):
    """``workers`` threads, each a web-tier request handler with its own connection."""

    THREAD_NAME = "chaos-web"

    def __init__(self, api_sock: Path, seed: int, workers: int, think: float = 0.01) -> None:
        super().__init__(api_sock, seed, workers, think)
        self.orders: list[Order] = []
        self._second: dict[int, BlockingClient] = {}  # each worker's second connection, for double submissions

    def snapshot(self) -> list[Order]:
        with self._lock:
            return list(self.orders)

    def answered(self) -> int:
        with self._lock:
            return sum(a.answer is not None for o in self.orders for a in o.attempts)

    # -- one worker ------------------------------------------------------------------------

    def _run(self, worker: int) -> None:
        rng = random.Random(self.seed * 1000 + worker)
        client = self._client()
        self._second[worker] = self._client()
        try:
            while not self._stop_new.is_set():
                if self.think:
                    time.sleep(rng.uniform(0, self.think))
                self._order(client, self._new_order(worker, rng), rng)
        except BaseException as e:  # noqa: BLE001 - reported by the scenario
            self.crashes.append(f"worker {worker}: {type(e).__name__}: {e}")
        finally:
            client.close()
            self._second[worker].close()

    def _client(self) -> BlockingClient:
        return BlockingClient(unix_path=str(self.api_sock), client=CLIENT, token=TOKEN, timeout=CLIENT_TIMEOUT)

    def _new_order(self, worker: int, rng: random.Random) -> Order:
        card = rng.choices(CARDS, weights=[c.weight for c in CARDS])[0]
        capture = rng.random() < 0.5
        with self._lock:
            self._next += 1
            order = Order(
                n=self._next, worker=worker, order_id=f"chaos-{self.seed}-{self._next:05d}", pan=card.pan,
                bank=card.bank, capture=capture, amount=rng.randint(100, 50_000), plan=draw_plan(rng, capture),
            )
            self.orders.append(order)
        return order

    def _order(self, client: BlockingClient, order: Order, rng: random.Random) -> None:
        auth = Attempt("authorize", f"{order.order_id}-auth", dict(
            merchant_id=MERCHANT, store_id=STORE, order_id=order.order_id, amount=order.amount, currency="USD",
            instrument={"type": "card", "pan": order.pan, "expiry": EXPIRY, "cvv": CVV}, capture=order.capture,
        ))
        answer = self._send(client, order, auth)
        if answer is None:
            return
        order.txn_id = answer["txn_id"]
        if answer["status"] != "approved":
            return
        for index, step in enumerate(order.plan):
            if self._stop_new.is_set() or not self._step(client, order, index, step, rng):
                return

    def _step(self, client: BlockingClient, order: Order, index: int, step: str, rng: random.Random) -> bool:
        """One planned operation, tried again as a new attempt while it did not take effect."""
        op = step.split("_")[0]
        for number in range(1, MAX_OP_ATTEMPTS + 1):
            before = dict(order.known or {})
            fields: dict[str, Any] = {"txn_id": order.txn_id}
            amount = _step_amount(step, before, rng)
            if step == "refund_part" and amount is None:
                return True  # 1 (or nothing) left: no part to refund; the plan's next "refund" takes the rest
            if amount is not None:
                fields["amount"] = amount
            attempt = Attempt(op, f"{order.order_id}-{index}-{op}-{number}", fields)
            twin = self._double_submit(order, attempt) if number == 1 and rng.random() < DOUBLE_SUBMIT else None
            answer = self._send(client, order, attempt)
            if twin is not None:
                twin.join()
            if answer is None:
                return False
            told = attempt.told
            if op == "void" or told == "approved":
                return True
            if told == "declined":
                return False
            now = self._resolve(client, order)
            if now is None or _took_effect(op, before, now):
                return now is not None
            if op == "capture" and now.get("status") != "approved":
                return False  # nothing left to capture (e.g. reversed)
            time.sleep(FAILED_PAUSE)
        return False

    def _double_submit(self, order: Order, attempt: Attempt) -> threading.Thread:
        """The same request under the same key, sent at the same time on the worker's second connection."""
        twin = Attempt(attempt.op, attempt.key, dict(attempt.fields), twin=True)
        thread = threading.Thread(target=self._send, args=(self._second[order.worker], order, twin), daemon=True)
        thread.start()
        return thread

    def _resolve(self, client: BlockingClient, order: Order, wait: float = 8.0) -> dict[str, Any] | None:
        """``status`` until the payment and its operations are settled; None if they still are not."""
        deadline = time.monotonic() + wait
        while not self._abort.is_set():
            probe = Attempt("status", None, {"txn_id": order.txn_id})
            answer = self._send(client, order, probe, record=False)
            if answer is None:
                return None
            if not _unsettled(answer):
                return answer
            if time.monotonic() > deadline:
                return None
            time.sleep(RESOLVE_POLL)
        return None

    def _send(self, client: BlockingClient, order: Order, attempt: Attempt, record: bool = True) -> dict[str, Any] | None:
        """Until the switch answers: the answer, or None after a final error answer."""
        if record:
            with self._lock:
                order.attempts.append(attempt)
        while not self._abort.is_set():
            fields = dict(attempt.fields)
            if attempt.key is not None and not attempt.keyless:
                fields["idempotency_key"] = attempt.key
            try:
                answer = client.call(attempt.op, **fields)
            except KSwitchConnectionError as e:
                attempt.outcomes.append(f"no_answer:{e.code}")
                time.sleep(RETRY_PAUSE)
                continue
            except KSwitchError as e:
                attempt.outcomes.append(f"error:{e.code}")
                if e.code in ("busy", "internal"):
                    time.sleep(RETRY_PAUSE)
                    continue
                if e.code == "invalid_request" and e.field == "idempotency_key" and not attempt.keyless:
                    attempt.keyless = True  # today's switch: lifecycle ops take no key
                    continue
                attempt.error = f"{e.code} {e.field}: {e.message}"
                return None
            attempt.outcomes.append(str(answer.get("status")))
            attempt.answer = answer
            order.known = answer
            return answer
        return None


def _step_amount(step: str, known: dict[str, Any], rng: random.Random) -> int | None:
    authorized = int(known.get("amount_authorized") or known.get("amount") or 0)
    left = int(known.get("amount_captured") or 0) - int(known.get("amount_refunded") or 0)
    if step == "capture_part" and authorized > 1:
        return rng.randint(1, authorized - 1)
    if step == "refund_all":
        return left or None
    if step == "refund_part" and left > 1:
        return rng.randint(1, left - 1)
    return None


def _unsettled(answer: dict[str, Any]) -> bool:
    """The payment, or one of its operations (when `status` lists them), is still being resolved."""
    operations = answer.get("operations")
    pending = [op for op in operations or () if isinstance(op, dict) and op.get("status") == "pending"]
    return answer.get("status") == "pending" or bool(pending)


def _took_effect(op: str, before: dict[str, Any], now: dict[str, Any]) -> bool:
    if op == "capture":
        return int(now.get("amount_captured") or 0) > 0
    return int(now.get("amount_refunded") or 0) > int(before.get("amount_refunded") or 0)
