"""The pipe to the journal's writer process (`switch.journal.pipe`): written at once while it has room,
through the reactor only while it is full, in order, and closed only once the child could read it all."""

from __future__ import annotations

import os
import pickle
import threading

import pytest
from twisted.internet.testing import MemoryReactor

from switch.journal.frames import frame
from switch.journal.pipe import PipeOut
from switch.journal.writerproc import _READ, _Inbox


@pytest.fixture
def pipe() -> tuple[int, PipeOut, MemoryReactor]:
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    reactor = MemoryReactor()
    yield read_end, PipeOut(reactor, write_end), reactor
    os.close(read_end)


def drain(read_end: int) -> bytes:
    chunks = []
    while True:
        try:
            chunk = os.read(read_end, 1 << 16)
        except BlockingIOError:
            return b"".join(chunks)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def test_a_write_the_pipe_has_room_for_is_in_it_at_once_and_the_reactor_never_watches(pipe):
    read_end, out, reactor = pipe
    out.write(b"units-1")
    out.write(b"units-2")
    assert os.read(read_end, 100) == b"units-1units-2"
    assert reactor.getWriters() == []


def test_what_a_full_pipe_cannot_take_waits_for_the_reactor_and_arrives_in_order(pipe):
    read_end, out, reactor = pipe
    big = bytes(range(256)) * 1024  # 256 KB: more than a pipe holds
    out.write(big)
    out.write(b"after")  # queued behind the rest, not written past it
    assert reactor.getWriters() == [out]
    received = bytearray()
    while reactor.getWriters():
        received += drain(read_end)
        out.doWrite()
    received += drain(read_end)
    assert bytes(received) == big + b"after"
    assert reactor.getWriters() == []


def test_closing_with_bytes_queued_ends_the_pipe_only_once_they_are_written(pipe):
    read_end, out, reactor = pipe
    big = b"x" * (1 << 18)
    out.write(big)
    out.close()
    assert out.fileno() >= 0  # still open: the child has not had it all
    out.write(b"late")  # nothing is written after a close
    received = bytearray()
    while out.fileno() >= 0:
        received += drain(read_end)
        out.doWrite()
    received += drain(read_end)
    assert bytes(received) == big
    assert os.read(read_end, 10) == b""  # end of file
    assert reactor.getWriters() == []


def test_a_pipe_whose_reader_is_gone_drops_what_is_written_without_raising():
    read_end, write_end = os.pipe()
    reactor = MemoryReactor()
    out = PipeOut(reactor, write_end)
    os.close(read_end)
    out.write(b"units")  # EPIPE: the child is gone, and its exit says so
    assert out.fileno() == -1
    out.write(b"more")
    out.close()
    assert reactor.getWriters() == []


def test_the_writer_process_reads_a_frame_larger_than_one_read_whole_and_in_order():
    """The child reads the pipe a pipe's worth at a time (`writerproc._READ`); a frame of units longer
    than that, sent behind a share, arrives whole and after it."""
    read_end, write_end = os.pipe()
    shared: dict[object, object] = {}
    inbox = _Inbox(read_end, shared)
    units = [("unit", f"{n:04d}" + "x" * 996, n) for n in range(300)]  # about 300 KB pickled
    payload = pickle.dumps(units, protocol=pickle.HIGHEST_PROTOCOL)
    assert len(payload) > 4 * _READ
    data = frame(("share", "fees", "schedule")) + frame(("units", list(range(1, 301)), payload))
    writer = threading.Thread(target=lambda: (os.write(write_end, data), os.close(write_end)))
    writer.start()
    taken = []
    while len(taken) < 300:
        taken += inbox.take(64)
    writer.join(timeout=10)
    os.close(read_end)
    assert shared == {"fees": "schedule"}
    assert [uid for uid, _ in taken] == list(range(1, 301))
    assert [unit for _, unit in taken] == units
