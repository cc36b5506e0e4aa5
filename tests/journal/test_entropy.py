"""The nonce and id pool: bytes from the OS CSPRNG, read in blocks, never handed out twice."""

from __future__ import annotations

import os

import pytest

from switch.journal.entropy import random_bytes


def test_consecutive_draws_are_distinct_across_block_boundaries() -> None:
    draws = [random_bytes(12) for _ in range(3 * 8192 // 12)]
    assert all(len(d) == 12 for d in draws)
    assert len(set(draws)) == len(draws)


def test_a_draw_larger_than_the_block_is_served_whole() -> None:
    assert len(random_bytes(9000)) == 9000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_reuse_its_parents_bytes() -> None:
    random_bytes(1)  # the parent holds a partly used block
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report what it would hand out next
        os.write(write, random_bytes(16))
        os._exit(0)
    os.close(write)
    child = os.read(read, 16)
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 16
    assert child != random_bytes(16)
