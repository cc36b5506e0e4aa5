"""Fuzzing the socket API over a real socket, against a whole switch (real payment service,
journal, banksim): arbitrary JSON values in every field of every op, and lines that are not
requests at all. Whatever arrives, each line gets exactly one answer carrying the request's id
(null when the id could not be read), never `internal`, the connection stays usable, and the
log lines produced and the error messages hold no full card number (issue 9).

Hypothesis runs in a worker thread and reaches the reactor through blockingCallFromThread:
a pytest-twisted test body runs inside the reactor and cannot block on it."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from typing import Any

import pytest
import pytest_twisted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.threads import blockingCallFromThread, deferToThread

from switch.domain.panscan import looks_like_pan
from tests.cardscan import problems
from tests.e2e.harness import TOKEN, start_env, stop_env

from .conftest import LineClient

MAX_INTEGER_ID = 2**53 - 1
CARDS = ["4111111111111111", "5555555555554444", "4012 8888 8888 1881", "4012-8888-8888-1881", "378282246310005"]
NUMBERS = ["1732871234560", "1234567890123452", "order-1732871234560", "2026112900000018", " ", " A-1", "A-1 "]

text = st.text(
    st.one_of(
        st.characters(),
        st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, exclude_categories=()),  # lone surrogates
        st.sampled_from("0123456789 -"),
    ),
    max_size=24,
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    text,
    st.sampled_from(CARDS + NUMBERS + [""]),
    st.sampled_from([c for c in CARDS if c.isdigit()]).map(int),
)
json_values = st.recursive(
    scalars, lambda children: st.lists(children, max_size=3) | st.dictionaries(text, children, max_size=3), max_leaves=6
)


unique = st.uuids().map(lambda u: f"fuzz-{u.hex[:12]}")
references = st.one_of(unique, unique, st.sampled_from(NUMBERS + CARDS), text)
ids = st.one_of(st.integers(-MAX_INTEGER_ID, MAX_INTEGER_ID), unique, text.filter(bool), json_values)
TXN = "$TXN"  # replaced, when the line is sent, by the txn_id of a payment this fuzz run made


def field(good: Any) -> st.SearchStrategy[Any]:
    """Mostly the field's good value, so requests get past validation; otherwise anything at all."""
    return st.integers(0, 7).flatmap(lambda n: json_values if n == 7 else st.just(good))


def varied(fields: dict[str, st.SearchStrategy[Any]], optional: tuple[str, ...] = ()) -> st.SearchStrategy:
    """An object with every field, then perhaps one field dropped and perhaps an unknown one added."""
    def vary(obj: dict[str, Any], drop: int, junk: Any) -> dict[str, Any]:
        names = [name for name in obj if name not in ("id", "op")]
        if 0 <= drop - 32 < len(names):  # hypothesis favours small integers: dropping is the rarer case
            del obj[names[drop - 32]]
        if junk is not None:
            obj["junk"] = junk
        return obj

    base = st.fixed_dictionaries(fields, optional={name: json_values for name in optional})
    return st.builds(vary, base, st.integers(0, 40), st.none() | st.none() | st.none() | json_values)


def request(op: str, fields: dict[str, st.SearchStrategy[Any]], optional: tuple[str, ...] = ()) -> st.SearchStrategy:
    return varied({"id": ids, "op": st.just(op), **fields}, optional)


card = varied({"type": st.just("card"), "pan": field("4111111111111111"), "expiry": field("3012"),
               "cvv": field("123")})
bank_account = st.fixed_dictionaries({"type": st.just("bank_account"), "bank": field("ABA"),
                                      "account": field("000123456789")},
                                     optional={"holder_id": field("KH-1234"), "account_type": field("savings")})
wallet = st.fixed_dictionaries({"type": st.just("wallet"), "provider": field("TRUEMONEY"),
                                "wallet_id": field("0812345678")})
requests = st.one_of(
    request("ping", {}),
    request("hello", {"client": field("web-1"), "token": field(TOKEN)}),
    request("authorize", {
        "merchant_id": field("M100"), "store_id": field("web"), "order_id": references, "amount": field(1250),
        "currency": field("USD"), "capture": st.booleans() | json_values,
        "instrument": st.one_of(card, card, bank_account, wallet, json_values),
    }, optional=("bank", "idempotency_key")),
    request("status", {"txn_id": field(TXN) | references}),
    request("status", {"merchant_id": field("M100"), "order_id": references}),
    request("capture", {"txn_id": field(TXN), "amount": field(100)}, optional=("idempotency_key",)),
    request("void", {"txn_id": field(TXN)}, optional=("idempotency_key",)),
    request("refund", {"txn_id": field(TXN), "amount": field(100)}, optional=("idempotency_key",)),
    request("subscribe", {"merchant_ids": field(["M100"])}),
    request("ack", {"event_id": field("1")}, optional=("event_ids",)),
    st.fixed_dictionaries({"id": ids, "op": json_values | text}),
    json_values,
)
lines = st.one_of(
    requests.map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=40).map(lambda raw: raw.replace(b"\n", b"")).filter(lambda raw: raw.strip()),
)
# A third failed hello closes the connection by design; a batch holds at most two hellos.
batches = st.lists(lines, min_size=1, max_size=6).filter(lambda batch: sum(b'"op": "hello"' in x for x in batch) <= 2)


def expected_id(line: bytes) -> Any:
    """The id the answer must carry: the request's when it is one the spec accepts, else null."""
    try:
        value = json.loads(line)
    except ValueError:
        return None
    request_id = value.get("id") if isinstance(value, dict) else None
    if isinstance(request_id, str) and 1 <= len(request_id) <= 128:
        return request_id
    if isinstance(request_id, int) and not isinstance(request_id, bool) and abs(request_id) <= MAX_INTEGER_ID:
        return request_id
    return None


def hashable(value: Any) -> Any:
    return json.dumps(value)


@pytest.fixture(scope="module")
def whole_switch(tmp_path_factory):
    env = pytest_twisted.blockon(ensureDeferred(start_env(tmp_path_factory.mktemp("fuzz"))))
    yield env
    pytest_twisted.blockon(ensureDeferred(stop_env(env)))


def on_reactor(function: Any, *args: Any) -> Any:
    """Run ``function`` in the reactor thread and wait for its (Deferred) result: hypothesis runs
    in a worker thread, because a pytest-twisted test body runs inside the reactor and cannot block."""
    return blockingCallFromThread(reactor, function, *args)


def answers_with_ids(client: LineClient, count: int) -> list[dict[str, Any]]:
    """The next ``count`` answers; pushed events (lines without ``id``) are not answers."""
    got: list[dict[str, Any]] = []
    while len(got) < count:
        [line] = on_reactor(client.next)
        if "id" in line:
            got.append(line)
    return got


def log_since(tee: Any, start: int) -> list[str]:
    on_reactor(tee.file.flush)
    with open(tee.file.name, encoding="utf-8") as log:
        log.seek(start)
        return log.read().splitlines()


def check_batch(switch: Any, tee: Any, batch: list[bytes], sentinel: str, txn_ids: list[str]) -> None:
    log_start = on_reactor(lambda: (tee.file.flush(), tee.file.tell())[1])
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", switch.api_port)
    client = on_reactor(connectProtocol, endpoint, LineClient())
    try:
        hello = on_reactor(client.hello, "web-1", TOKEN)
        assert hello["ok"], hello
        batch = [line.replace(TXN.encode(), (txn_ids[-1] if txn_ids else "01JDXYZ").encode()) for line in batch]
        on_reactor(client.transport.write, b"".join(line + b"\n" for line in batch))
        answers = answers_with_ids(client, len(batch))
        assert Counter(hashable(a["id"]) for a in answers) == Counter(hashable(expected_id(line)) for line in batch)
        assert [a for a in answers if not a["ok"] and a["error"]["code"] == "internal"] == []
        assert [a for a in answers if not a["ok"] and looks_like_pan(a["error"]["message"])] == []
        txn_ids.extend(a["txn_id"] for a in answers if a["ok"] and isinstance(a.get("txn_id"), str))
        on_reactor(client.send, {"id": sentinel, "op": "ping"})
        assert answers_with_ids(client, 1) == [{"id": sentinel, "ok": True, "pong": True}]
    finally:
        on_reactor(lambda: (client.close(), client.closed)[1])
    produced = log_since(tee, log_start)
    assert [line for line in produced if problems(line)] == []
    assert [line for line in produced if '"api_internal_error"' in line] == []


@pytest.mark.timeout(300)
@pytest_twisted.ensureDeferred
async def test_every_line_gets_one_answer_with_its_id_and_never_internal(whole_switch, pytestconfig):
    tee = pytestconfig._kswitch_tee
    sentinels = itertools.count()
    txn_ids: list[str] = []

    @settings(max_examples=200, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(batch=batches)
    def fuzz(batch: list[bytes]) -> None:
        check_batch(whole_switch, tee, batch, f"still-usable-{next(sentinels)}", txn_ids)

    await deferToThread(fuzz)
