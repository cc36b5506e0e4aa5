"""Where the open loop's latency is: inside the switch or around it, and when in the run.

perf_ratio.py gives the web tier's p50 and p99 over a run, open_loop.py the switch's histograms for the same
seconds. This one keeps every request. It sends authorizations like perf_ratio's ``--rate``: 8 connections,
each request on the next connection, at a fixed rate. It notes when each was sent and answered. Once the
switch has stopped, it reads the switch's own duration for each request from its ``api_request`` log line:
from the read that brought the request's line to the answer's write.

What is left of the web tier's wait is outside the switch's measure:
* the request in the socket until the reactor reads it;
* the answer in the transport until the reactor's next turn sends it;
* the load generator itself. The relay at the same rate answers in under a millisecond at p50, so the
  generator's share is small.

Prints one JSON line of percentiles (the web tier's wait, the switch's own, the rest), then, for each half
second of the run, the worst wait a request sent in it had and the switch's own share of that:

    PYTHONPATH=$PWD .tox/py3/bin/python bench/timeline.py --rate 770 [--seconds 10] [--template F] [--warm 2]
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import shutil
import socket
import tempfile
import time
from pathlib import Path

from cpu_per_auth import HELLO, started  # beside this script; it finds perf_ratio

CONNECTIONS = 8
SLICE = 0.5
"""Seconds of the run per line of the timeline."""


def connect(port: int) -> socket.socket:
    conn = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn.sendall(json.dumps({"id": 0, "op": "hello", "client": HELLO[0], "token": HELLO[1]}).encode() + b"\n")
    answer = b""
    while b"\n" not in answer:
        answer += conn.recv(4096)
    if not json.loads(answer.split(b"\n")[0]).get("ok"):
        raise SystemExit(f"hello refused: {answer!r}")
    conn.setblocking(False)
    return conn


def load(port: int, seconds: float, rate: float) -> list[tuple[float, float, int]]:
    """(sent, waited, request id) of every answered request: seconds from the start, seconds."""
    selector = selectors.DefaultSelector()
    conns = [connect(port) for _ in range(CONNECTIONS)]
    for conn in conns:
        selector.register(conn, selectors.EVENT_READ, [b""])
    tag = f"{os.getpid()}-{time.time_ns()}"
    sent_at: dict[int, float] = {}
    answered: list[tuple[float, float, int]] = []
    start = time.perf_counter()
    offered = 0
    while (now := time.perf_counter()) < start + seconds:
        while offered < int((now - start) * rate):
            offered += 1
            sent_at[offered] = time.perf_counter()
            conns[offered % CONNECTIONS].sendall(json.dumps({
                "id": offered, "op": "authorize", "merchant_id": "M1", "store_id": "S1",
                "order_id": f"t-{tag}-{offered}", "amount": 1, "currency": "USD", "capture": True,
                "instrument": {"type": "card", "pan": "4111111111111111", "expiry": "3012", "cvv": "123"},
            }).encode() + b"\n")
        for key, _ in selector.select(timeout=0.001):
            *lines, key.data[0] = (key.data[0] + key.fileobj.recv(1 << 16)).split(b"\n")
            for line in lines:
                got = time.perf_counter()
                request_id = json.loads(line)["id"]
                if (sent := sent_at.pop(request_id, None)) is not None:
                    answered.append((sent - start, got - sent, request_id))
    for conn in conns:
        conn.close()
    return answered


def switch_durations(log: Path) -> dict[int, float]:
    """Request id -> the switch's own duration in seconds, from its ``api_request`` lines."""
    durations = {}
    for line in log.read_text(errors="replace").splitlines():
        if '"api_request"' in line:
            entry = json.loads(line)
            durations[entry["request_id"]] = entry["duration_ms"] / 1000
    return durations


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {f"p{round(q * 100)}_ms": round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)
            for q in (0.5, 0.9, 0.99)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, required=True, help="authorizations a second, offered")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--template", help="kswitch config template, as perf_ratio's --template")
    parser.add_argument("--warm", type=float, default=0,
                        help="seconds of the same load first, not measured (perf_ratio's --rate has none)")
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="ktimeline-"))
    try:
        with started(args.template, False, state / "k") as (_, _, api, _):
            time.sleep(0.5)  # as perf_ratio, between /readyz and the load
            if args.warm:
                load(api, args.warm, args.rate)
            answered = load(api, args.seconds, args.rate)
        inside = switch_durations(state / "k" / "kswitch.log")
    finally:
        shutil.rmtree(state, ignore_errors=True)
    rows = [(sent, waited, inside[rid]) for sent, waited, rid in answered if rid in inside]
    if not rows:
        raise SystemExit("no request was answered and logged")
    worst = sorted(rows, key=lambda row: row[1])[-max(1, len(rows) // 100):]
    print(json.dumps({
        "rate": args.rate, "answered": len(answered), "logged": len(rows),
        "web_tier": percentiles([waited for _, waited, _ in rows]),
        "switch": percentiles([own for _, _, own in rows]),
        "around_the_switch": percentiles([max(0.0, waited - own) for _, waited, own in rows]),
        "worst_1%_switch_share_p50": round(sorted(own / waited for _, waited, own in worst)[len(worst) // 2], 2),
    }))
    slices: dict[int, list[tuple[float, float]]] = {}
    for sent, waited, own in rows:
        slices.setdefault(int(sent / SLICE), []).append((waited, own))
    for index, pairs in sorted(slices.items()):
        waited, own = max(pairs)
        print(f"{index * SLICE:5.1f} s  {len(pairs):5d} sent  worst {waited * 1000:6.1f} ms, the switch's own {own * 1000:6.1f}")


if __name__ == "__main__":
    main()
