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


MatchKey = tuple[str | int, ...]


def _normalise(value: str) -> str | int:
    """``"000123"``, ``"123"`` and ``" 123 "`` name the same STAN or terminal: a number, as an int (28 bytes
    rather than a 54-byte string for each request waiting), anything else as its text."""
    value = value.strip()
    if value.isdigit():
        return int(value)
    return value


class MatchKeys:
    """Which fields pair a response with its request, per MTI (jPOS QMUX ``key``).

    ``config`` maps ``"default"`` and any MTI (request or response, e.g. ``"0800"``) to a
    tuple of field numbers and ``"mti"``.  Default: ``("mti", "41", "11")``: the MTI
    pair, terminal and STAN, because STAN-only keys collide under load.
    """

    def __init__(self, config: Mapping[str, Sequence[str]] = DEFAULT_MATCH_KEYS) -> None:
        self._default = ("mti", "41", "11")
        self._by_class: dict[str, tuple[str, ...]] = {}
        for name, fields in config.items():
            key = tuple(fields)
            if not key or any(f != "mti" and not (f.isdigit() and 2 <= int(f) <= 128) for f in key):
                raise ValueError(f"match_keys.{name}: expected field numbers 2..128 and \"mti\", got {list(fields)!r}")
            if name == "default":
                self._default = key
                continue
            if not is_mti(name):
                raise ValueError(f"match_keys: {name!r} is neither \"default\" nor a four-digit MTI")
            cls = _mti_class(name)
            if self._by_class.get(cls, key) != key:
                raise ValueError(f"match_keys.{name}: conflicts with another MTI of the same pair ({cls}x)")
            self._by_class[cls] = key

    def key(self, message: Mapping[str, str]) -> MatchKey:
        """The same key for a request and for its response."""
        cls = _mti_class(message["t"])
        fields = self._by_class.get(cls, self._default)
        return tuple(cls if f == "mti" else _normalise(message.get(f, "")) for f in fields)
