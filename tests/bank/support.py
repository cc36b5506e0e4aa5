"""Shared pieces of the link tests: a harness owning hosts and connectors, and small helpers."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from switch.bank.connector import Connector, ConnectorOptions, LinkOptions, TlsClientOptions
from switch.bank.tls import server_tls_options
from switch.iso.dialect import Dialect, load_dialect
from switch.iso.framing import Framing
from switch.ops.devcerts import DevPki
from tests.bank.isohost import IsoHost, eventually, sleep

ISO87 = load_dialect("iso87ascii")
FRAMING = Framing("2b")


class Harness:
    """Hosts and connectors made by one test, torn down after it."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.hosts: list[IsoHost] = []
        self.connectors: list[Connector] = []

    def host(self, dialect: Dialect = ISO87, framing: Framing = FRAMING, tls: Any = None, port: int = 0) -> IsoHost:
        host = IsoHost(dialect, framing, tls)
        host.listen(port)
        self.hosts.append(host)
        return host

    def tls_host(self, pki: DevPki, require_client_cert: bool = True, **kw: Any) -> IsoHost:
        return self.host(tls=server_tls_options(pki.server.cert, pki.server.key, pki.ca.cert, require_client_cert), **kw)

    def connector(
        self,
        *ports: int,
        dialect: Dialect = ISO87,
        framing: Framing = FRAMING,
        tpdu: bytes | None = None,
        tls: TlsClientOptions | None = None,
        link: dict[str, Any] | None = None,
        start: bool = True,
        clock: Any = None,
        rng: Any = None,
        **options: Any,
    ) -> Connector:
        links = tuple(
            LinkOptions(f"link{i}", "127.0.0.1", port, tls, **(link or {})) for i, port in enumerate(ports, 1)
        )
        connector = Connector(
            ConnectorOptions("bank", dialect, framing, tpdu, links, **options),
            clock=clock, rng=rng, registry=self.registry,
        )
        self.connectors.append(connector)
        if start:
            connector.start()
        return connector

    async def close(self) -> None:
        for host in self.hosts:
            await host.stop()
        await sleep(0.02)
        for connector in self.connectors:
            for link in connector.links:
                stopped = link.stop()
                if link._protocol is not None:  # a Clock-driven sign-off would never time out
                    link._protocol.transport.abortConnection()
                await eventually(lambda: stopped.called, 2.0, "link stop")


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name]


def sale(terminal: str = "TERM0001", amount: str = "000000001000", pan: str = "4111111111111111") -> dict[str, str]:
    return {"t": "0200", "2": pan, "3": "000000", "4": amount, "41": terminal, "49": "978"}
