"""A bank as the payment core sees it: a connector plus what we say on the acquirer's behalf."""

from __future__ import annotations

from dataclasses import InitVar, dataclass, field

from twisted.internet.defer import Deferred

from connectors.base import ConnectorPlugin
from switch.bank.connector import Connector
from switch.bank.numbering import RrnAllocator
from switch.domain.answering import Answerable
from switch.engine.saf import SafOptions
from switch.iso.dialect import Message
from switch.iso.translate import AcquirerProfile


@dataclass
class Bank:
    connector: Connector
    profile: AcquirerProfile
    saf: SafOptions
    rrns: RrnAllocator
    connector_plugin: InitVar[ConnectorPlugin | None] = None
    plugin: ConnectorPlugin = field(init=False)
    """The connector's plugin: what builds this bank's messages and reads its answers (the base
    `ConnectorPlugin` for a connector without one)."""

    def __post_init__(self, connector_plugin: ConnectorPlugin | None) -> None:
        self.plugin = connector_plugin or ConnectorPlugin(self.profile.dialect)

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
        """A STAN for field 11 (``stan``: that number, for an advice repeat keeping its
        original's). Once the message is handed to `request`, the connector gives the STAN
        back whatever happens; until then (building the message, journalling it) a failure
        must give it back with `release_stan` (see `switch.bank.mux`)."""
        return self.connector.reserve_stan(stan)

    def release_stan(self, stan: str) -> None:
        """Give back a reserved STAN that never reached `request`; a no-op once it has."""
        self.connector.release_stan(stan)

    def next_rrn(self) -> str:
        """A field 37 value never handed out before (`switch.bank.numbering.RrnAllocator`);
        raises `RrnUnavailable` rather than repeat one."""
        return self.rrns.allocate()

    def request(
        self, message: Message, timeout: float | None = None, *, encoded: bytes | None = None
    ) -> Deferred[Message]:
        return self.connector.request(message, timeout, encoded=encoded)

    def request_to(self, answer_to: Answerable[Message], message: Message, *, encoded: bytes | None = None) -> None:
        self.connector.request_to(answer_to, message, encoded=encoded)
