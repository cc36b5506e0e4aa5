"""Load generator for a running kswitch: throughput and latency of `authorize` over the socket API.

    kswitch-bench [--connect HOST:PORT] [--connections 8] [--duration 20] (--rate 500 | --window 32)
    kswitch-bench --hold 10000 --pid PID [--writer-pid PID] [--settle 5] [--warm 1000]

``--rate R`` offers R authorizations per second in total (spread over the connections,
sent on a fixed schedule whether or not answers keep up: latency then includes
queueing, as a web tier would see it).  Without ``--rate`` each connection keeps
``--window`` requests in flight (as fast as possible).  Prints throughput, latency
p50/p95/p99/max and outcomes by status or error code.  Not a test.

Every request carries an idempotency key, as a web tier should send (``--no-keys`` leaves
them out).  ``--hold N`` measures memory instead: it sends N authorizations without
waiting, lets the switch journal and send them for ``--settle`` seconds, and prints how
much the resident memory of the switch process ``--pid`` grew per pending payment. The
bank must not answer meanwhile (``banksim --delay``), and the connector's
``request_timeout`` and ``max_in_flight`` and the API's ``max_in_flight`` must allow N (+ W).
``--warm W`` holds W payments first and reports also the growth per each of the N that
followed: what a pending payment costs a switch that has already been busy. ``--writer-pid``
reports the journal's writer process alike (it holds no payment, but remembers each one's risk
counts, and its database page cache fills as the journal grows).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from itertools import count

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol

CARDS = ("4111111111111111", "5555555555554444")


class BenchClient(Protocol):
    def __init__(self, run: "Run") -> None:
        self.run = run
        self.buffer = b""
        self.sent: dict[int, float] = {}

    def connectionMade(self) -> None:
        hello = {"id": 0, "op": "hello", "client": self.run.args.client, "token": self.run.args.token}
        self.transport.write(json.dumps(hello).encode() + b"\n")

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            answer = json.loads(line)
            if answer["id"] == 0:
                if not answer["ok"]:
                    sys.exit(f"bench: hello refused: {answer['error']['message']}")
                self.run.ready(self)
                continue
            started = self.sent.pop(answer["id"])
            outcome = answer["status"] if answer["ok"] else f"error:{answer['error']['code']}"
            self.run.done(self, reactor.seconds() - started, outcome)

    def send(self) -> None:
        i = next(self.run.ids)
        request = {
            "id": i, "op": "authorize", "merchant_id": self.run.args.merchant, "store_id": self.run.args.store,
            "order_id": f"bench-{os.getpid()}-{i}", "amount": 1, "currency": "USD", "capture": True,
            "instrument": {"type": "card", "pan": CARDS[i % len(CARDS)], "expiry": "3012", "cvv": "123"},
        }
        if self.run.args.keys:
            request["idempotency_key"] = f"bench-{os.getpid()}-{i}"
        self.sent[i] = reactor.seconds()
        self.transport.write(json.dumps(request).encode() + b"\n")


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.ids = count(1)
        self.clients: list[BenchClient] = []
        self.latencies: list[float] = []
        self.outcomes: Counter[str] = Counter()
        self.started = 0.0
        self.ending = False
        self.held = count()

    def ready(self, client: BenchClient) -> None:
        self.clients.append(client)
        if len(self.clients) == self.args.connections and self.args.hold:
            self.hold()
        elif len(self.clients) == self.args.connections:
            self.started = reactor.seconds()
            reactor.callLater(self.args.duration, self.finish)
            if self.args.rate:
                self.tick(0)
            else:
                for c in self.clients:
                    for _ in range(self.args.window):
                        c.send()

    def hold(self) -> None:
        """Send ``--hold`` authorizations at once; after ``--settle`` seconds, report memory per pending one.

        With ``--warm W``, W authorizations are held first, and after ``--settle`` seconds the memory is read
        again before the N are sent: the warm figure is what each of the N added, leaving out what the
        switch takes once whatever its load (its database connections' page caches filling, its threads'
        malloc arenas, the allocator arenas a first burst leaves behind)."""
        start = self._resident()
        if not self.args.warm:
            self._hold_then_report(start, start)
            return
        self._send_held(self.args.warm)
        reactor.callLater(self.args.settle, lambda: self._hold_then_report(start, self._resident()))

    def _resident(self) -> dict[str, int]:
        pids = {"switch": self.args.pid, "writer": self.args.writer_pid}
        return {name: resident_kib(pid) for name, pid in pids.items() if pid is not None}

    def _send_held(self, n: int) -> None:
        for _ in range(n):
            self.clients[next(self.held) % len(self.clients)].send()

    def _hold_then_report(self, start: dict[str, int], warmed: dict[str, int]) -> None:
        self._send_held(self.args.hold)

        def report() -> None:
            self.ending = True
            after = self._resident()
            answered = sum(self.outcomes.values())
            n, warm = self.args.hold, self.args.warm
            print(f"kswitch bench: {n} authorizations held at the bank for {self.args.settle:g} s"
                  + (f", after {warm} held first" if warm else "") + f" ({answered} answered meanwhile)",
                  file=sys.stdout)
            cold, hot = max(1, n + warm - answered), max(1, n - answered)
            for name in after:
                print(f"  {name + ' RSS':<11} {start[name] / 1024:.1f} MB -> {after[name] / 1024:.1f} MB, "
                      f"{(after[name] - start[name]) / cold:.2f} KB per pending payment", file=sys.stdout)
                if warm:
                    print(f"  {'warm':<11} {warmed[name] / 1024:.1f} MB -> {after[name] / 1024:.1f} MB for the last {n}, "
                          f"{(after[name] - warmed[name]) / hot:.2f} KB per pending payment", file=sys.stdout)
            if len(after) > 1:
                print(f"  {'together':<11} {sum(after[k] - start[k] for k in after) / cold:.2f} KB per pending payment"
                      + (f", warm {sum(after[k] - warmed[k] for k in after) / hot:.2f}" if warm else ""), file=sys.stdout)
            print("  outcomes    " + ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items())), file=sys.stdout)
            reactor.stop()

        reactor.callLater(self.args.settle, report)

    def tick(self, n: int) -> None:
        if self.ending:
            return
        interval = 1.0 / self.args.rate
        due = int((reactor.seconds() - self.started) / interval) + 1
        while n < due:
            self.clients[n % len(self.clients)].send()
            n += 1
        reactor.callLater(max(interval, 0.001), self.tick, n)

    def done(self, client: BenchClient, latency: float, outcome: str) -> None:
        if self.ending:
            return
        self.latencies.append(latency)
        self.outcomes[outcome] += 1
        if not self.args.rate and not self.args.hold:
            client.send()

    def finish(self) -> None:
        self.ending = True
        elapsed = reactor.seconds() - self.started
        lat = sorted(self.latencies)

        def pct(p: float) -> float:
            return lat[min(int(p * len(lat)), len(lat) - 1)] * 1000 if lat else float("nan")

        mode = f"offered {self.args.rate}/s" if self.args.rate else f"window {self.args.window}/connection"
        print(f"kswitch bench: {self.args.connections} connections, {mode}, {elapsed:.1f} s", file=sys.stdout)
        print(f"  completed   {len(lat)} authorizations, {len(lat) / elapsed:.0f}/s", file=sys.stdout)
        print(f"  latency ms  p50 {pct(0.50):.2f}  p95 {pct(0.95):.2f}  p99 {pct(0.99):.2f}  max {pct(1.0):.2f}", file=sys.stdout)
        print("  outcomes    " + ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items())), file=sys.stdout)
        reactor.stop()


def resident_kib(pid: int) -> int:
    """VmRSS of a process on this machine (Linux), in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit(f"kswitch-bench: no VmRSS for process {pid}")


def main() -> None:
    p = argparse.ArgumentParser(prog="kswitch-bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--connect", default="127.0.0.1:7583", metavar="HOST:PORT")
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--rate", type=float, help="offered authorizations per second (default: as fast as possible)")
    p.add_argument("--window", type=int, default=32, help="requests in flight per connection without --rate")
    p.add_argument("--client", default="demo")
    p.add_argument("--token", default=os.environ.get("KSWITCH_TOKEN", "demo-token-not-for-production"))
    p.add_argument("--merchant", default="M100")
    p.add_argument("--store", default="web")
    p.add_argument("--no-keys", dest="keys", action="store_false", help="send no idempotency keys")
    p.add_argument("--hold", type=int, metavar="N", help="hold N payments pending and report memory (needs --pid)")
    p.add_argument("--pid", type=int, help="the switch's process id, for --hold")
    p.add_argument("--writer-pid", type=int, help="with --hold: the journal's writer process, measured alike")
    p.add_argument("--settle", type=float, default=5.0, help="seconds to wait after sending --hold payments")
    p.add_argument("--warm", type=int, default=0, metavar="W",
                   help="with --hold: hold W payments first and report also what each of the N added after them")
    args = p.parse_args()
    if args.hold and not args.pid:
        p.error("--hold needs --pid (the kswitch process whose memory is measured)")
    host, port = args.connect.rsplit(":", 1)
    run = Run(args)

    def unreachable(failure: object) -> None:
        if not run.ending:
            run.ending = True
            print(f"kswitch-bench: cannot connect to {args.connect}: {failure.getErrorMessage()}", file=sys.stdout)  # type: ignore[attr-defined]
            reactor.stop()

    for _ in range(args.connections):
        connectProtocol(TCP4ClientEndpoint(reactor, host, int(port)), BenchClient(run)).addErrback(unreachable)
    reactor.run()


if __name__ == "__main__":
    main()
