"""Where a payment's time goes in perf_ratio's open loop: the switch's own histograms around the load.

perf_ratio.py says how long the web tier waited (p50, p99); this says what for. It runs kswitch from a
template (as perf_ratio's --template) against perf_ratio's bank and load generator at a fixed rate, reads
/metrics before and after the measured seconds, and prints the load's figures and, for the same
seconds, the API's request duration, the journal's write time (submission to durable: two a payment),
its commit time and batch size (the buckets' bounds: histograms keep no more), and the CPU share of the
reactor thread, the whole switch, its writer process, its log child and the bank, in cores, with how busy
the machine's cores were on average (``machine``: 1.0 is every core busy; the load generator's share is in it):

    PYTHONPATH=$PWD .tox/py3/bin/python bench/open_loop.py --rate 675 --seconds 12 [--template F] [--pg]
    ... bench/open_loop.py --rate 500 --template bench/perf-template.toml --trees TREE_A TREE_B [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from cpu_per_auth import HELLO, child_roles, perf_ratio, started  # beside this script; it finds perf_ratio

HISTOGRAMS = ("kswitch_api_request_duration_seconds", "kswitch_journal_write_seconds",
              "kswitch_journal_commit_seconds", "kswitch_journal_batch_size")
TICK = os.sysconf("SC_CLK_TCK")


def histogram(text: str, name: str) -> tuple[dict[float, float], float, float]:
    """Cumulative bucket counts (summed over labels), sum and count of ``name`` in a /metrics page."""
    buckets: dict[float, float] = {}
    total = count = 0.0
    for line in text.splitlines():
        if m := re.match(name + r'_bucket\{.*le="([^"]+)".*\} (\S+)', line):
            bound = float(m.group(1))
            buckets[bound] = buckets.get(bound, 0.0) + float(m.group(2))
        elif m := re.match(name + r"_sum\{.*\} (\S+)", line):
            total += float(m.group(1))
        elif m := re.match(name + r"_count\{.*\} (\S+)", line):
            count += float(m.group(1))
    return buckets, total, count


def between(before: str, after: str, name: str) -> dict[str, float | None]:
    """Mean and the bucket bounds holding p50, p90 and p99 of what ``name`` observed between the pages."""
    b0, s0, c0 = histogram(before, name)
    b1, s1, c1 = histogram(after, name)
    n = c1 - c0
    if not n:
        return {"n": 0}
    bound = {q: next((le for le in sorted(b1) if b1[le] - b0.get(le, 0.0) >= q * n), None) for q in (0.5, 0.9, 0.99)}
    return {"n": n, "mean": round((s1 - s0) / n, 5), "p50_le": bound[0.5], "p90_le": bound[0.9], "p99_le": bound[0.99]}


def cpu_seconds(pids: list[int]) -> float:
    """User and system seconds of the processes together."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / TICK


def reactor_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def machine_ticks() -> tuple[int, int]:
    """(busy, all) clock ticks of every core since boot, from /proc/stat (idle and iowait are not busy)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(values) - values[3] - values[4], sum(values)


def alternate(args: argparse.Namespace) -> None:
    """Two checkouts compared in the open loop, where one run is worth little on a shared machine: each tree
    runs this script in turn, ``--rounds`` times, so drift over the minutes falls on both alike."""
    forwarded = ["--rate", str(args.rate), "--seconds", str(args.seconds), *(["--pg"] if args.pg else []),
                 *(["--template", args.template] if args.template else [])]
    for _ in range(args.rounds):
        for tree in args.trees:
            done = subprocess.run([sys.executable, str(Path(__file__).resolve()), *forwarded], cwd=tree,
                                  env={**os.environ, "PYTHONPATH": tree}, capture_output=True, text=True)
            lines = done.stdout.strip().splitlines() or [json.dumps({"error": done.stderr.strip()[-300:]})]
            print(tree, lines[0], flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, required=True, help="authorizations a second, offered")
    parser.add_argument("--seconds", type=float, default=12)
    parser.add_argument("--template", help="kswitch config template, as perf_ratio's --template")
    parser.add_argument("--pg", action="store_true")
    parser.add_argument("--trees", nargs="+", metavar="TREE",
                        help="run each tree in turn (from it, first on the path), --rounds times: the load's line of each")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.trees:
        alternate(args)
        return
    state = Path(tempfile.mkdtemp(prefix="kopen-"))
    try:
        with started(args.template, args.pg, state / "k") as (switch, bank, api, admin):
            perf_ratio.load(api, 2, 8, 16, HELLO, rate=args.rate)  # warm up
            page = lambda: urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5).read().decode()  # noqa: E731
            processes = {"switch": [switch.pid], "bank": [bank.pid], **child_roles(switch.pid)}
            before, reactor0, began = page(), reactor_seconds(switch.pid), time.monotonic()
            cpu0 = {k: cpu_seconds(p) for k, p in processes.items()}
            machine0 = machine_ticks()
            load = perf_ratio.load(api, args.seconds, 8, 16, HELLO, rate=args.rate)
            took = time.monotonic() - began
            after = page()
            machine1 = machine_ticks()
            busy = {"reactor": round((reactor_seconds(switch.pid) - reactor0) / took, 2),
                    **{k: round((cpu_seconds(p) - cpu0[k]) / took, 2) for k, p in processes.items()},
                    "machine": round((machine1[0] - machine0[0]) / (machine1[1] - machine0[1]), 2)}
        print(json.dumps({"rate": args.rate, **load, "cpu_share": busy}))
        for name in HISTOGRAMS:
            print(json.dumps({"histogram": name, **between(before, after, name)}))
    finally:
        shutil.rmtree(state, ignore_errors=True)

if __name__ == "__main__":
    main()
