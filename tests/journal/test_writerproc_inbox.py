"""The writer process's inbox (`switch.journal.writerproc._Inbox`): the C heap is trimmed once the process waits
after work, never while it has units to commit and never when there was no work since the last trim."""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator

import pytest

from switch.journal.frames import frame
from switch.journal.writerproc import _Inbox


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read, write = os.pipe()
    yield read, write
    os.close(read)
    os.close(write)


def _send_units(fd: int, *uids: int) -> None:
    os.write(fd, frame(("units", list(uids), pickle.dumps([len] * len(uids)))))


def test_the_heap_is_trimmed_when_the_writer_waits_after_work(pipe: tuple[int, int]) -> None:
    read, write = pipe
    trims: list[int] = []
    inbox = _Inbox(read, {}, trim=lambda: trims.append(1), trim_interval=0.0)
    _send_units(write, 1, 2)
    assert inbox.take(10) == [(1, len), (2, len)]
    assert trims == []  # no work before these: nothing to hand back
    _send_units(write, 3)
    assert inbox.take(10) == [(3, len)]  # it waited for these, and trimmed first: the last take was work
    assert trims == [1]
    _send_units(write, 4, 5)
    assert inbox.take(1) == [(4, len)]  # nothing was waiting: it trimmed before it read
    assert inbox.take(1) == [(5, len)]  # a unit was waiting: no wait, no trim
    assert trims == [1, 1]


def test_a_trim_not_yet_due_waits_for_the_units(pipe: tuple[int, int]) -> None:
    read, write = pipe
    trims: list[int] = []
    inbox = _Inbox(read, {}, trim=lambda: trims.append(1), trim_interval=3600.0)
    _send_units(write, 1)
    assert inbox.take(10) == [(1, len)]
    _send_units(write, 2)
    assert inbox.take(10) == [(2, len)]
    assert trims == []


def test_without_a_trim_call_the_inbox_waits_as_before() -> None:
    read, write = os.pipe()
    try:
        inbox = _Inbox(read, {})
        _send_units(write, 1)
        assert inbox.take(10) == [(1, len)]
        os.close(write)
        assert inbox.take(10) == [] and inbox.ended  # the switch closed its end: stop
    finally:
        os.close(read)
