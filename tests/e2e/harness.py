"""A whole switch on loopback for end-to-end tests: two simulated banks over mutual TLS,
the switch started from a real TOML config, and a raw JSON-lines client."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredQueue, ensureDeferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol

from switch.app import Switch
from switch.iso.dialect import load_dialect
from switch.iso.framing import Framing
from switch.ops.config import load_config
from switch.ops.devcerts import make_dev_pki
from switch.tools.banksim import BankSim, BankSimOptions, load_accounts
from switch.tools.banksim.tls import TlsFiles

TOKEN = "e2e-token-0123456789"
BANKS = {
    "bank_a": dict(dialect="iso87ascii", framing="2b", tpdu="6000010000", prefixes='["4"]'),
    "bank_b": dict(dialect="iso93binary", framing="4a", tpdu=None, prefixes='["5", "2"]'),
}
DIALECTS = Path(__file__).resolve().parents[2] / "specs" / "dialects"
PLUGIN_BANKS = {
    "bank_a": {**BANKS["bank_a"], "dialect": str(DIALECTS / "angkor.toml"), "plugin": "angkor"},
    "bank_b": {**BANKS["bank_b"], "dialect": str(DIALECTS / "sakura.toml"), "plugin": "sakura"},
}
"""The demo's two banks with their connector plugins and dialects (start_env(banks=PLUGIN_BANKS))."""
PLUGIN_ROUTES = """
[[routes]]
name = "visa"
bin_prefixes = ["4"]
connector = "bank_a"

[[routes]]
name = "mastercard"
bin_prefixes = ["5", "2"]
connector = "bank_b"

[[routes]]
name = "aba-accounts"
instruments = ["bank_account"]
banks = ["ABA"]
connector = "bank_b"

[[routes]]
name = "wallets"
instruments = ["wallet"]
connector = "bank_a"
"""


def config_text(
    state_dir: Path, ports: dict[str, int], request_timeout: float, extra: str = "", routes: str | None = None,
    connector_extra: str = "", banks: dict[str, dict[str, Any]] = BANKS,
) -> str:
    parts = [f"""
[switch]
state_dir = "{state_dir}"
log_format = "json"
shutdown_grace = 5.0

[api]
listen = ["tcp:0:interface=127.0.0.1"]

[admin]
listen = "tcp:0:interface=127.0.0.1"

[journal]
dev_keys = true

[[clients]]
name = "web-1"
token = "{TOKEN}"
merchants = ["M100"]

[[clients]]
name = "other"
token = "{TOKEN}-other"
merchants = ["M200"]

[[merchants]]
id = "M100"
name = "E2E SHOP"
city = "PHNOM PENH"
country = "KH"
mcc = "5999"
acquirer_merchant_id = "000000000100001"
stores = [{{ id = "web", terminal_id = "WEB00001" }}]

[[merchants]]
id = "M200"
name = "OTHER SHOP"
city = "TOKYO"
country = "JP"
mcc = "5411"
acquirer_merchant_id = "000000000200002"
stores = [{{ id = "web", terminal_id = "WEB00002" }}]
"""]
    for name, b in banks.items():
        tpdu = f'tpdu = "{b["tpdu"]}"\n' if b["tpdu"] else ""
        tpdu += f'plugin = "{b["plugin"]}"\n' if b.get("plugin") else ""
        parts.append(f"""
[[connectors]]
name = "{name}"
dialect = "{b["dialect"]}"
framing = "{b["framing"]}"
{tpdu}acquirer_id = "400001"
request_timeout = {request_timeout}
sign_on = true
echo_interval = 30.0
reconnect_initial = 0.05
reconnect_max = 0.2
tls = "dev"
links = [{{ host = "127.0.0.1", port = {ports[name]} }}]
saf = {{ retry_interval = 0.2, backoff = 1.0, max_attempts = 5 }}
{connector_extra}
""")
    if routes is not None:
        parts.append(routes)
    else:
        for name, b in banks.items():
            parts.append(f'\n[[routes]]\nname = "{name}"\nbin_prefixes = {b["prefixes"]}\nconnectors = ["{name}"]\n')
    parts.append(extra)
    return "".join(parts)


class LineClient(Protocol):
    """Speaks the socket API as a web tier would: JSON lines out, JSON lines in, in arrival order."""

    def __init__(self) -> None:
        self.answers: DeferredQueue[dict[str, Any]] = DeferredQueue()
        self.closed: Deferred[None] = Deferred()
        self._buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            self.answers.put(json.loads(line))

    def connectionLost(self, reason: Any = None) -> None:
        self.closed.callback(None)

    def send(self, obj: Any) -> None:
        self.transport.write((obj if isinstance(obj, bytes) else json.dumps(obj).encode()) + b"\n")

    async def call(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.send(obj)
        return await self.answers.get()


@dataclass
class Env:
    switch: Switch
    sims: dict[str, BankSim]
    sim_ports: dict[str, int]
    tls: TlsFiles
    registry: CollectorRegistry
    clients: list[LineClient] = field(default_factory=list)
    config_file: Path | None = None

    @property
    def api_port(self) -> int:
        return self.switch.api_ports[0].getHost().port

    @property
    def admin_port(self) -> int:
        assert self.switch.admin_port is not None
        return self.switch.admin_port.getHost().port

    @property
    def journal(self):
        return self.switch.journal

    async def connect(self, hello: bool = True, client: str = "web-1", token: str = TOKEN) -> LineClient:
        proto = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.api_port), LineClient())
        self.clients.append(proto)
        if hello:
            answer = await proto.call({"id": "h", "op": "hello", "client": client, "token": token})
            assert answer["ok"], answer
        return proto

    async def restart_bank(self, name: str) -> None:
        await self.sims[name].listen(self.sim_ports[name], self.tls)


def authorize(i: Any = 1, pan: str = "4111111111111111", amount: int = 1250, **extra: Any) -> dict[str, Any]:
    req = {
        "id": i, "op": "authorize", "merchant_id": "M100", "store_id": "web", "order_id": f"order-{i}",
        "amount": amount, "currency": "USD", "capture": True,
        "instrument": {"type": "card", "pan": pan, "expiry": "3012", "cvv": "123"},
    }
    req.update(extra)
    return req


async def start_env(
    tmp_path: Path, request_timeout: float = 2.0, extra_config: str = "", banks: dict[str, dict[str, Any]] = BANKS,
    **config: Any,
) -> Env:
    state = tmp_path / "state"
    pki = make_dev_pki(state / "pki")
    tls = TlsFiles(pki.server.cert, pki.server.key, pki.ca.cert)
    sims: dict[str, BankSim] = {}
    ports: dict[str, Any] = {}
    for name, b in banks.items():
        framing = Framing(b["framing"], tpdu=b["tpdu"] is not None)
        sims[name] = BankSim(reactor, load_dialect(b["dialect"]), framing, load_accounts(), BankSimOptions(name=name))
        ports[name] = await sims[name].listen(0, tls)
    cfg_file = tmp_path / "kswitch.toml"
    numbers = {n: p.getHost().port for n, p in ports.items()}
    cfg_file.write_text(config_text(state, numbers, request_timeout, extra_config, banks=banks, **config))
    registry = CollectorRegistry()
    switch = Switch(load_config(cfg_file), reactor, registry)
    await switch.start()
    await gatherResults([bank.connector.when_ready() for bank in switch.banks.values()])
    return Env(switch, sims, numbers, tls, registry, config_file=cfg_file)


async def stop_env(env: Env) -> None:
    for c in env.clients:
        if c.transport is not None:
            c.transport.loseConnection()
    await env.switch.stop()
    await gatherResults([s.close() for s in env.sims.values()])


async def eventually(check: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll an async or plain predicate until it returns something truthy (integration tests only)."""
    from twisted.internet.task import deferLater

    deadline = reactor.seconds() + timeout
    while True:
        result = check()
        if isinstance(result, Deferred) or hasattr(result, "__await__"):
            result = await result
        if result:
            return result
        if reactor.seconds() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await deferLater(reactor, interval, lambda: None)


def run(coro: Any) -> Deferred[Any]:
    return ensureDeferred(coro)


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    from twisted.web.client import Agent, readBody

    response = await Agent(reactor).request(b"GET", f"http://127.0.0.1:{port}{path}".encode())
    return response.code, await readBody(response)
