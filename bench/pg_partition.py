"""A network partition between kswitch and its PostgreSQL journal, by hand: what the web tier sees during and after.

Not a benchmark and not in the suite: it changes the machine's loopback queueing (``tc``; needs root or
CAP_NET_ADMIN and the htb qdisc), so nothing else may use PostgreSQL on 127.0.0.1:5432 while it runs. It starts
kswitch on a PostgreSQL journal from perf_ratio's template (as bench/cpu_per_auth.py does), sends payments at a
fixed rate, holds every packet to and from port 5432 (an htb class of 8 bit/s: nothing arrives, nothing is
refused, as in a partition) for --hold seconds, then lets them through again and prints the load's figures for
each phase (before, during, after) and the journal's warnings and errors:

    PYTHONPATH=$PWD .tox/py3/bin/python bench/pg_partition.py --template bench/perf-template.toml --hold 40
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from cpu_per_auth import HELLO, perf_ratio, started  # beside this script; it finds perf_ratio

PORT = "5432"


def tc(*args: str) -> None:
    subprocess.run(["tc", *args], check=False, stderr=subprocess.DEVNULL)


def hold_postgres() -> None:
    tc("qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb", "default", "10")
    tc("class", "add", "dev", "lo", "parent", "1:", "classid", "1:10", "htb", "rate", "10gbit")
    tc("class", "add", "dev", "lo", "parent", "1:", "classid", "1:20", "htb", "rate", "8bit", "ceil", "8bit")
    for direction in ("dport", "sport"):
        tc("filter", "add", "dev", "lo", "parent", "1:", "protocol", "ip", "prio", "1", "u32",
           "match", "ip", direction, PORT, "0xffff", "flowid", "1:20")


def release_postgres() -> None:
    tc("qdisc", "del", "dev", "lo", "root")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--template", help="kswitch config template, as perf_ratio's --template")
    parser.add_argument("--hold", type=float, default=40.0, help="seconds the partition lasts")
    parser.add_argument("--rate", type=float, default=20.0, help="payments a second during the partition")
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="kpart-"))
    try:
        with started(args.template, True, state / "k") as (_, _, api, _):
            print(json.dumps({"phase": "before", **perf_ratio.load(api, 3, 2, 4, HELLO, rate=50)}), flush=True)
            began = time.monotonic()
            hold_postgres()
            try:
                during = perf_ratio.load(api, args.hold, 2, 4, HELLO, rate=args.rate)
            finally:
                release_postgres()
            print(json.dumps({"phase": "during", "seconds": round(time.monotonic() - began, 1), **during}), flush=True)
            time.sleep(3)
            print(json.dumps({"phase": "after", **perf_ratio.load(api, 5, 2, 4, HELLO, rate=50)}), flush=True)
        for line in (state / "k" / "kswitch.log").read_text().splitlines():
            if '"level":"error"' in line or '"level":"warning"' in line:
                if '"journal' in line:
                    print(line[:300])
    finally:
        release_postgres()
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
