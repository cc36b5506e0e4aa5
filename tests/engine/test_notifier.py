"""The Notifier's delivery rules on a deterministic clock: order, scope, the in-flight cap,
acknowledgements, redelivery to a new subscription and the metrics that show it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from twisted.internet.task import Clock

from switch.engine.notify import EventsNotFound, NotifyOptions
from tests.engine.conftest import Connection, EventLog, make_notifier, result

POLL = NotifyOptions().poll_interval


def metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_backlog_is_pushed_in_order_after_the_subscribe_answer(clock, log, notifier):
    for merchant in ("M1", "M3", "M2", "M1"):
        log.append(merchant)
    web = Connection()
    assert result(web.subscribe(notifier)) == 3
    assert web.pushed == []  # the answer is written first; pushes follow on the next reactor turn
    clock.advance(0)
    assert web.ids() == [1, 3, 4]


def test_new_events_are_pushed_at_the_next_poll(clock, log, notifier):
    web = Connection()
    assert result(web.subscribe(notifier)) == 0
    clock.advance(0)
    log.append("M2")
    log.append("M9")
    clock.advance(POLL / 2)
    assert web.pushed == []
    clock.advance(POLL)
    assert web.ids() == [1]


def test_at_most_max_unacked_in_flight_then_more_as_soon_as_some_are_acked(clock, log, notifier):
    for _ in range(5):
        log.append("M1")
    web = Connection()
    assert result(web.subscribe(notifier)) == 3
    clock.advance(0)
    clock.advance(POLL * 5)
    assert web.ids() == [1, 2, 3]
    assert result(notifier.acknowledge("web-1", frozenset({"M1", "M2"}), [1, 2])) == 2
    assert web.ids() == [1, 2, 3, 4, 5]


def test_acknowledging_unknown_or_foreign_events_fails_and_records_nothing(clock, log, notifier):
    log.append("M1")
    foreign = log.append("M9")
    with pytest.raises(EventsNotFound) as caught:
        result(notifier.acknowledge("web-1", frozenset({"M1"}), [1, foreign.event_id, 77]))
    assert caught.value.event_ids == [foreign.event_id, 77]
    assert log.acks == set()
    assert result(notifier.acknowledge("web-1", frozenset({"M1"}), [1])) == 1
    assert result(notifier.acknowledge("web-1", frozenset({"M1"}), [1])) == 0  # twice is fine


def test_a_new_subscription_gets_what_is_unacknowledged_and_counts_it_as_redelivery(clock, log, notifier, registry):
    for _ in range(3):
        log.append("M1", type="payment.late_response")
    first = Connection()
    first.subscribe(notifier)
    clock.advance(0)
    result(notifier.acknowledge("web-1", frozenset({"M1"}), [2]))
    notifier.unsubscribe(first)
    second = Connection()
    assert result(second.subscribe(notifier)) == 2
    clock.advance(0)
    assert second.ids() == [1, 3]
    assert metric(registry, "kswitch_notify_pushed_total", event="payment.late_response") == 5
    assert metric(registry, "kswitch_notify_redelivered_total", event="payment.late_response") == 2
    assert metric(registry, "kswitch_notify_acked_total") == 1


def test_subscribing_again_on_the_same_connection_starts_over(clock, log, notifier):
    log.append("M1")
    log.append("M2")
    web = Connection()
    web.subscribe(notifier)
    clock.advance(0)
    web.merchants = {"M2"}
    assert result(web.subscribe(notifier)) == 1
    clock.advance(0)
    assert web.ids() == [1, 2, 2]


def test_the_scope_is_asked_again_so_a_merchant_taken_away_is_not_pushed(clock, log, notifier):
    web = Connection()
    web.subscribe(notifier)
    clock.advance(0)
    web.merchants.discard("M2")
    log.append("M2")
    log.append("M1")
    clock.advance(POLL)
    assert web.ids() == [2]


def test_unsubscribing_stops_pushes_and_the_poll_loop(clock, log, notifier, registry):
    web, other = Connection(), Connection("web-2", ["M1"])
    web.subscribe(notifier)
    other.subscribe(notifier)
    clock.advance(0)
    assert metric(registry, "kswitch_notify_subscribers") == 2
    notifier.unsubscribe(web)
    notifier.unsubscribe(web)
    log.append("M1")
    clock.advance(POLL)
    assert (web.ids(), other.ids()) == ([], [1])
    notifier.stop()
    assert metric(registry, "kswitch_notify_subscribers") == 0
    assert clock.getDelayedCalls() == []


def test_an_event_acknowledged_while_it_is_being_read_is_not_pushed(clock, log, notifier):
    web = Connection()
    web.subscribe(notifier)
    clock.advance(0)
    log.append("M1")
    log.append("M1")
    log.hold_reads = True
    clock.advance(POLL)
    result(notifier.acknowledge("web-1", frozenset({"M1"}), [1]))  # e.g. from another connection of the client
    log.release_reads()
    assert web.ids() == [2]


def test_a_failed_read_is_retried_at_the_next_poll(clock, log, notifier):
    web = Connection()
    web.subscribe(notifier)
    clock.advance(0)
    log.append("M1")
    log.fail_reads = 1
    clock.advance(POLL)
    assert web.pushed == []
    clock.advance(POLL)
    assert web.ids() == [1]


def test_a_failed_first_read_fails_the_subscription(clock, log, notifier, registry):
    log.fail_reads = 1
    with pytest.raises(RuntimeError):
        result(Connection().subscribe(notifier))
    assert metric(registry, "kswitch_notify_subscribers") == 0


def test_oldest_unacknowledged_age_outlives_the_connection_until_acknowledged(clock, log, notifier, registry):
    web = Connection()
    log.append("M1")
    web.subscribe(notifier)
    clock.advance(0)
    clock.advance(30)
    assert metric(registry, "kswitch_notify_oldest_unacked_age_seconds") == 30
    notifier.unsubscribe(web)
    clock.advance(10)
    assert metric(registry, "kswitch_notify_oldest_unacked_age_seconds") == 40
    result(notifier.acknowledge("web-1", frozenset({"M1"}), [1]))
    assert metric(registry, "kswitch_notify_oldest_unacked_age_seconds") == 0


def test_options_are_checked():
    with pytest.raises(ValueError):
        NotifyOptions(max_unacked=0)
    with pytest.raises(ValueError):
        NotifyOptions(poll_interval=0)


STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.sampled_from(["M1", "M2", "M9"])),
        st.tuples(st.just("ack"), st.integers(0, 3)),
        st.tuples(st.just("reconnect"), st.just(0)),
        st.tuples(st.just("poll"), st.just(0)),
    ),
    max_size=40,
)


def test_any_interleaving_keeps_order_scope_and_cap_and_loses_nothing():
    """Whatever happens, each connection sees its events in id order, only its merchants, at most
    ``max_unacked`` unacknowledged, never one acknowledged before it subscribed; and after a last
    reconnect every event of its merchants arrives until all are acknowledged."""

    @settings(max_examples=150, deadline=None)
    @given(STEPS)
    def run(steps: list[tuple[str, int | str]]) -> None:
        clock = Clock()
        log = EventLog(clock)
        notifier = make_notifier(clock, log, CollectorRegistry(), max_unacked=2)
        connections = [Connection()]
        acked_before: list[set[int]] = [set()]
        connections[0].subscribe(notifier)
        delivered: set[int] = set()

        def ack(count: int) -> None:
            web = connections[-1]
            unacked = [i for i in web.ids() if ("web-1", i) not in log.acks][:count]
            result(notifier.acknowledge("web-1", frozenset({"M1", "M2"}), unacked))

        for action, arg in steps:
            if action == "append":
                log.append(str(arg))
            elif action == "ack":
                ack(int(arg))
            elif action == "reconnect":
                notifier.unsubscribe(connections[-1])
                connections.append(Connection())
                acked_before.append({i for _, i in log.acks})
                connections[-1].subscribe(notifier)
            clock.advance(0 if action != "poll" else POLL)
            web = connections[-1]
            assert sum(("web-1", i) not in log.acks for i in web.ids()) <= 2
        mine = {e.event_id for e in log.events if e.merchant_id != "M9"}
        for _ in range(len(mine) + 1):
            ack(2)
            clock.advance(POLL)
        for web, acked in zip(connections, acked_before):
            assert web.ids() == sorted(set(web.ids()))
            assert {e.merchant_id for e in web.pushed} <= {"M1", "M2"}
            assert not set(web.ids()) & acked
            delivered |= set(web.ids())
        assert delivered == mine
        assert {i for _, i in log.acks} == mine

    run()
