"""The SQLite journal binds a statement's parameters by position, from the named parameters the journal's SQL is
written with: what SQLite is sent, and that the values land where their names say."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switch.journal.sqlite import SQLiteBackend, positional


def test_each_named_parameter_becomes_a_question_mark_taken_in_order_repeats_included() -> None:
    text, take = positional("UPDATE t SET a = :a, b = :b WHERE id = :id AND a <> :a AND c = x::text")
    assert text == "UPDATE t SET a = ?, b = ? WHERE id = ? AND a <> ? AND c = x::text"
    assert take({"id": 7, "a": "A", "b": None, "unused": 1}) == ("A", None, 7, "A")
    assert positional("SELECT 1")[1]({"a": 1}) == ()
    assert positional("SELECT :only")[1]({"only": 3}) == (3,)


def test_each_value_lands_under_its_name_whatever_the_order_of_the_dict(tmp_path: Path) -> None:
    db = SQLiteBackend(tmp_path / "j.sqlite3").open_writer()
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b INTEGER)")
    db.execute("INSERT INTO t (id, a, b) VALUES (:id, :a, :b)", {"b": 5, "a": "five", "id": 1})
    db.insert_later("INSERT INTO t (id, a, b) VALUES (:id, :a, :b)", {"a": "six", "b": 6, "id": 2})
    db.flush()
    assert db.all("SELECT id, a, b FROM t WHERE b >= :low ORDER BY id", {"low": 5}) == [
        {"id": 1, "a": "five", "b": 5}, {"id": 2, "a": "six", "b": 6}]
    db.close()


def test_a_missing_parameter_is_a_programming_error_naming_it(tmp_path: Path) -> None:
    db = SQLiteBackend(tmp_path / "j.sqlite3").open_writer()
    db.execute("CREATE TABLE t (a TEXT)")
    with pytest.raises(sqlite3.ProgrammingError, match=":a"):
        db.execute("INSERT INTO t (a) VALUES (:a)", {"b": 1})
    db.close()


@given(st.lists(st.sampled_from(["a", "b", "c_d", "e1"]), min_size=1, max_size=8))
def test_any_order_of_names_takes_the_values_in_the_statement_s_order(names: list[str]) -> None:
    sql = "SELECT " + ", ".join(f":{n}" for n in names)
    text, take = positional(sql)
    values = {n: f"v-{n}" for n in names}
    assert text == "SELECT " + ", ".join("?" for _ in names)
    assert take(values) == tuple(f"v-{n}" for n in names)
