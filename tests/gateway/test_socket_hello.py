"""The socket API's greeting as a web tier sees it: real TCP connections on 127.0.0.1, JSON lines both ways.
Only ``ping`` works before ``hello``; ``hello`` says who the client is and what it may use, and a client
that keeps guessing its token is cut off."""

from __future__ import annotations

import pytest_twisted

from .conftest import WEB2_TOKEN, authorize_request, error_of

inline = pytest_twisted.inlineCallbacks


@inline
def test_ping_needs_no_hello_and_echoes_the_id_exactly(server):
    client = yield server.connect()
    client.send({"id": "a-string-id", "op": "ping"}, {"id": 9007199254740991, "op": "ping"}, {"id": -3, "op": "ping"})
    answers = yield client.next(3)
    assert answers == [
        {"id": "a-string-id", "ok": True, "pong": True},
        {"id": 9007199254740991, "ok": True, "pong": True},
        {"id": -3, "ok": True, "pong": True},
    ]


@inline
def test_every_op_but_ping_and_hello_needs_hello_first(server):
    client = yield server.connect()
    for request in (authorize_request(id=1), {"id": 2, "op": "status", "txn_id": "T000001"}):
        answer = yield client.request(request)
        assert answer["id"] == request["id"]
        assert error_of(answer) == ("unauthenticated", None)
    assert server.service.calls == []


@inline
def test_hello_answers_who_the_client_is_and_what_it_may_use(server):
    client = yield server.connect()
    answer = yield client.hello()
    assert answer == {
        "id": "hello",
        "ok": True,
        "client": "web-1",
        "merchant_ids": ["m1"],
        "protocol": 1,
        "max_line_bytes": 65536,
        "max_in_flight": 256,
        "idle_timeout": 300.0,
    }
    again = yield client.hello()
    assert again == answer
    other = yield client.hello("web-2", WEB2_TOKEN)
    assert error_of(other) == ("invalid_request", "client")
    still = yield client.request(authorize_request(id=1))
    assert still["status"] == "approved"


@inline
def test_wrong_token_and_unknown_client_look_the_same(server):
    client = yield server.connect()
    wrong_token = yield client.hello("web-1", WEB2_TOKEN)
    unknown_client = yield client.hello("nobody", WEB2_TOKEN)
    assert error_of(wrong_token) == error_of(unknown_client) == ("unauthenticated", None)
    assert wrong_token["error"]["message"] == unknown_client["error"]["message"]


@inline
def test_third_failed_hello_closes_the_connection(server):
    client = yield server.connect()
    for _ in range(3):
        answer = yield client.hello("web-1", "guess")
        assert error_of(answer) == ("unauthenticated", None)
    yield client.wait_closed()
