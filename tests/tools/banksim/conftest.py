"""Fixtures: simulated banks on ephemeral ports, closed (with their clients) after each test."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from switch.iso.dialect import Dialect, load_dialect
from switch.iso.framing import Framing
from switch.tools.banksim import BankSim, BankSimOptions, load_accounts
from tests.tools.banksim.wire import IsoClient, connect


@dataclass
class RunningBank:
    sim: BankSim
    port: int
    dialect: Dialect
    framing: Framing
    clients: list[IsoClient] = field(default_factory=list)

    def connect(self):
        d = connect(self.port, self.dialect, self.framing)
        return d.addCallback(lambda client: self.clients.append(client) or client)


@pytest.fixture
def banks():
    """``yield banks(dialect="iso87ascii", framing=Framing("2b"), tls=None, **BankSimOptions)`` -> RunningBank."""
    started: list[RunningBank] = []

    def start(dialect: str = "iso87ascii", framing: Framing | None = None, tls: Any = None, **options: Any) -> Deferred:
        framing = framing or Framing("2b")
        d = load_dialect(dialect)
        sim = BankSim(reactor, d, framing, load_accounts(), BankSimOptions(**options))

        def listening(port: Any) -> RunningBank:
            bank = RunningBank(sim, port.getHost().port, d, framing)
            started.append(bank)
            return bank

        return sim.listen(0, tls).addCallback(listening)

    yield start
    for bank in started:
        for client in bank.clients:
            client.close()
        pytest_twisted.blockon(bank.sim.close())
