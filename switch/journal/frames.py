"""The frames the switch and its journal writer process exchange: a 4-byte big-endian length and a pickle.

A pickle, because what travels is the journal's own objects (writer units, transactions, errors) between
two processes of one installation, never anything from outside; see `switch.journal.writerproc` for
the messages.
"""

from __future__ import annotations

import pickle
import struct
from typing import Any

HEAD = struct.Struct("!I")
RESULTS_FD = 3


def frame(message: object) -> bytes:
    """One message as it travels between the switch and its writer process."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEAD.pack(len(data)) + data


class Frames:
    """Whole frames out of a byte stream that arrives in pieces."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        buffer = self._buffer
        buffer += data
        messages = []
        start = 0
        while len(buffer) - start >= HEAD.size:
            (size,) = HEAD.unpack_from(buffer, start)
            end = start + HEAD.size + size
            if len(buffer) < end:
                break
            messages.append(pickle.loads(buffer[start + HEAD.size:end]))
            start = end
        del buffer[:start]
        return messages
