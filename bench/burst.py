"""How late the answers to a burst of payments on one connection come: what Nagle's algorithm costs a web tier.

A web tier that sends several authorizations at once on one connection and then waits sends nothing back while the
answers come, so its kernel acknowledges them late (Linux's delayed ACK, 40 ms). If the switch's socket held each
small write until the previous one was acknowledged (Nagle's algorithm, on unless ``TCP_NODELAY``), every answer
after the first would wait for that. This starts kswitch from a template (as perf_ratio's ``--template``) against
perf_ratio's bank, sends ``--bursts`` bursts of ``--size`` authorizations on one connection, a pause between, and
prints the burst's last answer (p50, p90, worst) and the longest wait between two answers of a burst (p50, worst),
in milliseconds:

    PYTHONPATH=$PWD .tox/py3/bin/python bench/burst.py --template bench/perf-template.toml [--size 16 --bursts 60]
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import tempfile
import time
from pathlib import Path

from cpu_per_auth import HELLO, started  # beside this script; it finds perf_ratio


def request(rid: int) -> bytes:
    return json.dumps({
        "id": rid, "op": "authorize", "merchant_id": "M1", "store_id": "S1", "order_id": f"b-{time.time_ns()}-{rid}",
        "amount": 100, "currency": "USD", "capture": True,
        "instrument": {"type": "card", "pan": "4111111111111111", "expiry": "3012", "cvv": "123"},
    }).encode() + b"\n"


def bursts(api: int, size: int, count: int, pause: float) -> dict[str, float]:
    with socket.create_connection(("127.0.0.1", api), timeout=10) as sock, sock.makefile("rb") as answers:
        sock.sendall(json.dumps({"id": 0, "op": "hello", "client": HELLO[0], "token": HELLO[1]}).encode() + b"\n")
        answers.readline()
        last, gaps, rid = [], [], 0
        for _ in range(count):
            lines = [request(rid + i + 1) for i in range(size)]
            rid += size
            began = time.perf_counter()
            sock.sendall(b"".join(lines))
            arrived = []
            for _ in range(size):
                answer = json.loads(answers.readline())
                if answer.get("status") != "approved":
                    raise SystemExit(f"not approved: {answer}")
                arrived.append((time.perf_counter() - began) * 1000)
            last.append(arrived[-1])
            gaps.append(max((b - a for a, b in zip(arrived, arrived[1:])), default=0.0))
            time.sleep(pause)
    last.sort()
    gaps.sort()
    return {"last_p50_ms": round(statistics.median(last), 2), "last_p90_ms": round(last[int(0.9 * len(last))], 2),
            "last_worst_ms": round(last[-1], 2), "gap_p50_ms": round(statistics.median(gaps), 2),
            "gap_worst_ms": round(gaps[-1], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--template", help="kswitch config template, as perf_ratio's --template")
    parser.add_argument("--size", type=int, default=16, help="authorizations a burst")
    parser.add_argument("--bursts", type=int, default=60)
    parser.add_argument("--pause", type=float, default=0.05, help="seconds between bursts")
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="kburst-"))
    try:
        with started(args.template, False, state / "k") as (_, _, api, _):
            figures = bursts(api, args.size, args.bursts, args.pause)
        print(json.dumps({"size": args.size, "bursts": args.bursts, **figures}))
    finally:
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
