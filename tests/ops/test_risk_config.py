"""The [risk] table at start-up: the demo rules load, and every mistake names the file, the rule and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from switch.ops.config import DEFAULT_CONFIG, load_config
from switch.ops.settings import ConfigError
from tests.ops.test_config import _variant


def test_the_demo_config_ships_the_issue_rules():
    rules = {r.name: r for r in load_config().risk.rules}
    assert [r.mode for r in rules.values()].count("shadow") == 1
    assert ("card-pan", "4000000000000259") in rules["blocklist"].entries
    limit = rules["m100-max-per-payment"]
    assert (limit.kind, limit.max_amount, limit.scope.merchants, limit.scope.currencies) == (
        "amount_limit", 500000, frozenset({"M100"}), frozenset({"USD"}))
    guard = rules["card-testing"]
    assert (guard.declines, guard.window, guard.hold, guard.per, guard.action) == (3, 600.0, 1800.0, "card", "block")
    velocity = rules["card-velocity"]
    assert (velocity.kind, velocity.max_count, velocity.window, velocity.per) == ("velocity", 10, 60.0, "card")
    step_up = rules["m100-step-up"]
    assert (step_up.action, step_up.otherwise, step_up.max_amount) == ("step_up", "review", 200000)
    assert list(rules)[-1] == "m100-step-up"  # last: blocks and counts come first


@pytest.mark.parametrize(("old", "new", "message"), [
    ('max_amount = 500000 ', 'max_amount = 500000\nmax_count = 2\n',
     "risk.rules[1].max_count: rule 'm100-max-per-payment': kind amount_limit does not take max_count"),
    ('max_amount = 500000 ', 'max_amount = "5000.00"\n',
     "risk.rules[1].max_amount: got '5000.00'; expected an integer >= 1 (in rule 'm100-max-per-payment')"),
    ('kind = "card_testing"', 'kind = "card_tester"',
     "risk.rules[2].kind: got 'card_tester'; expected one of blocklist, amount_limit, cumulative, velocity, "
     "card_testing, country, duplicate (in rule 'card-testing')"),
    ('max_count = 10\n', '', "risk.rules[3].max_count: rule 'card-velocity': kind velocity needs max_count"),
    ('cards = ["4000000000000259"]', 'cards = ["4000000000000258"]',
     "risk.rules[0].cards[0]: rule 'blocklist': expected a card number of 12-19 digits passing the Luhn check"),
    ('cards = ["4000000000000259"]', 'ips = ["10.0.0.0/33"]',
     "risk.rules[0].ips[0]: rule 'blocklist': expected an IP address or CIDR network, got '10.0.0.0/33'"),
    ('name = "card-velocity"', 'name = "card-testing"', "risk.rules[3].name: rule 'card-testing': another rule"),
    ('name = "card-velocity"', 'name = "pan-4000-0000-0000-0259"',
     "risk.rules[3].name: a rule's name must not look like a card number"),
    ('mode = "shadow"', 'mode = "dry-run"', "(in rule 'ip-velocity-watch')"),
    ('per = "ip"', 'per = "ip"\ntimezone = "Mars/Olympus"', "risk.rules[4].timezone: rule 'ip-velocity-watch'"),
])
def test_a_bad_rule_is_named_with_its_key(tmp_path: Path, old: str, new: str, message: str):
    path = _variant(tmp_path, old, new)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value).startswith(f"{path}: ")
    assert message in str(e.value)
    assert "4000000000000258" not in str(e.value)


def test_country_rules_need_a_bin_table_and_a_bad_table_names_its_line(tmp_path: Path):
    rule = '[[risk.rules]]\nname = "no-jp"\nkind = "country"\naction = "block"\ndeny_countries = ["JP"]\n\n'
    path = _variant(tmp_path, "[[risk.rules]]\nname = \"blocklist\"", rule + "[[risk.rules]]\nname = \"blocklist\"")
    with pytest.raises(ConfigError, match="risk.bin_table: country rules need a BIN table"):
        load_config(path)
    text = path.read_text().replace("# bin_table =", "bin_table =")
    path.write_text(text)
    (tmp_path / "bin-countries.csv").write_text("4,US\n5555,XX\n")
    with pytest.raises(ConfigError, match=r"bin-countries.csv:2: expected an ISO 3166-1 alpha-2 country, got 'XX'"):
        load_config(path)
    (tmp_path / "bin-countries.csv").write_text((DEFAULT_CONFIG.parent / "bin-countries.csv").read_text())
    bins = load_config(path).risk.bins
    assert bins is not None and bins.country("5555555555554444") == "JP" and bins.country("4111111111111111") == "KH"
    assert bins.country("4000000000000002") == "US" and bins.country("6011000000000004") is None
