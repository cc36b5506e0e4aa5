"""bench-risk runs real authorizations with and without the demo's risk stage and prints its cost."""

from __future__ import annotations

import argparse
import os

import pytest
import pytest_twisted
from twisted.internet import reactor

from switch.ops.config import DEFAULT_CONFIG
from switch.tools.bench.risk import arguments, run


@pytest_twisted.ensureDeferred
async def test_bench_risk_prints_the_cost_per_thread_at_each_concurrency(capsys):
    found = await run(reactor, argparse.Namespace(payments=12, config=DEFAULT_CONFIG, concurrency=[4, 1]))
    out = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("{")]  # not the JSON logs
    assert list(found) == [4, 1]
    rounds = [(4, "4 at a time"), (1, "one at a time")]
    for k, (group, how) in enumerate(rounds):
        table = out[5 * k:5 * k + 5]
        assert table[0].startswith("risk stage, 6 rules from ") and "12 approved authorizations" in table[0]
        assert table[0].endswith(f"alternating, {how}; median CPU per authorization, µs:")
        assert table[1].split() == ["reactor", "writer", "both"]
        assert [line.split()[0] for line in table[2:5]] == ["without", "with", "added"]
        medians = found[group]
        assert [float(v) for v in table[4].split()[1:]] == [round(medians["added"][t], 1)
                                                            for t in ("reactor", "writer", "both")]
        assert all(medians[row][thread] > 0 for row in ("with", "without") for thread in ("reactor", "writer"))
    assert out[10:] == [f"risk stage adds {found[group]['added']['both']:.1f} µs median CPU per authorization, "
                        f"{how} (reactor + journal writer threads, demo rules; the median of the differences "
                        "between neighbouring groups with and without the stage)" for group, how in rounds]


def test_bench_risk_refuses_a_cpu_it_may_not_run_on(capsys):
    allowed = sorted(os.sched_getaffinity(0))
    with pytest.raises(SystemExit) as exited:
        arguments(["--cpu", str(max(allowed) + 1)])
    assert exited.value.code == 2
    assert f"--cpu {max(allowed) + 1}: this process may run on CPUs {', '.join(map(str, allowed))}" in \
        capsys.readouterr().err
    assert arguments(["--cpu", str(allowed[0])]).cpu == allowed[0]
