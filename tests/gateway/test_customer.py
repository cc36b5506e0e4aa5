"""The optional `customer` object of authorize: validated field by field, and never logged in clear."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switch.domain.customer import Customer, hash_email, mask_ip
from switch.gateway.errors import ApiError
from switch.gateway.validate import parse_authorize

from .conftest import authorize_request

FULL = {"id": "c-42", "email": "ana@example.com", "ip": "203.0.113.7", "device_id": "dev-9", "country": "KH"}


def test_a_full_customer_is_parsed():
    request = parse_authorize(authorize_request(customer=FULL))
    assert request.customer == Customer(**FULL)


def test_customer_is_optional_and_may_be_null():
    assert parse_authorize(authorize_request()).customer is None
    assert parse_authorize(authorize_request(customer=None)).customer is None
    assert parse_authorize(authorize_request(customer={})).customer == Customer()


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("ip", "300.1.2.3", "not a valid address"),
        ("ip", "example.com", "IPv4 or IPv6"),
        ("country", "kh", "ISO 3166-1 alpha-2"),
        ("country", "XX", "unknown country"),
        ("email", "not-an-email", "email address"),
        ("id", 42, "expected a string"),
        ("nickname", "x", "unknown field"),
    ],
)
def test_bad_customer_fields_are_named(field, value, words):
    with pytest.raises(ApiError) as e:
        parse_authorize(authorize_request(customer={**FULL, field: value}))
    assert e.value.field == f"customer.{field}"
    assert words in e.value.message


def test_a_customer_that_is_not_an_object_is_refused():
    with pytest.raises(ApiError) as e:
        parse_authorize(authorize_request(customer="c-42"))
    assert e.value.field == "customer"


def test_ipv6_is_accepted():
    assert parse_authorize(authorize_request(customer={"ip": "2001:db8::1"})).customer.ip == "2001:db8::1"


def test_logs_see_the_email_hashed_and_the_ip_masked():
    request = parse_authorize(authorize_request(customer=FULL))
    logged = repr(request.log_fields()) + repr(request)
    assert "ana@example.com" not in logged and "203.0.113.7" not in logged
    assert request.log_fields()["email_hash"] == hash_email("ANA@example.com")
    assert request.log_fields()["ip_net"] == "203.0.113.0/24"


@given(st.ip_addresses())
def test_a_masked_address_is_a_network_holding_the_address(address):
    network = ipaddress.ip_network(mask_ip(str(address)))
    assert address in network and network.prefixlen in (24, 48)
