"""The crash test's web tier: shoppers as threads, each paying through the socket API with the blocking
client and recording every answer it got, so `tests.crash.invariants` can hold the switch to them."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from switch.gateway.client import BlockingClient, KSwitchConnectionError, KSwitchError
from tests.crash.harness import CARDS, CLIENT, CVV, EXPIRY, MERCHANT, STORE, TOKEN, sleep


@dataclass
class WebRequest:
    """One payment as the web tier knows it: what it asked and every answer it got."""

    n: int
    worker: int
    order_id: str
    idempotency_key: str
    pan: str
    amount: int
    capture: bool
    outcomes: list[str] = field(default_factory=list)  # per attempt: a status, "no_answer:<code>", "error:<code>"
    final: dict[str, Any] | None = None  # the last transaction answer
    error: str | None = None  # a final error answer (never expected)

    @property
    def kind(self) -> str:
        return "sale" if self.capture else "authorization"

    @property
    def retried(self) -> bool:
        return len(self.outcomes) > 1

    def describe(self) -> str:
        runs: list[list[Any]] = []
        for outcome in self.outcomes:  # "no_answer:connect_failed x12" rather than twelve entries
            if runs and runs[-1][0] == outcome:
                runs[-1][1] += 1
            else:
                runs.append([outcome, 1])
        answers = ", ".join(o if n == 1 else f"{o} x{n}" for o, n in runs)
        return (f"{self.order_id} (key {self.idempotency_key}, {self.kind} {self.amount} on "
                f"{self.pan[:6]}…{self.pan[-4:]}, answers [{answers}])")


class WebWorkers:
    """``workers`` threads, each a web-tier request handler with its own connection to the socket API;
    subclasses say what one worker does (`_run`) and what the run recorded."""

    THREAD_NAME = "web"

    def __init__(self, api_sock: Path, seed: int, workers: int, think: float = 0.01) -> None:
        self.api_sock = api_sock
        self.seed = seed
        self.workers = workers
        self.think = think
        self.crashes: list[str] = []
        self._lock = threading.Lock()
        self._next = 0
        self._stop_new = threading.Event()
        self._abort = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for w in range(self.workers):
            t = threading.Thread(target=self._run, args=(w,), name=f"{self.THREAD_NAME}-{w}", daemon=True)
            self._threads.append(t)
            t.start()

    def stop_new(self) -> None:
        """No new work; each worker still gets an answer to the request it has."""
        self._stop_new.set()

    def abort(self) -> None:
        self._stop_new.set()
        self._abort.set()

    def alive(self) -> int:
        return sum(t.is_alive() for t in self._threads)

    def _run(self, worker: int) -> None:
        raise NotImplementedError


class WebTier(WebWorkers):
    """Worker threads, each a web-tier request handler with its own connection.

    Each sends authorizations with a unique order id and idempotency key and keeps the
    last answer.  When the connection dies (or cannot be made: the switch is down) the
    outcome is unknown, so it sends the identical request with the same key again until
    it gets an answer, as the socket API spec (section 9) tells web tiers to do.
    """

    RETRY_PAUSE = 0.05
    FAILED_PAUSE = 0.2  # after a "failed" answer a shopper tries again a little later

    THREAD_NAME = "crash-web"

    def __init__(self, api_sock: Path, seed: int, workers: int, think: float = 0.01) -> None:
        super().__init__(api_sock, seed, workers, think)
        self.requests: list[WebRequest] = []

    async def finished(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() > deadline:
                self.abort()
                pending = [r.describe() for r in self.snapshot() if r.final is None and r.error is None]
                raise AssertionError(
                    f"the web tier still had {len(pending)} request(s) without an answer {timeout}s after "
                    f"the load stopped: {pending[:10]}"
                )
            await sleep(0.05)
        assert not self.crashes, f"web-tier worker crashed: {self.crashes}"

    def snapshot(self) -> list[WebRequest]:
        with self._lock:
            return list(self.requests)

    def answered(self) -> int:
        with self._lock:
            return sum(r.final is not None for r in self.requests)

    def _new_request(self, worker: int, rng: random.Random) -> WebRequest:
        with self._lock:
            self._next += 1
            n = self._next
            card = rng.choices(CARDS, weights=[c.weight for c in CARDS])[0]
            req = WebRequest(
                n=n, worker=worker, order_id=f"crash-{self.seed}-{n:05d}", idempotency_key=f"idem-{self.seed}-{n:05d}",
                pan=card.pan, amount=rng.randint(100, 50_000), capture=rng.random() < 0.7,
            )
            self.requests.append(req)
        return req

    def _run(self, worker: int) -> None:
        try:
            self._work(worker)
        except BaseException as e:  # noqa: BLE001 - reported by finished()
            self.crashes.append(f"worker {worker}: {type(e).__name__}: {e}")

    def _work(self, worker: int) -> None:
        rng = random.Random(self.seed * 1000 + worker)
        client = BlockingClient(unix_path=str(self.api_sock), client=CLIENT, token=TOKEN, timeout=30.0)
        req: WebRequest | None = None
        try:
            while not self._abort.is_set():
                if req is None:
                    if self._stop_new.is_set():
                        return
                    if self.think:
                        time.sleep(rng.uniform(0, self.think))
                    req = self._new_request(worker, rng)
                try:
                    answer = client.authorize(
                        merchant_id=MERCHANT, store_id=STORE, order_id=req.order_id, amount=req.amount,
                        currency="USD", pan=req.pan, expiry=EXPIRY, cvv=CVV, capture=req.capture,
                        idempotency_key=req.idempotency_key,
                    )
                except KSwitchConnectionError as e:
                    req.outcomes.append(f"no_answer:{e.code}")
                    time.sleep(self.RETRY_PAUSE)
                    continue
                except KSwitchError as e:
                    req.outcomes.append(f"error:{e.code}")
                    if e.code in ("busy", "internal"):  # outcome unknown or not carried out: same key again
                        time.sleep(self.RETRY_PAUSE)
                        continue
                    req.error = f"{e.code}: {e.message}"
                    req = None
                    continue
                req.outcomes.append(answer["status"])
                req.final = answer
                req = None
                if answer["status"] == "failed":
                    time.sleep(self.FAILED_PAUSE)
        finally:
            client.close()
