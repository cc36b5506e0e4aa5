"""Pure pieces of the link layer: match keys, pool strategies, backoff, option checks."""

from __future__ import annotations

import random
import tracemalloc
from dataclasses import dataclass

import pytest

from switch.bank.connector import ConnectorOptions, LinkOptions, TlsClientOptions
from switch.bank.linkparts import Backoff
from switch.bank.matching import PREFIXES_MAX, MatchKeys
from switch.bank.pool import LinkPool
from switch.bank.tls import TlsConfigError, client_connection_creator
from switch.iso.framing import Framing
from tests.bank.support import FRAMING, ISO87


@pytest.mark.parametrize(
    "request_mti, response_mti",
    [("0200", "0210"), ("0100", "0110"), ("0400", "0410"), ("0401", "0410"), ("0420", "0430"),
     ("0421", "0430"), ("0800", "0810"), ("1804", "1814"), ("1200", "1210"), ("0220", "0230")],
)
def test_request_and_response_share_a_key(request_mti, response_mti):
    keys = MatchKeys()
    request = {"t": request_mti, "11": "000042", "41": "TERM0001"}
    response = {"t": response_mti, "11": "000042", "41": "TERM0001", "39": "00"}
    assert keys.key(request) == keys.key(response)  # neither filed: the key's parts
    assert keys.filing(request) == keys.key(response)  # filed: one int, the same for the answer


@pytest.mark.parametrize("other", [{"t": "0210", "11": "000043"}, {"t": "0110", "11": "000042"}, {"t": "0210", "11": "000042", "41": "TERM0002"}])
def test_different_stan_class_or_terminal_do_not_match(other):
    keys = MatchKeys()
    base = {"t": "0200", "11": "000042", "41": "TERM0001"}
    assert keys.filing(base) != keys.key({"41": "TERM0001", **other})
    assert keys.filing(base) != keys.filing({"41": "TERM0001", **other})


def test_key_values_are_normalised():
    keys = MatchKeys()
    assert keys.key({"t": "0200", "11": "000042", "41": "00001234"}) == keys.key({"t": "0210", "11": "42", "41": " 1234 "})
    assert keys.key({"t": "0200", "11": "000000"}) == keys.key({"t": "0210", "11": "0"})
    assert keys.key({"t": "0200", "11": "1", "41": "TERM01  "}) == ("021", "TERM01", 1)  # a number as an int


def test_a_filed_key_is_one_small_int_for_10000_requests_waiting():
    """10,000 payments held at a bank are 10,000 keys in the mux: each must cost one int, not a tuple and an int."""
    keys = MatchKeys()
    requests = [{"t": "0200", "11": f"{stan:06d}", "41": "STORE001"} for stan in range(1, 20_001)]
    filed: list[object] = [None] * len(requests)
    traced = []
    tracemalloc.start()
    try:
        for i, request in enumerate(requests):
            if i in (10_000, 20_000 - 1):
                traced.append(tracemalloc.get_traced_memory()[0])
            filed[i] = keys.filing(request)
    finally:
        tracemalloc.stop()
    # the second 10,000 alone: the first fill what is made once (the prefix's number, CPython's spare tuples)
    assert (traced[1] - traced[0]) / 9_999 <= 36  # a tuple of three and an int took 92
    assert len(set(filed)) == 20_000
    assert all(keys.key({"t": "0210", "11": str(stan), "41": "STORE001"}) == key for stan, key in enumerate(filed, 1))


def test_answers_never_fill_the_table_of_prefixes_and_past_its_bound_keys_stay_tuples_that_still_match():
    keys = MatchKeys()
    for terminal in range(PREFIXES_MAX + 10):  # a bank answering with terminals nobody sent
        assert isinstance(keys.key({"t": "0210", "11": "000001", "41": f"T{terminal}"}), tuple)
    requests = [{"t": "0200", "11": "000001", "41": f"S{store}"} for store in range(PREFIXES_MAX + 3)]
    filed = [keys.filing(request) for request in requests]
    assert all(isinstance(key, int) for key in filed[:PREFIXES_MAX])
    assert all(isinstance(key, tuple) for key in filed[PREFIXES_MAX:])
    assert len(set(filed)) == len(filed)
    for request, key in zip(requests, filed):
        assert keys.key({**request, "t": "0210", "11": "1"}) == key


@pytest.mark.parametrize("config, request_, response", [
    ({"default": ("mti", "37")}, {"t": "0200", "37": "123456789012"}, {"t": "0210", "37": "123456789012"}),
    ({"default": ("11", "mti")}, {"t": "0200", "11": "000007"}, {"t": "0210", "11": "7"}),
    ({"default": ("mti", "11", "70")}, {"t": "0800", "11": "000007", "70": "301"}, {"t": "0810", "11": "7", "70": "301"}),
    ({"default": ("mti", "41", "11")}, {"t": "0200", "11": "ABC123", "41": "T1"}, {"t": "0210", "11": "ABC123", "41": "T1"}),
    ({"default": ("mti", "41", "11")}, {"t": "0200", "11": "9" * 13, "41": "T1"}, {"t": "0210", "11": "9" * 13, "41": "T1"}),
])
def test_keys_that_do_or_do_not_pack_match_their_answers_alone(config, request_, response):
    keys = MatchKeys(config)
    filed = keys.filing(request_)
    assert keys.key(response) == filed
    assert keys.key({**response, "t": "0110"}) != filed
    other = {name: ("000008" if name == "11" else value) for name, value in request_.items()}
    assert other == request_ or keys.filing(other) != filed


def test_a_key_of_the_mti_alone_tells_pairs_apart():
    keys = MatchKeys({"default": ("mti",)})
    assert keys.filing({"t": "0800", "11": "1"}) == keys.key({"t": "0810", "11": "2"}) == ("081",)
    assert keys.key({"t": "0210"}) != keys.filing({"t": "0800"})


def test_match_keys_per_mti_and_default():
    keys = MatchKeys({"default": ("mti", "11"), "0800": ("mti", "11", "70")})
    assert keys.key({"t": "0200", "11": "1", "41": "X"}) == ("021", 1)
    assert keys.key({"t": "0810", "11": "1", "70": "301"}) == ("081", 1, 301)


@pytest.mark.parametrize(
    "config, message",
    [({"default": ()}, "expected field numbers"), ({"default": ("mti", "200")}, "expected field numbers"),
     ({"02x0": ("11",)}, "neither"), ({"0400": ("11",), "0401": ("11", "41")}, "conflicts")],
)
def test_match_key_config_errors(config, message):
    with pytest.raises(ValueError, match=message):
        MatchKeys(config)


@dataclass
class Member:
    name: str
    ready: bool = True


def test_primary_secondary_takes_the_first_ready_link():
    a, b = Member("a"), Member("b")
    pool = LinkPool([a, b])
    assert [pool.select().name for _ in range(3)] == ["a", "a", "a"]
    a.ready = False
    assert pool.select() is b
    b.ready = False
    assert pool.select() is None
    a.ready = True
    assert pool.select() is a


def test_round_robin_spreads_over_ready_links_only():
    a, b, c = Member("a"), Member("b"), Member("c")
    pool = LinkPool([a, b, c], "round-robin")
    assert [pool.select().name for _ in range(6)] == ["a", "b", "c", "a", "b", "c"]
    b.ready = False
    assert [pool.select().name for _ in range(4)] == ["a", "c", "a", "c"]
    assert pool.ready == (a, c)


def test_pool_rejects_unknown_strategy():
    with pytest.raises(ValueError, match="expected one of primary-secondary, round-robin"):
        LinkPool([Member("a")], "random")


class FixedRandom(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def random(self) -> float:
        return self.value


def test_backoff_grows_caps_and_resets():
    backoff = Backoff(0.5, 4.0, 2.0, 0.2, FixedRandom(0.0))
    assert [backoff.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    backoff.reset()
    assert backoff.next_delay() == 0.5


def test_backoff_jitter_only_shortens():
    backoff = Backoff(1.0, 8.0, 2.0, 0.2, FixedRandom(0.999999))
    delays = [backoff.next_delay() for _ in range(5)]
    assert delays == pytest.approx([0.8, 1.6, 3.2, 6.4, 6.4], rel=1e-5)
    spread = Backoff(30.0, 30.0, 2.0, 0.2, random.Random(7))
    samples = [spread.next_delay() for _ in range(200)]
    assert 24.0 <= min(samples) < 25.0 and 29.0 < max(samples) <= 30.0


@pytest.mark.parametrize(
    "field, value, message",
    [("port", 0, "port"), ("connect_timeout", 0, "connect_timeout"), ("reconnect_max", 0.1, "reconnect_max"),
     ("reconnect_factor", 0.5, "reconnect_factor"), ("reconnect_jitter", 1.0, "reconnect_jitter"),
     ("echo_interval", -1, "echo_interval"), ("echo_max_failures", 0, "echo_max_failures"),
     ("sign_on_code", "1", "sign_on_code")],
)
def test_link_options_are_checked(field, value, message):
    with pytest.raises(ValueError, match=message):
        LinkOptions(**{"name": "a", "host": "127.0.0.1", "port": 5000, "tls": None, field: value})


def test_link_options_defaults():
    o = LinkOptions("a", "bank.example", 5000, None)
    assert (o.connect_timeout, o.reconnect_initial, o.reconnect_max, o.reconnect_factor, o.reconnect_jitter) == (10.0, 0.5, 30.0, 2.0, 0.2)
    assert (o.sign_on, o.sign_on_code, o.sign_off_on_stop) == (False, None, True)
    assert (o.echo_interval, o.echo_timeout, o.echo_max_failures) == (30.0, 10.0, 3)


def test_tls_is_never_implied():
    with pytest.raises(TypeError):
        LinkOptions("a", "bank.example", 5000)  # type: ignore[call-arg]


def test_connector_options_defaults_and_checks():
    link = LinkOptions("a", "127.0.0.1", 5000, None)
    o = ConnectorOptions("bank", ISO87, FRAMING, None, (link,))
    assert (o.pool_strategy, o.request_timeout, o.max_in_flight, o.late_response_window) == ("primary-secondary", 30.0, 1000, 120.0)
    assert dict(o.match_keys) == {"default": ("mti", "41", "11")}
    with pytest.raises(ValueError, match="at least one link"):
        ConnectorOptions("bank", ISO87, FRAMING, None, ())
    with pytest.raises(ValueError, match="unique"):
        ConnectorOptions("bank", ISO87, FRAMING, None, (link, link))
    with pytest.raises(ValueError, match="pool_strategy"):
        ConnectorOptions("bank", ISO87, FRAMING, None, (link,), pool_strategy="random")
    with pytest.raises(ValueError, match="5 bytes"):
        ConnectorOptions("bank", ISO87, Framing("2b", tpdu=True), None, (link,))
    with pytest.raises(ValueError, match="carries none"):
        ConnectorOptions("bank", ISO87, FRAMING, b"\x60\x00\x01\x00\x00", (link,))
    with pytest.raises(ValueError, match="match_keys"):
        ConnectorOptions("bank", ISO87, FRAMING, None, (link,), match_keys={"default": ("x",)})


def test_tls_files_are_checked_when_options_are_built(pki, tmp_path):
    with pytest.raises(TlsConfigError, match="cert and key go together"):
        TlsClientOptions(pki.ca.cert, pki.client.cert, None)
    with pytest.raises(TlsConfigError, match="cannot read CA bundle"):
        client_connection_creator(TlsClientOptions(tmp_path / "missing.pem", pki.client.cert, pki.client.key), "h")
    with pytest.raises(TlsConfigError, match="does not belong to the certificate"):
        client_connection_creator(TlsClientOptions(pki.ca.cert, pki.client.cert, pki.server.key), "h")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(TlsConfigError, match="not a PEM"):
        client_connection_creator(TlsClientOptions(garbage, pki.client.cert, pki.client.key), "h")
