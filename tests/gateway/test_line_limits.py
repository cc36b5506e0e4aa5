"""Request lines at and beyond the size limit, and the line endings the socket API tolerates."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from switch.gateway.config import ApiLimits
from tests.gateway.conftest import authorize_request, error_of

inline = pytest_twisted.inlineCallbacks


@inline
def test_an_over_long_line_is_too_large_and_closes_after_answers_owed(make_server):
    server = make_server(limits=ApiLimits(max_line_bytes=1024))
    client = yield server.connect()
    yield client.hello()
    client.send(authorize_request(id=1, order_id="hold-1"))
    yield deferLater(reactor, 0.05, lambda: None)
    client.send(b'{"id": 2, "op": "ping", "pad": "' + b"x" * 2000 + b'"}\n', {"id": 3, "op": "ping"})
    [too_large] = yield client.next()
    assert too_large["id"] is None
    assert error_of(too_large) == ("too_large", None)
    assert not client.closed.called
    server.service.release("hold-1")
    [owed] = yield client.next()
    assert (owed["id"], owed["status"]) == (1, "approved")
    yield client.wait_closed()
    assert [a["id"] for a in client.answers] == ["hello", None, 1]


@inline
def test_an_endless_line_without_newline_is_too_large(make_server):
    server = make_server(limits=ApiLimits(max_line_bytes=1024))
    client = yield server.connect()
    for _ in range(3):
        client.send(b"x" * 600)
    [answer] = yield client.next()
    assert error_of(answer) == ("too_large", None)
    yield client.wait_closed()


@inline
def test_a_line_of_exactly_the_limit_is_accepted(make_server):
    server = make_server(limits=ApiLimits(max_line_bytes=200))
    client = yield server.connect()
    prefix = b'{"id":1,"op":"ping","pad":"'
    line = prefix + b"x" * (200 - len(prefix) - 2) + b'"}'
    assert len(line) == 200
    answer = yield client.request(line + b"\r\n")
    assert error_of(answer) == ("invalid_request", "pad")


@inline
def test_crlf_and_blank_lines_are_tolerated(server):
    client = yield server.connect()
    answer = yield client.request(b'\r\n\n   \n{"id": 1, "op": "ping"}\r\n')
    assert answer == {"id": 1, "ok": True, "pong": True}
