"""The admin server's operator action (POST /cutover): who may ask, and what a refusal says."""

from __future__ import annotations

import json

import pytest
from prometheus_client import CollectorRegistry
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import fail, succeed
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from switch.ops.admin import OperatorError, admin_site


def render(method: str, args: dict[bytes, list[bytes]], client: object, action=None) -> tuple[int, dict]:
    calls: list[str | None] = []

    def cutover(bank):
        calls.append(bank)
        return action(bank) if action else succeed([{"bank": bank or "all"}])

    site = admin_site(CollectorRegistry(), lambda: {}, cutover)
    request = DummyRequest([b"cutover"])
    request.method, request.args, request.client = method.encode(), args, client
    resource = site.resource.getChildWithDefault(b"cutover", request)
    body = resource.render(request)
    if body is NOT_DONE_YET:
        body = b"".join(request.written)
    return request.responseCode or 200, {"body": json.loads(body), "calls": calls}


LOOPBACK = IPv4Address("TCP", "127.0.0.1", 40000)


@pytest.mark.parametrize("client", [LOOPBACK, IPv6Address("TCP", "::1", 40000), UNIXAddress(b"/run/kswitch.sock")])
def test_loopback_and_unix_clients_may_cut_over(client):
    status, seen = render("POST", {b"bank": [b"bank_a"]}, client)
    assert (status, seen) == (200, {"body": {"results": [{"bank": "bank_a"}]}, "calls": ["bank_a"]})


def test_anyone_else_is_refused_and_nothing_happens():
    status, seen = render("POST", {b"all": [b"1"]}, IPv4Address("TCP", "10.1.2.3", 40000))
    assert status == 403 and seen["calls"] == [] and "loopback" in seen["body"]["error"]


@pytest.mark.parametrize("args", [{}, {b"bank": [b"bank_a"], b"all": [b"1"]}])
def test_exactly_one_of_bank_or_all(args):
    status, seen = render("POST", args, LOOPBACK)
    assert (status, seen["body"], seen["calls"]) == (400, {"error": "give bank=NAME or all=1"}, [])


def test_a_refusal_keeps_its_status_and_anything_else_is_500_without_detail():
    status, seen = render("POST", {b"bank": [b"x"]}, LOOPBACK, lambda _: fail(OperatorError(404, "unknown bank 'x'")))
    assert (status, seen["body"]) == (404, {"error": "unknown bank 'x'"})
    status, seen = render("POST", {b"bank": [b"x"]}, LOOPBACK, lambda _: fail(RuntimeError("db path /secret")))
    assert status == 500 and "secret" not in seen["body"]["error"]


def test_a_get_never_cuts_over():
    status, seen = render("GET", {b"all": [b"1"]}, LOOPBACK)
    assert (status, seen["calls"]) == (405, [])
