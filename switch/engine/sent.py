"""A request as sent, kept while its payment waits at the bank: only what differs from messages built alike.

Why it exists: a payment held at its bank keeps its message as sent (its plugin checks the answer's echoes
against it; an uncertain outcome's reversal is built from it). Most of a message's values are the same
objects in every message its dialect builds for a merchant and store (processing code, acceptor fields,
currency, entry mode), so a payment keeps only the values that are not those objects: typically the card
number, amount, times, STAN and RRN, a tuple of 5 to 8 where the whole message is 15 to 20: about 50 bytes
less a payment held (tracemalloc), 30 to 50 of the switch's resident memory (`bench/hold.sh`; issue 13's
memory target).

A message's "shape" is its tuple of field names in order; the first message of a shape is its base, less its
card data (`ALWAYS_SENSITIVE`: a card number must not outlive its payment in a module's cache). A
"layout" says which positions of a shape a payment keeps: one object per pattern, shared by every payment
with that pattern, found by comparing object identity (`is`), so it costs no string comparison. Both are
bounded: past the bounds a message is kept whole, as before this module.
"""

from __future__ import annotations

from itertools import compress
from operator import is_not
from typing import cast

from switch.iso.dialect import ALWAYS_SENSITIVE, Message

_MAX_SHAPES = 1024
_MAX_LAYOUTS = 64  # per shape: a dialect's messages differ from their base in a few patterns


class _Shape:
    """Messages built alike: their field names, the first one's values, and their layouts."""

    __slots__ = ("names", "base", "layouts")

    def __init__(self, names: tuple[str, ...], base: tuple[str | None, ...]) -> None:
        self.names = names
        self.base = base
        self.layouts: dict[tuple[bool, ...], Layout] = {}


class Layout:
    """Which positions of a shape a payment keeps (``kept``); every other value is its shape's base."""

    __slots__ = ("shape", "kept")

    def __init__(self, shape: _Shape, kept: tuple[int, ...]) -> None:
        self.shape = shape
        self.kept = kept


_SHAPES: dict[tuple[str, ...], _Shape] = {}


def pack(message: Message) -> tuple[Layout, tuple[str, ...]]:
    """The layout of ``message`` and the values it keeps: `unpack` gives the message back."""
    names = tuple(message)
    values = tuple(message.values())
    shape = _SHAPES.get(names)
    if shape is None:
        shape = _Shape(names, tuple(None if name in ALWAYS_SENSITIVE else value for name, value in zip(names, values)))
        if len(_SHAPES) < _MAX_SHAPES:
            _SHAPES[names] = shape
    differs = tuple(map(is_not, values, shape.base))
    layout = shape.layouts.get(differs)
    if layout is None:
        if len(shape.layouts) >= _MAX_LAYOUTS:
            return Layout(shape, tuple(range(len(names)))), values
        layout = shape.layouts[differs] = Layout(shape, tuple(compress(range(len(names)), differs)))
    return layout, tuple(compress(values, differs))


def unpack(layout: Layout, kept: tuple[str, ...]) -> Message:
    values = list(layout.shape.base)
    for position, value in zip(layout.kept, kept):
        values[position] = value
    return dict(zip(layout.shape.names, cast("list[str]", values)))  # every None was a kept position


def field(layout: Layout, kept: tuple[str, ...], number: str) -> str | None:
    """One field of a packed message, without unpacking the rest (an approval needs field 37)."""
    shape = layout.shape
    try:
        position = shape.names.index(number)
    except ValueError:
        return None
    try:
        return kept[layout.kept.index(position)]
    except ValueError:
        return shape.base[position]  # never None: a position whose base is None is always kept
