"""Benchmark of the bank-link layer: codec speed per dialect, and one link under load.

    kswitch-bench-link [--requests 5000] [--in-flight 1,10,100] [--dialect iso87binary]
                       [--framing 2b] [--tls] [--log-level warning] [--codec-seconds 1]

1. For every shipped dialect: encode + decode of a typical 0200 purchase (16 fields),
   in round trips per second.
2. One `Connector` with one link to banksim (a separate process on
   127.0.0.1, plain TCP or mutual TLS with a throw-away PKI) keeping N requests in
   flight: request/response pairs per second and p50/p99 latency, per N.

The host is part of what is measured (it decodes, decides and encodes every message
in Python too).  Log level ``warning`` leaves out the per-message ``iso_out``/``iso_in``
events (debug level); ``--log-level debug`` measures with them (written to /dev/null).  Not a test.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import quantiles

from prometheus_client import CollectorRegistry
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import react
from twisted.python.failure import Failure

import switch
from switch.bank.connector import Connector, ConnectorOptions, LinkOptions, TlsClientOptions
from switch.iso.dialect import SPECS_DIR, Dialect, FieldDef, load_dialect
from switch.iso.framing import FRAMING_NAMES, Framing
from switch.observe.logs import configure
from switch.ops.devcerts import make_dev_pki

PAN = "4111111111111111"  # banksim's default approved test card
SAMPLE = {
    "2": PAN, "3": "000000", "4": "000000000001", "7": "1123120000", "11": "000001", "12": "120000",
    "13": "1123", "14": "3012", "18": "5999", "22": "812", "32": "123456", "37": "633012000001",
    "41": "TERM0001", "42": "MERCHANT0000001", "43": "KSWITCH BENCH SHOP       BERLIN      DE", "49": "840",
}
APPROVAL = {"38": "A1B2C3", "39": "000"}


def fit(value: str, field: FieldDef) -> str:
    """The sample value shaped to this dialect's definition of the field."""
    if field.cls in ("IFB_BINARY", "IFA_BINARY"):
        return "00" * field.length
    variable = "LL" in field.cls
    if variable:
        return value[: field.length]
    numeric = field.cls in ("IFA_NUMERIC", "IFB_NUMERIC")
    return value[-field.length:].rjust(field.length, "0") if numeric else value[: field.length].ljust(field.length)


def purchase(dialect: Dialect) -> dict[str, str]:
    message = {"t": "1200" if dialect.version == 1993 else "0200"}
    message.update({n: fit(v, dialect.fields[n]) for n, v in SAMPLE.items() if n in dialect.fields})
    return message


def authorization(dialect: Dialect) -> tuple[dict[str, str], dict[str, str]]:
    """An authorization request and its approval (the request's echoes, an approval code, field 39): the two
    messages one payment costs the codec (`bench/codec.py`, `tests/iso/test_codec.py`)."""
    request = {**purchase(dialect), "t": "1100" if dialect.version == 1993 else "0100"}
    approval = {n: fit(v, dialect.fields[n]) for n, v in APPROVAL.items() if n in dialect.fields}
    return request, {**request, "t": request["t"][:2] + "10", **approval}


def codec_rates(seconds: float) -> list[tuple[str, int, float]]:
    rows = []
    for path in sorted(SPECS_DIR.glob("*.toml")):
        dialect = load_dialect(path.stem)
        message = purchase(dialect)
        assert dialect.decode(dialect.encode(message)) == message, path.stem
        rounds, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            for _ in range(200):
                dialect.decode(dialect.encode(message))
            rounds += 200
        rows.append((path.stem, len(dialect.encode(message)), rounds / elapsed))
    return rows


def start_banksim(args: argparse.Namespace, pki_dir: Path | None) -> tuple[subprocess.Popen[str], int]:
    command = [sys.executable, "-m", "switch.tools.banksim", "--listen", "127.0.0.1:0", "--dialect", args.dialect,
               "--framing", args.framing, "--log-level", "warning"]
    if pki_dir is None:
        command.append("--plain")
    else:
        command += ["--tls-cert", str(pki_dir / "server.pem"), "--tls-key", str(pki_dir / "server.key"),
                    "--tls-ca", str(pki_dir / "ca.pem")]
    # The child imports the same ``switch`` as this process, installed or from a checkout.
    path = os.pathsep.join(filter(None, (str(Path(switch.__file__).resolve().parent.parent),
                                         os.environ.get("PYTHONPATH"))))
    host = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONPATH": path})
    line = host.stdout.readline() if host.stdout else ""
    if not line.startswith("LISTENING "):
        host.kill()
        sys.exit(f"kswitch-bench-link: banksim did not start (got {line!r})")
    return host, int(line.split()[1])


async def run_load(connector: Connector, dialect: Dialect, requests: int, in_flight: int) -> tuple[float, list[float], int]:
    """Keep ``in_flight`` requests outstanding until ``requests`` have completed."""
    base = purchase(dialect)
    latencies: list[float] = []
    failures = 0
    launched = 0
    finished: Deferred[None] = Deferred()

    def launch() -> None:
        nonlocal launched
        if launched >= requests:
            return
        launched += 1
        sent_at = time.perf_counter()
        terminal = f"T{launched % 10_000_000:07d}"
        connector.request({**base, "41": terminal}).addBoth(done, sent_at)

    def done(result: object, sent_at: float) -> None:
        nonlocal failures
        latencies.append(time.perf_counter() - sent_at)
        failures += isinstance(result, Failure)
        if len(latencies) == requests:
            finished.callback(None)
        else:
            launch()

    started = time.perf_counter()
    for _ in range(in_flight):
        launch()
    await finished
    return time.perf_counter() - started, latencies, failures


async def link_rates(reactor: object, args: argparse.Namespace, port: int, pki_dir: Path | None) -> list[tuple[int, float, float, float, int]]:
    dialect = load_dialect(args.dialect)
    tls = TlsClientOptions(pki_dir / "ca.pem", pki_dir / "client.pem", pki_dir / "client.key") if pki_dir else None
    link = LinkOptions("bench", "127.0.0.1", port, tls, echo_interval=0)
    options = ConnectorOptions("bench", dialect, Framing(args.framing), None, (link,),
                               max_in_flight=max(args.in_flight), request_timeout=60.0)
    connector = Connector(options, reactor=reactor, registry=CollectorRegistry())
    connector.start()
    await connector.when_ready()
    await run_load(connector, dialect, min(1000, args.requests), 10)  # warm-up
    rows = []
    for in_flight in args.in_flight:
        elapsed, latencies, failures = await run_load(connector, dialect, args.requests, in_flight)
        cuts = quantiles(latencies, n=100)
        rows.append((in_flight, args.requests / elapsed, cuts[49] * 1000, cuts[98] * 1000, failures))
    await connector.stop()
    return rows


def main() -> None:
    p = argparse.ArgumentParser(prog="kswitch-bench-link", description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=5000, help="requests per in-flight setting (default %(default)s)")
    p.add_argument("--in-flight", type=lambda s: [int(x) for x in s.split(",")], default=[1, 10, 100],
                   help="comma-separated numbers of requests kept in flight (default 1,10,100)")
    p.add_argument("--dialect", default="iso87binary", help="dialect for the link run (default %(default)s)")
    p.add_argument("--framing", default="2b", choices=FRAMING_NAMES, help="framing for the link run (default %(default)s)")
    p.add_argument("--tls", action="store_true", help="mutual TLS on the link (throw-away PKI)")
    p.add_argument("--log-level", default="warning", choices=("debug", "info", "warning"))
    p.add_argument("--codec-seconds", type=float, default=1.0, help="time per dialect for the codec run")
    args = p.parse_args()
    with open("/dev/null", "w") as sink:
        configure("json", stream=sink, level=args.log_level)
        print(f"python {sys.version.split()[0]}, log level {args.log_level}", file=sys.stdout)
        print("\ncodec: encode + decode of a 0200/1200 purchase (16 fields)", file=sys.stdout)
        print(f"  {'dialect':<14}{'bytes':>6}{'round trips/s':>16}", file=sys.stdout)
        for name, size, rate in codec_rates(args.codec_seconds):
            print(f"  {name:<14}{size:>6}{rate:>16,.0f}", file=sys.stdout)
        with tempfile.TemporaryDirectory() as tmp:
            pki_dir = Path(tmp) if args.tls else None
            if pki_dir is not None:
                make_dev_pki(pki_dir)
            host, port = start_banksim(args, pki_dir)
            try:
                react(lambda reactor: ensureDeferred(report_link(reactor, args, port, pki_dir)))
            finally:
                host.terminate()
                host.wait(10)


async def report_link(reactor: object, args: argparse.Namespace, port: int, pki_dir: Path | None) -> None:
    rows = await link_rates(reactor, args, port, pki_dir)
    print(f"\nlink: one {'mutual-TLS' if args.tls else 'plain TCP'} link to banksim, {args.dialect}, "
          f"framing {args.framing}, {args.requests} requests per row", file=sys.stdout)
    print(f"  {'in flight':>9}{'pairs/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'failed':>8}", file=sys.stdout)
    for in_flight, rate, p50, p99, failures in rows:
        print(f"  {in_flight:>9}{rate:>10,.0f}{p50:>9.2f}{p99:>9.2f}{failures:>8}", file=sys.stdout)

if __name__ == "__main__":
    main()
