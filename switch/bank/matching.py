"""Match keys: which fields of a bank's answer pair it with the request it answers (jPOS QMUX ``key``).

Owns the key a request is filed under in the mux and the key its response is looked up by, and the
checks of a connector's ``match_keys`` table.  May use: nothing of the switch but the message shape.
"""

from __future__ import annotations

import functools
from typing import Mapping, Sequence

DEFAULT_MATCH_KEYS: Mapping[str, tuple[str, ...]] = {"default": ("mti", "41", "11")}


def is_mti(value: str) -> bool:
    return len(value) == 4 and value.isdigit()


@functools.lru_cache(maxsize=256)
def _mti_class(mti: str) -> str:
    """The request/response pair an MTI belongs to: 0200 and 0210 -> 021, 0400/0401/0410
    -> 041, 1804/1814 -> 181.  The origin digit is left out: a repeat (0401) is answered
    like its original, and 1993 network management keeps origin 4 in its answer.  Remembered:
    every request waiting on its bank keeps its class in its key, one string for all of them."""
    return f"{mti[:2]}{int(mti[2]) | 1}"


MatchKey = int | tuple[str | int, ...]
"""A request's key in the mux: one int (`MatchKeys.filing`), or the key's parts when they do not pack."""

PREFIXES_MAX = 4096
"""Distinct keys-less-their-STAN (MTI pair and terminal, by default) a connector packs into ints; past that
bound a key stays a tuple, as correct and bigger. Filled by requests only: a bank's answers look keys up."""
_NUMBER_BITS = 40


def _normalise(value: str) -> str | int:
    """``"000123"``, ``"123"`` and ``" 123 "`` name the same STAN or terminal: a number, as an int, anything
    else as its text."""
    value = value.strip()
    if value.isdigit():
        return int(value)
    return value


class MatchKeys:
    """Which fields pair a response with its request, per MTI (jPOS QMUX ``key``).

    ``config`` maps ``"default"`` and any MTI (request or response, e.g. ``"0800"``) to a
    tuple of field numbers and ``"mti"``.  Default: ``("mti", "41", "11")``: the MTI
    pair, terminal and STAN, because STAN-only keys collide under load.

    Why a key is an int: a request waiting on its bank is filed under its key, and a tuple of three with
    its STAN as an int took 92 bytes of each of 10,000 payments held (`bench/hold.sh`). The parts but the
    STAN (field 11, or the key's last field without one) take few values (one MTI pair and terminal per store),
    so each such prefix gets a small number once, and a key is that number and the STAN in one int (32 bytes).
    """

    def __init__(self, config: Mapping[str, Sequence[str]] = DEFAULT_MATCH_KEYS) -> None:
        self._default = _layout(("mti", "41", "11"))
        self._by_class: dict[str, tuple[tuple[str, ...], str | None, int]] = {}
        for name, fields in config.items():
            key = tuple(fields)
            if not key or any(f != "mti" and not (f.isdigit() and 2 <= int(f) <= 128) for f in key):
                raise ValueError(f"match_keys.{name}: expected field numbers 2..128 and \"mti\", got {list(fields)!r}")
            if name == "default":
                self._default = _layout(key)
                continue
            if not is_mti(name):
                raise ValueError(f"match_keys: {name!r} is neither \"default\" nor a four-digit MTI")
            cls, layout = _mti_class(name), _layout(key)
            if self._by_class.setdefault(cls, layout) != layout:
                raise ValueError(f"match_keys.{name}: conflicts with another MTI of the same pair ({cls}x)")
        self._prefixes: dict[tuple[str | int, ...], int] = {}

    def key(self, message: Mapping[str, str]) -> MatchKey:
        """The key a response is looked up by: its request's `filing` key. A key no request was filed
        under never packs, so a bank's answers never fill the table of prefixes."""
        return self._key(message, False)

    def filing(self, message: Mapping[str, str]) -> MatchKey:
        """The key a request is filed under: the same as its response's `key`."""
        return self._key(message, True)

    def _key(self, message: Mapping[str, str], filing: bool) -> MatchKey:
        cls = _mti_class(message["t"])
        others, numbered, at = self._by_class.get(cls, self._default)
        prefix = tuple(cls if f == "mti" else _normalise(message.get(f, "")) for f in others)
        if numbered is None:  # a key of the MTI alone
            return prefix
        number = _normalise(message.get(numbered, ""))
        if type(number) is int and not number >> _NUMBER_BITS:
            index = self._prefixes.get(prefix)
            if index is None and filing and len(self._prefixes) < PREFIXES_MAX:
                index = self._prefixes[prefix] = len(self._prefixes)
            if index is not None:
                return index << _NUMBER_BITS | number
        return (*prefix[:at], number, *prefix[at:])


def _layout(fields: tuple[str, ...]) -> tuple[tuple[str, ...], str | None, int]:
    """A key's fields but the one that tells requests apart (the STAN, field 11, or else the last field number),
    that one, and its place among them."""
    numbers = [at for at, name in enumerate(fields) if name != "mti"]
    if not numbers:
        return fields, None, 0
    at = fields.index("11") if "11" in fields else numbers[-1]
    return fields[:at] + fields[at + 1:], fields[at], at
