"""bench-risk runs real authorizations with and without the demo's risk stage and prints its cost."""

from __future__ import annotations

import argparse

import pytest
import pytest_twisted
from twisted.internet import reactor

from switch.ops.config import DEFAULT_CONFIG
from switch.tools.bench.risk import run


@pytest.mark.parametrize("concurrency", [1, 4])
@pytest_twisted.ensureDeferred
async def test_bench_risk_prints_the_cost_per_thread_with_and_without_the_stage(capsys, concurrency):
    medians = await run(reactor, argparse.Namespace(payments=12, config=DEFAULT_CONFIG, concurrency=concurrency))
    out = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("{")]  # not the JSON logs
    assert out[0].startswith("risk stage, 6 rules from ") and "12 approved authorizations" in out[0]
    assert out[1].split() == ["reactor", "writer", "both"]
    assert [line.split()[0] for line in out[2:5]] == ["without", "with", "added"]
    added = medians["added"]
    assert added["both"] == medians["with"]["both"] - medians["without"]["both"]
    assert out[5] == f"risk stage adds {added['both']:.1f} µs median CPU per authorization " \
                     "(reactor + journal writer threads, demo rules)"
    assert all(medians[row][thread] > 0 for row in ("with", "without") for thread in ("reactor", "writer"))
