"""How late banksim's answers come at the tail of a burst on one link: what Nagle's algorithm costs a bank test.

A switch between bursts sends the bank nothing, so its kernel acknowledges the bank's answers late (Linux's delayed
ACK, 40 ms). A host that kept Nagle's algorithm on would hold each answer written while the previous one was not
yet acknowledged. This runs banksim (answers after ``--delay``) and one plain-TCP `Connector` in this process,
sends ``--bursts`` bursts of ``--size`` authorizations one ``--spacing`` apart, and prints the p50, p90 and worst
of each burst's last answer, in milliseconds, from the burst's first request:

    PYTHONPATH=$PWD .tox/py3/bin/python bench/banksim_burst.py [--size 16 --bursts 40 --spacing 0.001 --delay 0.005]
"""

from __future__ import annotations

import argparse
import statistics
import time

from prometheus_client import CollectorRegistry
from twisted.internet import defer, task

from switch.bank.connector import Connector, ConnectorOptions, LinkOptions
from switch.iso.dialect import load_dialect
from switch.iso.framing import Framing
from switch.observe.logs import configure
from switch.tools.banksim import BankSim, BankSimOptions, Faults, load_accounts

DIALECT = load_dialect("iso87binary")
FRAMING = Framing("2b")
PAN = "4111111111111111"  # banksim's default approved test card


def authorization(n: int) -> dict[str, str]:
    return {"t": "0100", "2": PAN, "3": "000000", "4": "000000000100", "7": "1203120000", "41": "TERM0001",
            "49": "840", "37": f"{n:012d}"}


async def bursts(reactor: object, args: argparse.Namespace) -> None:
    sim = BankSim(reactor, DIALECT, FRAMING, load_accounts(), BankSimOptions(faults=Faults(delay=args.delay)))
    port = (await sim.listen(0)).getHost().port
    options = ConnectorOptions("bank", DIALECT, FRAMING, None, (LinkOptions("link1", "127.0.0.1", port, None),))
    connector = Connector(options, registry=CollectorRegistry())
    connector.start()
    await connector.when_ready()
    tails, n = [], 0
    for _ in range(args.bursts):
        began = time.perf_counter()
        answered = []
        for _ in range(args.size):
            n += 1
            answered.append(connector.request(authorization(n)).addCallback(lambda _: time.perf_counter() - began))
            await task.deferLater(reactor, args.spacing, lambda: None)
        tails.append(max(await defer.gatherResults(answered)) * 1000)
        await task.deferLater(reactor, 0.05, lambda: None)
    await connector.stop()
    await sim.close()
    tails.sort()
    print(f"{args.bursts} bursts of {args.size}, {args.spacing * 1000:g} ms apart, banksim delay {args.delay * 1000:g} ms: "
          f"last answer p50 {statistics.median(tails):.1f} ms, p90 {tails[int(0.9 * len(tails))]:.1f}, "
          f"worst {tails[-1]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=16, help="authorizations a burst")
    parser.add_argument("--bursts", type=int, default=40)
    parser.add_argument("--spacing", type=float, default=0.001, help="seconds between a burst's requests")
    parser.add_argument("--delay", type=float, default=0.005, help="banksim's wait before each answer, seconds")
    args = parser.parse_args()
    configure("json", level="warning")
    task.react(lambda reactor: defer.ensureDeferred(bursts(reactor, args)))


if __name__ == "__main__":
    main()
