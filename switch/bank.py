"""A bank as the payment core sees it: a connector plus what we say on the acquirer's behalf."""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.defer import Deferred

from switch.connector import Connector
from switch.dialect import Message
from switch.numbering import RrnAllocator
from switch.saf import SafOptions
from switch.translate import AcquirerProfile


@dataclass
class Bank:
    connector: Connector
    profile: AcquirerProfile
    saf: SafOptions
    rrns: RrnAllocator

    @property
    def name(self) -> str:
        return self.connector.name

    @property
    def ready(self) -> bool:
        return self.connector.ready

    active: int = 0
    """Payments between routing and their answer (journal writes included), for ``max_in_flight``."""

    @property
    def saturated(self) -> bool:
        """At the connector's ``max_in_flight``: a new payment would be refused unsent."""
        return self.active >= self.connector.options.max_in_flight

    def reserve_stan(self, stan: str | None = None) -> str:
        return self.connector.reserve_stan(stan)

    def release_stan(self, stan: str) -> None:
        self.connector.release_stan(stan)

    def next_rrn(self) -> str:
        return self.rrns.allocate()

    def request(self, message: Message, timeout: float | None = None) -> Deferred[Message]:
        return self.connector.request(message, timeout)
