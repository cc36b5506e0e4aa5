"""The configuration schema: the shipped file round-trips, defaults reach the runtime options, every
wrong value is named by its full key, and the README's reference is what the schema prints."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from switch.bank.connector import LinkOptions
from switch.engine.notify import NotifyOptions
from switch.engine.saf import SafOptions
from switch.gateway.config import ApiLimits
from switch.ops import reference
from switch.ops.config import DEFAULT_CONFIG, from_document, load_config
from switch.ops.schema import KswitchConfig, Section
from switch.ops.settings import ConfigError, dotted

REPO = Path(__file__).resolve().parents[2]


def _shipped() -> dict[str, Any]:
    return tomllib.loads(DEFAULT_CONFIG.read_text())


def test_the_shipped_config_round_trips_through_the_schema():
    doc = _shipped()
    model = KswitchConfig.model_validate(doc)
    assert model.model_dump(exclude_unset=True) == doc
    assert KswitchConfig.model_validate(model.model_dump()) == model  # the defaults are valid values themselves


def test_keys_left_out_get_the_runtime_defaults():
    cfg = load_config()
    bank_b = cfg.banks["bank_b"]
    assert bank_b.saf == SafOptions() and cfg.notify == NotifyOptions()
    assert cfg.api.limits == ApiLimits()
    link = bank_b.options.links[0]
    for name in ("connect_timeout", "reconnect_initial", "reconnect_max", "echo_timeout", "echo_max_failures"):
        assert getattr(link, name) == getattr(LinkOptions(name="x", host="h", port=1, tls=None), name)
    assert (link.name, bank_b.options.request_timeout, bank_b.options.pool_strategy) == ("bank_b-1", 10.0,
                                                                                       "primary-secondary")


def test_every_key_is_described():
    undescribed = []

    def walk(model: type[Section], prefix: str) -> None:
        for name, field in model.model_fields.items():
            if not field.description:
                undescribed.append(prefix + name)
        for field in model.model_fields.values():
            for inner in _models_in(field.annotation):
                walk(inner, f"{prefix}{inner.__name__}.")

    walk(KswitchConfig, "")
    assert undescribed == []


def _models_in(annotation: Any) -> list[type[Section]]:
    from typing import get_args

    found = [annotation] if isinstance(annotation, type) and issubclass(annotation, Section) else []
    for arg in get_args(annotation):
        found += _models_in(arg)
    return found


def test_the_readme_reference_is_what_the_schema_prints():
    readme = (REPO / "README.md").read_text()
    assert reference.BEGIN in readme and reference.END in readme
    assert reference.replace_block(readme) == readme, (
        "README.md's configuration reference differs from the schema: run "
        "`python -m switch.ops.reference --write README.md`")


def test_kswitch_config_reference_prints_the_tables():
    run = subprocess.run([sys.executable, str(REPO / "bin" / "kswitch"), "config", "reference"],
                         capture_output=True, text=True, timeout=60)
    assert (run.returncode, run.stderr) == (0, "") and run.stdout == reference.markdown()


def test_the_reference_shows_what_errors_say():
    text = reference.markdown()
    assert "| `links[].port` | an integer from 1 to 65535 | required | bank port |" in text
    assert "| `saf.max_attempts` | an integer >= 1 | `10` |" in text


def _leaves(value: Any, loc: tuple = ()) -> list[tuple[tuple, Any]]:
    """Every scalar in a document with its location: ("connectors", 0, "links", 0, "port")."""
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in _leaves(v, (*loc, k))]
    if isinstance(value, list):
        return [leaf for i, v in enumerate(value) for leaf in _leaves(v, (*loc, i))]
    return [(loc, value)]


LEAVES = _leaves(_shipped())


def _wrong_for(value: Any) -> st.SearchStrategy:
    """Values of another TOML type than ``value`` (an integer is a valid number, so never offered for one)."""
    if isinstance(value, bool):
        return st.one_of(st.integers(), st.text(max_size=5))
    if isinstance(value, (int, float)):
        return st.one_of(st.booleans(), st.text(max_size=5), st.lists(st.integers(), max_size=2))
    return st.one_of(st.integers(), st.floats(allow_nan=False))  # not booleans: tls = false is valid


@st.composite
def _wrong_value(draw: st.DrawFn) -> tuple[tuple, Any]:
    loc, value = draw(st.sampled_from(LEAVES))
    return loc, draw(_wrong_for(value))


def _replace(doc: Any, loc: tuple, value: Any) -> None:
    for part in loc[:-1]:
        doc = doc[part]
    doc[loc[-1]] = value


@settings(max_examples=60, deadline=None)
@given(_wrong_value())
def test_a_value_of_the_wrong_type_anywhere_is_named_by_its_full_key(case):
    loc, value = case
    doc = _shipped()
    _replace(doc, loc, value)
    try:
        from_document(DEFAULT_CONFIG, doc)
    except ConfigError as e:
        message = str(e)
    else:
        raise AssertionError(f"{dotted(loc)} = {value!r} was accepted")
    assert message.startswith(f"{DEFAULT_CONFIG}: {dotted(loc)}: got {value!r}; expected "), message
    assert "\n" not in message


def _tables(value: Any, loc: tuple = ()) -> list[tuple]:
    """The location of every table in a document, the top level included."""
    found = [loc] if isinstance(value, dict) else []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        found += _tables(v, (*loc, k))
    return found


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(_tables(_shipped())), st.from_regex(r"x_[a-z_]{1,10}", fullmatch=True))
def test_an_unknown_key_in_any_table_is_named_by_its_full_key(loc, key):
    doc = _shipped()
    table = doc
    for part in loc:
        table = table[part]
    table[key] = 1
    try:
        from_document(DEFAULT_CONFIG, doc)
    except ConfigError as e:
        message = str(e)
    else:
        raise AssertionError(f"{dotted((*loc, key))} was accepted")
    assert message.startswith(f"{DEFAULT_CONFIG}: {dotted((*loc, key))}: unknown key"), message
