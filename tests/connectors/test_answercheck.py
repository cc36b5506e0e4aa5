"""A bank's answer is believed only when it echoes the request: `switch.iso.answercheck`."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors import ConnectorPlugin
from switch.iso.answercheck import ECHOED, read_answer
from switch.iso.dialect import load_dialect
from switch.iso.responses import ResponseTable
from switch.ops.config import ConfigError, load_config

TABLE = ResponseTable.for_version(1987)
PARTIAL = ResponseTable.for_version(1987, partial_approvals=True)
T1993 = ResponseTable.for_version(1993)
REQUEST = {"t": "0200", "2": "4111111111111111", "3": "000000", "4": "000000001250", "11": "000123",
           "41": "WEB00001", "42": "000000000100001", "49": "840", "37": "633408000001"}


def answer(**changes: str) -> dict[str, str]:
    response = {k: v for k, v in REQUEST.items() if k != "2"}
    response.update(t="0210", **{"39": "00", "38": "A1B2C3"})
    response.update({k.lstrip("f"): v for k, v in changes.items()})
    return response


def test_a_clean_approval_is_approved():
    read = read_answer(REQUEST, answer(), TABLE)
    assert (read.status, read.reason, read.response_code, read.auth_code, read.rrn) == (
        "approved", "approved", "00", "A1B2C3", "633408000001")
    assert not read.uncertain and read.amount is None


@pytest.mark.parametrize("field,value", [("4", "000000009999"), ("49", "978"), ("3", "200000"), ("41", "WEB00002"),
                                         ("42", "000000000200002"), ("11", "000124"), ("4", "00000000125X")])
def test_an_approval_echoing_another_value_is_a_format_error_that_may_have_moved_money(field, value):
    read = read_answer(REQUEST, answer(**{f"f{field}": value}), TABLE)
    assert (read.status, read.reason, read.uncertain) == ("failed", "format_error", True)


def test_a_decline_echoing_another_amount_is_a_format_error_that_moved_nothing():
    read = read_answer(REQUEST, answer(f39="51", f4="000000009999"), TABLE)
    assert (read.status, read.reason, read.uncertain) == ("failed", "format_error", False)


@pytest.mark.parametrize("rrn,auth", [("", ""), ("      ", "      "), ("63-340800001", "A1\x00B2C"), ("6" * 13, "1234567")])
def test_an_unusable_rrn_or_auth_code_is_left_out_rather_than_failing_the_journal(rrn, auth):
    read = read_answer(REQUEST, answer(f37=rrn, f38=auth), TABLE)
    assert (read.status, read.rrn, read.auth_code) == ("approved", None, None)


def test_fields_the_answer_leaves_out_contradict_nothing_and_padding_is_not_a_difference():
    response = {"t": "0210", "11": "000123", "39": "00", "41": "WEB00001  "}
    assert read_answer(REQUEST, response, TABLE).status == "approved"


@pytest.mark.parametrize("code", [None, "", "  ", " 0", "0 ", "\x00\x00", "0\x00", "é0", "0000", "0"])
def test_an_unreadable_response_code_is_a_final_format_error_at_once(code):
    response = answer()
    if code is None:
        del response["39"]
    else:
        response["39"] = code
    read = read_answer(REQUEST, response, TABLE)
    assert (read.status, read.reason, read.response_code, read.uncertain) == ("failed", "format_error", None, True)


def test_a_partial_approval_needs_the_connector_to_declare_it():
    partial = answer(f39="10", f4="000000001000")
    refused = read_answer(REQUEST, partial, TABLE)
    assert (refused.status, refused.reason, refused.uncertain) == ("failed", "format_error", True)
    accepted = read_answer(REQUEST, partial, PARTIAL)
    assert (accepted.status, accepted.reason, accepted.amount, accepted.uncertain) == (
        "approved", "partial_approval", 1000, False)
    more = read_answer(REQUEST, answer(f4="000000001251"), PARTIAL)
    assert (more.status, more.reason) == ("failed", "format_error")


def test_a_refund_or_capture_is_never_partially_approved():
    refund = {**REQUEST, "3": "200000"}
    read = read_answer(refund, {**answer(f4="000000001000"), "3": "200000"}, PARTIAL)
    assert (read.status, read.reason, read.uncertain) == ("failed", "format_error", True)
    advice = {**REQUEST, "t": "0220"}
    assert read_answer(advice, {**answer(f4="000000001000"), "t": "0230"}, PARTIAL).status == "failed"


def test_1993_action_codes_are_checked_the_same_way():
    request = {**REQUEST, "t": "1200"}
    assert read_answer(request, {**answer(f39="000"), "t": "1210"}, T1993).status == "approved"
    assert read_answer(request, {**answer(f39="002", f4="000000000500"), "t": "1210"}, T1993).status == "failed"
    assert read_answer(request, {**answer(f39="   "), "t": "1210"}, T1993).reason == "format_error"


def test_the_default_plugin_reads_through_the_checker_and_drops_an_unchecked_confirmation_url():
    class Confirming(ConnectorPlugin):
        def confirmation_url(self, response):
            return "https://bank/confirm/1"

    plugin = Confirming(load_dialect("iso87ascii"))
    assert plugin.read_response(REQUEST, answer(), TABLE).confirmation_url == "https://bank/confirm/1"
    assert plugin.read_response(REQUEST, answer(f4="000000000001"), TABLE).confirmation_url is None


values = st.one_of(st.none(), st.text(max_size=14), st.binary(max_size=14), st.integers(), st.sampled_from(
    ["00", "000", "10", "002", "51", "000000001250", "000000001000", "840", "000000", "000123"]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["t", "3", "4", "11", "37", "38", "39", "41", "42", "49"]), values),
       st.booleans())
def test_any_answer_is_read_without_raising_and_approves_only_when_every_echo_matches(fields, partial):
    response = {**answer(), **{k: v for k, v in fields.items() if v is not None}}
    for k, v in fields.items():
        if v is None:
            response.pop(k, None)
    read = read_answer(REQUEST, response, PARTIAL if partial else TABLE)
    assert read.status in ("approved", "declined", "failed")
    for value, pattern in ((read.response_code, "[A-Za-z0-9]{2,3}"), (read.rrn, "[A-Za-z0-9 ]{1,12}"),
                           (read.auth_code, "[A-Za-z0-9 ]{1,6}")):
        assert value is None or re.fullmatch(pattern, value)  # what the journal accepts: never `internal`
    if read.status == "approved":
        for field in ECHOED:
            if field in response and not (field == "4" and read.amount is not None):
                assert str(response[field]).strip() == REQUEST[field], field
        if read.amount is not None:
            assert partial and 0 < read.amount < 1250 and int(response["4"]) == read.amount
    if read.reason == "format_error" and response.get("39") in ("00", "10"):
        assert read.uncertain


@pytest.mark.parametrize("value,ok", [("true", True), ("false", True), ('"yes"', False), ("1", False)])
def test_partial_approvals_is_a_validated_connector_key(tmp_path, value, ok):
    from tests.e2e.harness import config_text

    path = tmp_path / "kswitch.toml"
    path.write_text(config_text(tmp_path / "state", {"bank_a": 1, "bank_b": 2}, 2.0,
                                connector_extra=f"partial_approvals = {value}"))
    if ok:
        cfg = load_config(path)
        assert cfg.banks["bank_a"].profile.responses.partial_approvals is (value == "true")
    else:
        with pytest.raises(ConfigError, match="partial_approvals"):
            load_config(path)
