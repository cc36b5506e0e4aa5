"""The mux over a real link: matching, STANs, timeouts, lost links, busy, late answers."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet.defer import CancelledError, gatherResults
from twisted.internet.task import Clock

from switch.bank.connector import LinkLost, MuxBusy, NoLinkAvailable, RequestTimeout
from switch.iso.dialect import MessageError
from tests.bank.isohost import approve, eventually, sleep
from tests.bank.support import events, sale, sample

PAN = "4111111111111111"


async def failure_of(deferred):
    try:
        result = await deferred
    except Exception as e:  # noqa: BLE001 - the test inspects it
        return e
    raise AssertionError(f"expected a failure, got {result!r}")


def silent_for(mti):
    def handler(message, protocol):
        return None if message["t"] == mti else approve(protocol.host, message)

    return handler


@pytest_twisted.ensureDeferred
async def test_approve_round_trip_sets_stan_and_logs_masked(harness, logs):
    host = harness.host()
    connector = harness.connector(host.port)
    await connector.when_ready()
    message = sale(pan=PAN)
    answer = await connector.request(message)
    assert answer["t"] == "0210" and answer["39"] == "00"
    assert "11" not in message, "the caller's message is not modified"
    (sent,) = host.requests("0200")
    assert sent["11"] == answer["11"] and len(sent["11"]) == 6
    out, into = events(logs, "iso_out")[0], events(logs, "iso_in")[0]
    assert (out["mti"], out["stan"], into["mti"], into["rc"]) == ("0200", sent["11"], "0210", "00")
    assert out["fields"]["2"] == "411111******1111"
    assert PAN not in repr(logs)


@pytest_twisted.ensureDeferred
async def test_concurrent_requests_match_out_of_order_answers(harness):
    host = harness.host()
    held = []
    host.handler = lambda m, p: held.append((m, p)) if m["t"] == "0200" else approve(host, m)
    connector = harness.connector(host.port)
    await connector.when_ready()
    pending = [connector.request(sale(terminal=f"TERM000{i}", amount=f"00000000{i}000")) for i in range(1, 6)]
    await eventually(lambda: len(held) == 5)
    for message, protocol in reversed(held):
        protocol.send(approve(host, message))
    answers = [await d for d in pending]
    assert [a["4"] for a in answers] == [f"00000000{i}000" for i in range(1, 6)]
    assert [a["41"] for a in answers] == [f"TERM000{i}" for i in range(1, 6)]


@pytest_twisted.ensureDeferred
async def test_timeout_then_late_answer_goes_to_the_hook(harness, registry, logs):
    host = harness.host()
    held = []
    host.handler = lambda m, p: held.append((m, p)) if m["t"] == "0200" else approve(host, m)
    clock = Clock()
    late = []
    connector = harness.connector(host.port, clock=clock, request_timeout=30.0)
    connector.mux.on_late_response = late.append
    await connector.when_ready()
    pending = connector.request(sale())
    await eventually(lambda: held)
    clock.advance(29.9)
    assert not pending.called
    clock.advance(0.1)
    error = await failure_of(pending)
    assert isinstance(error, RequestTimeout) and error.written is True
    assert error.stan == held[0][0]["11"] and error.link == "link1"
    message, protocol = held[0]
    protocol.send(approve(host, message))
    await eventually(lambda: late)
    assert late[0]["11"] == error.stan and late[0]["39"] == "00"
    assert sample(registry, "kswitch_mux_late_responses_total", connector="bank") == 1
    assert sample(registry, "kswitch_mux_requests_total", connector="bank", outcome="timeout") == 1
    assert events(logs, "mux_late_response")[0]["stan"] == error.stan
    assert connector.links[0].ready


@pytest_twisted.ensureDeferred
async def test_per_request_timeout_override(harness):
    host = harness.host()
    host.handler = silent_for("0200")
    clock = Clock()
    connector = harness.connector(host.port, clock=clock)
    await connector.when_ready()
    pending = connector.request(sale(), timeout=5.0)
    await eventually(lambda: host.requests("0200"))
    clock.advance(5.0)
    assert isinstance(await failure_of(pending), RequestTimeout)


@pytest_twisted.ensureDeferred
async def test_a_request_with_its_own_timeout_is_a_callers_request_like_any_other(harness, registry, logs):
    """The mux keeps such a request apart (`_Timed`, issue 13's memory target): it still counts in flight, times out
    at its own timeout, is counted and logged with it, and its late answer still reaches the hook."""
    host = harness.host()
    held = []
    host.handler = lambda m, p: held.append((m, p)) if m["t"] == "0200" else approve(host, m)
    clock = Clock()
    late = []
    connector = harness.connector(host.port, clock=clock, request_timeout=30.0)
    connector.mux.on_late_response = late.append
    await connector.when_ready()
    pending = connector.request(sale(), timeout=5.0)
    await eventually(lambda: held)
    assert connector.mux.in_flight == 1
    clock.advance(4.9)
    assert not pending.called
    clock.advance(0.1)
    error = await failure_of(pending)
    assert isinstance(error, RequestTimeout) and "within 5.0s" in str(error)
    assert connector.mux.in_flight == 0
    assert sample(registry, "kswitch_mux_requests_total", connector="bank", outcome="timeout") == 1
    assert events(logs, "mux_timeout")[0]["after"] == 5.0
    message, protocol = held[0]
    protocol.send(approve(host, message))
    await eventually(lambda: late)
    assert late[0]["11"] == error.stan


@pytest_twisted.ensureDeferred
async def test_disconnect_mid_flight_fails_pending_at_once(harness, registry):
    host = harness.host()
    host.handler = silent_for("0200")
    clock = Clock()  # never advanced: the failure must not wait for a timeout
    connector = harness.connector(host.port, clock=clock)
    await connector.when_ready()
    pending = [connector.request(sale(terminal=f"TERM000{i}")) for i in range(3)]
    await eventually(lambda: len(host.requests("0200")) == 3)
    host.drop_connections()
    errors = [await failure_of(d) for d in pending]
    assert all(isinstance(e, LinkLost) and e.written for e in errors)
    assert sorted(e.stan for e in errors) == sorted(m["11"] for m in host.requests("0200"))
    assert sample(registry, "kswitch_mux_requests_total", connector="bank", outcome="link_lost") == 3
    assert sample(registry, "kswitch_mux_pending", connector="bank") == 0


@pytest_twisted.ensureDeferred
async def test_no_link_available_writes_nothing(harness):
    host = harness.host()
    port = host.port
    await host.stop()
    connector = harness.connector(port, clock=Clock())
    error = await failure_of(connector.request(sale()))
    assert isinstance(error, NoLinkAvailable) and error.written is False and error.stan is None


@pytest_twisted.ensureDeferred
async def test_busy_limit_writes_nothing(harness, registry):
    host = harness.host()
    host.handler = silent_for("0200")
    connector = harness.connector(host.port, clock=Clock(), max_in_flight=2)
    await connector.when_ready()
    first = [connector.request(sale(terminal=f"TERM000{i}")) for i in range(2)]
    error = await failure_of(connector.request(sale(terminal="TERM0009")))
    assert isinstance(error, MuxBusy) and error.written is False
    await eventually(lambda: len(host.requests("0200")) == 2)
    await sleep(0.05)
    assert len(host.requests("0200")) == 2
    assert sample(registry, "kswitch_mux_requests_total", connector="bank", outcome="busy") == 1
    assert connector.mux.in_flight == 2
    for d in first:
        d.addErrback(lambda f: None)


@pytest_twisted.ensureDeferred
async def test_network_management_does_not_count_toward_the_busy_limit(harness):
    host = harness.host()
    host.handler = silent_for("0200")
    clock = Clock()
    connector = harness.connector(host.port, clock=clock, max_in_flight=1)
    await connector.when_ready()
    connector.request(sale()).addErrback(lambda f: None)
    clock.advance(30)  # echo due while the single slot is taken
    await eventually(lambda: host.requests("0800"))


@pytest_twisted.ensureDeferred
async def test_stan_held_while_pending_and_through_the_late_window(harness):
    host = harness.host()
    host.handler = silent_for("0200")
    clock = Clock()
    connector = harness.connector(host.port, clock=clock, request_timeout=10.0, late_response_window=120.0)
    await connector.when_ready()
    pending = connector.request(sale())
    await eventually(lambda: host.requests("0200"))
    stan = host.requests("0200")[0]["11"]
    assert stan in connector.mux.stans
    clock.advance(10.0)
    await failure_of(pending)
    assert stan in connector.mux.stans, "a late answer must not meet a new request with the same STAN"
    clock.advance(120.0)
    connector.request(sale(terminal="TERM0002"), timeout=1.0).addErrback(lambda f: None)
    assert stan not in connector.mux.stans


@pytest_twisted.ensureDeferred
async def test_answered_request_releases_its_stan(harness):
    host = harness.host()
    connector = harness.connector(host.port)
    await connector.when_ready()
    answer = await connector.request(sale())
    assert answer["11"] not in connector.mux.stans


@pytest_twisted.ensureDeferred
async def test_reserved_stan_is_used_as_given(harness):
    host = harness.host()
    connector = harness.connector(host.port)
    await connector.when_ready()
    stan = connector.reserve_stan()
    other = await connector.request(sale())
    assert other["11"] != stan
    answer = await connector.request({**sale(), "11": stan})
    assert answer["11"] == stan
    assert stan not in connector.mux.stans
    unused = connector.reserve_stan()
    connector.release_stan(unused)
    assert unused not in connector.mux.stans


@pytest_twisted.ensureDeferred
async def test_an_advice_repeat_keeps_its_stan_while_a_new_request_holds_it_too(harness):
    """After a restart, a new request numbered from the time of day can hold the STAN a previous run's
    capture repeat must carry. Each goes with its own number; before, the second to be sent was given
    a fresh STAN, and the bank posted the repeat as a second capture (chaos seed 57187)."""
    host = harness.host()
    connector = harness.connector(host.port)
    await connector.when_ready()
    stan = connector.reserve_stan()  # a new sale of this run
    assert connector.reserve_stan(stan) == stan  # the repeat of an earlier run's capture (0220)
    repeat = {**sale(), "t": "0221", "11": stan}
    answers = await gatherResults([connector.request(repeat), connector.request({**sale(), "11": stan})])
    assert [a["11"] for a in answers] == [stan, stan]
    assert [m["11"] for m in host.requests("0221")] == [stan] and [m["11"] for m in host.requests("0200")] == [stan]
    assert stan not in connector.mux.stans  # each hold given back once its request was answered


@pytest_twisted.ensureDeferred
async def test_a_callers_stan_is_replaced(harness):
    host = harness.host()
    connector = harness.connector(host.port)
    await connector.when_ready()
    answer = await connector.request({**sale(), "11": "123456"})
    assert host.requests("0200")[0]["11"] == answer["11"]


@pytest_twisted.ensureDeferred
async def test_unmatched_answers_are_counted_not_raised(harness, registry, logs):
    host = harness.host()
    connector = harness.connector(host.port)
    await connector.when_ready()
    host.connections[0].send({"t": "0210", "11": "424242", "41": "TERM0001", "39": "00", "2": PAN})
    await eventually(lambda: sample(registry, "kswitch_mux_unmatched_responses_total", connector="bank") == 1)
    assert events(logs, "mux_unmatched_response")[0]["fields"]["2"] == "411111******1111"
    assert (await connector.request(sale()))["39"] == "00"


@pytest_twisted.ensureDeferred
async def test_match_key_per_mti_for_a_bank_that_drops_field_41(harness):
    host = harness.host()
    host.handler = lambda m, p: {k: v for k, v in approve(host, m).items() if k != "41"}
    connector = harness.connector(host.port, match_keys={"default": ("mti", "41", "11"), "0200": ("mti", "11")})
    await connector.when_ready()
    assert (await connector.request(sale()))["39"] == "00"


@pytest_twisted.ensureDeferred
async def test_reversal_repeat_matches_0410(harness):
    host = harness.host()
    connector = harness.connector(host.port)
    await connector.when_ready()
    answer = await connector.request({"t": "0401", "41": "TERM0001", "4": "000000001000", "90": "0" * 42})
    assert answer["t"] == "0410"


@pytest_twisted.ensureDeferred
async def test_unsendable_messages_fail_without_writing(harness):
    host = harness.host()
    connector = harness.connector(host.port)
    await connector.when_ready()
    with pytest.raises(ValueError, match="not a request"):
        await connector.request({"t": "0210", "41": "TERM0001"})
    with pytest.raises(MessageError):
        await connector.request({**sale(), "4": "12x"})
    assert host.requests() == []
    assert connector.mux.in_flight == 0 and len(connector.mux.stans) == 0


@pytest_twisted.ensureDeferred
async def test_cancelled_request_is_given_up_like_a_timeout(harness, registry):
    host = harness.host()
    held = []
    host.handler = lambda m, p: held.append((m, p)) if m["t"] == "0200" else approve(host, m)
    connector = harness.connector(host.port, clock=Clock())
    await connector.when_ready()
    pending = connector.request(sale())
    await eventually(lambda: held)
    pending.cancel()
    assert isinstance(await failure_of(pending), CancelledError)
    held[0][1].send(approve(host, held[0][0]))
    await eventually(lambda: sample(registry, "kswitch_mux_late_responses_total", connector="bank") == 1)
    assert connector.mux.in_flight == 0


@pytest_twisted.ensureDeferred
async def test_stop_lets_written_requests_finish_and_refuses_new_ones(harness):
    host = harness.host()
    held = []
    host.handler = lambda m, p: held.append((m, p)) if m["t"] == "0200" else approve(host, m)
    connector = harness.connector(host.port)
    await connector.when_ready()
    pending = connector.request(sale())
    await eventually(lambda: held)
    done = []
    connector.stop().addCallback(done.append)
    refused = await failure_of(connector.request(sale(terminal="TERM0002")))
    assert isinstance(refused, NoLinkAvailable)
    await sleep(0.05)
    assert not done and connector.links[0].ready
    held[0][1].send(approve(host, held[0][0]))
    assert (await pending)["39"] == "00"
    await eventually(lambda: done, what="stopped")
    assert [m.get("70") for m in host.requests("0800")] == ["002"]


@pytest_twisted.ensureDeferred
async def test_each_request_times_out_at_its_own_deadline_on_one_timer(harness):
    """Requests held at a slow bank share one timer (their deadlines in a heap): the number of the
    clock's calls does not grow with the requests in flight, and each still times out on time,
    a shorter timeout sent later first."""
    host = harness.host()
    host.handler = silent_for("0200")
    clock = Clock()
    connector = harness.connector(host.port, clock=clock, request_timeout=30.0)
    await connector.when_ready()
    calls_before = len(clock.getDelayedCalls())
    slow = [connector.request(sale()) for _ in range(20)]
    clock.advance(1.0)
    quick = connector.request(sale(), timeout=5.0)
    await eventually(lambda: len(host.requests("0200")) == 21)
    assert len(clock.getDelayedCalls()) == calls_before + 1
    clock.advance(4.9)
    assert not quick.called
    clock.advance(0.1)
    assert isinstance(await failure_of(quick), RequestTimeout)
    assert not any(d.called for d in slow)
    clock.advance(24.0)
    errors = [await failure_of(d) for d in slow]
    assert all(isinstance(e, RequestTimeout) for e in errors)
    assert len(clock.getDelayedCalls()) == calls_before + 1  # the late-response window's expiry only


class Told:
    """An `Answerable` that is not a Deferred, as a payment waiting on its bank is."""

    def __init__(self) -> None:
        self.results: list[object] = []
        self.errors: list[object] = []

    def callback(self, result):
        self.results.append(result)

    def errback(self, fail):
        self.errors.append(fail)


@pytest_twisted.ensureDeferred
async def test_request_to_tells_its_answerable_the_answer_a_timeout_or_a_refusal_once_each(harness, registry):
    host = harness.host()
    host.handler = lambda m, p: None if m["41"].startswith("QUIET") else approve(host, m)
    clock = Clock()
    connector = harness.connector(host.port, clock=clock)
    await connector.when_ready()
    answered, quiet = Told(), Told()
    connector.request_to(answered, sale(terminal="TERM0001"))
    connector.request_to(quiet, sale(terminal="QUIET001"), timeout=3.0)
    await eventually(lambda: answered.results and len(host.requests("0200")) == 2)
    assert answered.results[0]["39"] == "00" and not answered.errors
    assert not quiet.results and not quiet.errors
    clock.advance(3.0)
    [timed_out] = quiet.errors
    assert isinstance(timed_out, RequestTimeout) and timed_out.written
    await host.stop()
    await eventually(lambda: not connector.ready)
    refused = Told()
    connector.request_to(refused, sale())  # no link: told at once, nothing written
    [error] = refused.errors
    assert isinstance(error, NoLinkAvailable) and not error.written and not refused.results
    assert len(answered.results) == 1 and len(quiet.errors) == 1
    assert sample(registry, "kswitch_mux_requests_total", connector="bank", outcome="timeout") == 1
