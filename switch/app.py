"""The running switch: every component built from one `SwitchConfig` and started in order.

Start-up order matters for money: the journal opens first, crash recovery queues
reversals for whatever a previous run left in flight, and only then do the links
come up and the socket API accept payments.  Shutdown runs the other way: stop
accepting, let in-flight payments finish (bounded), sign off, close the journal.
"""

from __future__ import annotations

import base64
import os
import secrets
import sys
from dataclasses import replace
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import CollectorRegistry
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import LoopingCall, deferLater
from twisted.python.failure import Failure

from connectors import ConnectorPlugin, plugin_class
from switch.bank.connector import Connector
from switch.bank.numbering import RrnAllocator
from switch.engine.bank import Bank
from switch.engine.confirmation import Confirmations
from switch.engine.dayend import CutoverBusy, DayEnd
from switch.engine.engine import Engine
from switch.engine.notify import Notifier
from switch.engine.payments import PaymentService
from switch.engine.recovery import recover, sweep_stale_pending
from switch.engine.risk import RiskStage
from switch.engine.saf import StoreAndForward
from switch.gateway.flow import BacklogGate
from switch.gateway.lifecycle import register_lifecycle
from switch.gateway.listen import listen
from switch.gateway.notifications import NotifyingApiFactory
from switch.gateway.ops import default_operations
from switch.gateway.protocol import ApiFactory
from switch.iso.mti import is_network, network_kind
from switch.journal import Journal
from switch.journal.errors import CutoverRefused
from switch.journal.journal import open_journal
from switch.journal.lease import LeaseLost, NodeLease
from switch.journal.models import utc_from_seconds
from switch.journal.vault import generate_key
from switch.net import turnwrites
from switch.observe import logs
from switch.ops.admin import OperatorError, admin_site
from switch.ops.config import SwitchConfig, load_config
from switch.ops.devcerts import make_dev_pki
from switch.ops.reports.build import SettlementReport, settlement_report
from switch.ops.settings import ConfigError

log = structlog.get_logger("kswitch.switch")

LINK_WAIT = 5.0  # seconds the API waits at start-up for links to sign on
SWEEP_INTERVAL = 60.0  # seconds between looks for payments pending long past their bank timeout
REPO = Path(__file__).resolve().parent.parent
# Seconds each shutdown step may wait (after the API's ``shutdown_grace``): links finish the bank
# requests already written, sign off and close; the journal releases its lease and closes; the
# simulators end on SIGTERM (else SIGKILL, then SIMULATOR_KILL_WAIT more).  A step that runs out
# is logged (``shutdown_step_timed_out``) and the stop goes on: what it left is what a crash
# leaves, and recovery at the next start handles it.
STOP_WAITS = {"links": 5.0, "journal": 5.0, "simulators": 3.0}
SIMULATOR_KILL_WAIT = 1.0


def _logged(failure: Failure, event: str) -> None:
    logs.failed(log, event, failure)


def ensure_dev_keys(keys_dir: Path) -> None:
    """Development PAN keys, created once with owner-only permissions. Never for production."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    for name, make in (
        ("pan-keys", lambda: f"dev1:{generate_key()}\n"),
        ("pan-hash-secret", lambda: base64.b64encode(secrets.token_bytes(32)).decode() + "\n"),
    ):
        path = keys_dir / name
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(make())
            log.warning("dev_key_created", path=str(path), note="development key; not for production")


class _Simulator(ProcessProtocol):
    """A banksim child process. It writes its logs straight to our standard error."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ended: Deferred[None] = Deferred()

    def processEnded(self, reason: Any) -> None:
        log.info("simulator_stopped", simulator=self.name)
        self.ended.callback(None)


class Switch:
    def __init__(self, config: SwitchConfig, reactor: Any, registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self.reactor = reactor
        self.registry = registry or CollectorRegistry()
        self.journal: Journal | None = None
        self.lease: NodeLease | None = None
        self.lease_lost: LeaseLost | None = None
        """Why the switch stopped itself, if it did: its journal's lease is no longer its own."""
        self.banks: dict[str, Bank] = {}
        self.saf: StoreAndForward | None = None
        self.confirmations: Confirmations | None = None
        self.service: PaymentService | None = None
        self.risk: RiskStage | None = None
        self.notifier: Notifier | None = None
        self.day_end: DayEnd | None = None
        self.api_factory: ApiFactory | None = None
        self.api_ports: list[IListeningPort] = []
        self.admin_port: IListeningPort | None = None
        self._simulators: list[tuple[Any, _Simulator]] = []
        self._stopping: Deferred[None] | None = None
        self._housekeeping = LoopingCall(self._purge_idempotency_keys)
        self._sweeper = LoopingCall(self._sweep_stale_pending)

    # -- start ------------------------------------------------------------------------

    def start(self) -> Deferred[None]:
        return ensureDeferred(self._start())

    async def _start(self) -> None:
        cfg = self.config
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        if cfg.dev_keys:
            ensure_dev_keys(cfg.state_dir / "keys")
        if cfg.simulators or any(b.dev_tls for b in cfg.banks.values()):
            make_dev_pki(cfg.pki_dir)
        for sim in cfg.simulators:
            ledger = ("--ledger", str(cfg.state_dir / f"{sim.connector}.ledger")) if sim.ledger else ()
            self._start_simulator(sim.connector, sim.accounts, sim.extra_args + ledger)

        self.journal = await open_journal(cfg.journal, self.reactor, registry=self.registry,
                                          clock=self.reactor.seconds)
        self.lease = NodeLease(self.journal, self.reactor, self._lease_lost)
        await self.lease.acquire()  # before recovery: only the journal's one node may resume its payments
        now = self.reactor.seconds()
        await self.journal.open_business_days(
            {name: b.day_end.date_at(now) for name, b in cfg.banks.items()})
        plugins: dict[str, ConnectorPlugin] = {}
        for name, settings in cfg.banks.items():
            connector = Connector(settings.options, reactor=self.reactor, registry=self.registry)
            profile = settings.profile
            if settings.plugin is not None:
                plugin = plugins[name] = plugin_class(settings.plugin)(profile.dialect)
                if plugin.reversal is not None:
                    profile = replace(profile, reversal=plugin.reversal)
            rrns = RrnAllocator(self.reactor.seconds, partial(self.journal.reserve_numbers, f"rrn:{name}"),
                                node=cfg.node)
            await rrns.start()
            self.banks[name] = Bank(connector, profile, settings.saf, rrns, plugins.get(name))
        self.saf = StoreAndForward(self.reactor, self.journal, self.banks, self.registry)
        self.confirmations = Confirmations(self.reactor, self.journal, self.banks, self.saf,
                                           {name: b.confirmation_timeout for name, b in cfg.banks.items()})
        self.notifier = Notifier(self.reactor, self.journal, self.registry, cfg.notify)
        # The engine installs itself as store-and-forward's build/settle hooks: every queued item is
        # built per message class and plugin, and settles its operation and parent in one commit.
        engine = Engine(self.reactor, self.journal, self.banks, self.saf, plugins)
        self.risk = RiskStage(self.reactor, self.journal, cfg.risk, self.registry)
        self.service = PaymentService(self.reactor, self.journal, self.banks, cfg.router, cfg.api.merchants,
                                      self.saf, self.registry,
                                      {name: b.void_after_capture for name, b in cfg.banks.items()},
                                      engine=engine, confirmations=self.confirmations, risk=self.risk)
        self.day_end = DayEnd(self.reactor, self.journal, self.banks,
                              {name: b.day_end for name, b in cfg.banks.items()}, self.registry)
        for bank in self.banks.values():
            bank.connector.mux.on_late_response = self._late_response_hook(bank)
            bank.connector.on_inbound_request = self._inbound_request_hook(bank, self.service.plugin(bank))
            bank.connector.on_network_request = bank.plugin.network
        recovered = await recover(self.reactor, self.journal, self.banks, self.saf, self.registry, self.confirmations)
        if recovered:
            log.warning("recovered_in_flight", count=recovered)
        for bank in self.banks.values():
            bank.connector.start()
        await self._links_ready(LINK_WAIT)
        self.saf.start()
        self.day_end.start()
        self._housekeeping.clock = self.reactor
        self._housekeeping.start(3600, now=True).addErrback(_logged, "housekeeping_failed")
        self._sweeper.clock = self.reactor
        self._sweeper.start(SWEEP_INTERVAL, now=False).addErrback(_logged, "sweeper_failed")
        self.api_factory = NotifyingApiFactory(self.notifier, self.service, cfg.api, reactor=self.reactor,
                                               registry=self.registry,
                                               operations=register_lifecycle(default_operations()))
        gate = BacklogGate.for_batches(self.journal.backlog, self.journal.max_batch)
        self.api_factory.use_gate(gate)
        self.journal.after_batches(gate.drained)
        self.api_ports = list(await listen(self.reactor, cfg.api_listen, self.api_factory))
        self.admin_port = await serverFromString(self.reactor, cfg.admin_listen).listen(
            admin_site(self.registry, self.link_states, self.operator_cutover, reports=self._settlement_report)
        )
        log.info("switch_started", config=str(cfg.file), api=list(cfg.api_listen), admin=cfg.admin_listen,
                 connectors=sorted(self.banks), journal=cfg.journal.backend)

    async def _settlement_report(self, business_date: str | None, bank: str | None,
                                 merchant: str | None) -> SettlementReport | None:
        return await settlement_report(self.journal, business_date, self.config.banks, bank=bank, merchant=merchant)

    async def _links_ready(self, limit: float) -> None:
        """Give links a moment to sign on before the API opens, so a restart does not answer a burst
        of ``issuer_unavailable``; a bank that stays down does not keep the others from serving."""
        deadline = self.reactor.seconds() + limit
        while not all(bank.ready for bank in self.banks.values()):
            if self.reactor.seconds() >= deadline:
                log.warning("links_not_ready_at_start", waited=limit, links=self.link_states())
                return
            await deferLater(self.reactor, 0.05, lambda: None)

    def _sweep_stale_pending(self) -> Deferred[int]:
        assert self.journal is not None and self.saf is not None
        longest = max((b.connector.options.request_timeout for b in self.banks.values()), default=0.0)
        return ensureDeferred(sweep_stale_pending(
            self.journal, self.banks, self.saf, self.registry, utc_from_seconds(self.reactor.seconds()),
            timedelta(seconds=longest + SWEEP_INTERVAL),
        ))

    def _purge_idempotency_keys(self) -> Deferred[None]:
        """Idempotency keys are kept 24 hours (the journal's ``idempotency_ttl``), not forever. A purge that
        fails (the journal unreachable for a while) is logged and tried again at the next hour: a failure
        returned to the `LoopingCall` would end the housekeeping until the switch restarts."""
        assert self.journal is not None
        self.journal.purge_risk_counters().addErrback(_logged, "risk_purge_failed")
        return self.journal.purge_idempotency_keys().addCallbacks(lambda _: None, _logged,
                                                                   errbackArgs=("idempotency_purge_failed",))

    def reload_risk(self) -> bool:
        """SIGHUP: take the config file's ``[risk]`` rules; a file that does not load keeps the rules in
        force, and the log says why."""
        try:
            rules = load_config(self.config.file).risk
        except ConfigError as e:
            log.error("risk_reload_refused", error=str(e), keeping="the rules in force")
            return False
        if self.risk is None:
            return False
        self.risk.replace(rules)
        return True

    def _lease_lost(self, error: LeaseLost) -> None:
        """Another node took this journal over (this one stalled past its lease): stop serving now."""
        self.lease_lost = error
        log.error("switch_stopping_lease_lost", error=str(error))
        self.stop().addBoth(lambda _: self.reactor.stop())

    def _late_response_hook(self, bank: Bank) -> Any:
        def hook(message: dict[str, str]) -> None:
            assert self.service is not None
            self.service.late_response(bank, message)

        return hook

    def operator_cutover(self, name: str | None) -> Deferred[list[dict[str, Any]]]:
        """``kswitch cutover BANK|--all`` through the admin server: one connector, or each in turn."""
        return ensureDeferred(self._operator_cutover(name))

    async def _operator_cutover(self, name: str | None) -> list[dict[str, Any]]:
        assert self.day_end is not None
        if name is not None and name not in self.banks:
            raise OperatorError(404, f"unknown bank {name!r}; configured: {', '.join(sorted(self.banks))}")
        results = []
        for each in [name] if name is not None else sorted(self.banks):
            try:
                results.append((await self.day_end.cutover(each, "operator")).public())
            except (CutoverBusy, CutoverRefused) as e:
                raise OperatorError(409, f"{each}: {e}") from None
        return results

    def _inbound_request_hook(self, bank: Bank, plugin: ConnectorPlugin) -> Any:
        """Advices completing a payment that awaits the customer, and the bank's cutover; anything else stays
        unhandled (logged)."""
        unhandled = bank.connector.on_inbound_request
        version = bank.profile.dialect.version

        def hook(message: dict[str, str]) -> Any:
            assert self.confirmations is not None and self.day_end is not None
            if plugin.is_customer_advice(message):
                return self.confirmations.advice(bank, message)
            if is_network(message["t"]) and network_kind(message, version) == "cutover":
                return self.day_end.bank_cutover(bank, message)
            return unhandled(message)

        return hook

    def _start_simulator(self, connector: str, accounts: Path, extra: tuple[str, ...]) -> None:
        settings = self.config.banks[connector]
        link = settings.options.links[0]
        pki = self.config.pki_dir
        args = [
            sys.executable, str(REPO / "bin" / "banksim"), "--name", connector, "--exit-with-parent",
            "--listen", f"{link.host}:{link.port}", "--dialect", settings.profile.dialect.source,
            "--framing", settings.options.framing.header, "--accounts", str(accounts),
            "--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"), "--tls-ca", str(pki / "ca.pem"),
        ]
        if settings.options.tpdu is not None:
            args += ["--tpdu", settings.options.tpdu.hex()]
        if settings.options.framing.includes_header:
            args.append("--length-includes-header")
        args += list(extra)
        proto = _Simulator(connector)
        process = self.reactor.spawnProcess(proto, sys.executable, args, env=dict(os.environ),
                                            childFDs={0: "w", 1: "r", 2: 2})
        self._simulators.append((process, proto))
        log.info("simulator_started", simulator=connector, listen=f"{link.host}:{link.port}")

    # -- observation ----------------------------------------------------------------------

    def link_states(self) -> dict[str, dict[str, str]]:
        return {name: {link: state.value for link, state in bank.connector.states.items()}
                for name, bank in self.banks.items()}

    # -- stop -------------------------------------------------------------------------

    def stop(self, reason: str = "requested") -> Deferred[None]:
        """Graceful: stop accepting, answer what is in flight (up to ``shutdown_grace``), then close.

        Every step that waits logs ``shutdown_waiting`` (step, bound) and then ``shutdown_step_done``
        or ``shutdown_step_timed_out``; each wait is bounded (see `STOP_WAITS`), so the whole stop
        takes at most ``shutdown_grace`` plus the sum of those bounds (`stop_bound`)."""
        if self._stopping is None:
            self._stopping = ensureDeferred(self._stop(reason))
        else:
            log.info("switch_already_stopping", reason=reason)
        stopping: Deferred[None] = Deferred()
        self._stopping.addBoth(lambda r: stopping.callback(None) or r)
        return stopping

    def stop_bound(self) -> float:
        """The longest a stop can take, in seconds: the grace for API requests plus every bounded wait."""
        waits = [STOP_WAITS["links"], STOP_WAITS["journal"]]
        if self.config.simulators:
            waits += [STOP_WAITS["simulators"], SIMULATOR_KILL_WAIT]
        return self.config.shutdown_grace + sum(waits)

    def _api_in_flight(self) -> int:
        return sum(len(p._in_flight) for p in self.api_factory.connections) if self.api_factory else 0

    async def _bounded(self, step: str, work: Deferred[Any], bound: float, **detail: Any) -> bool:
        """Wait for one shutdown step for at most ``bound`` seconds (the step is not cancelled: the
        process exits after the last step anyway); log what is waited for and how it ended."""
        log.info("shutdown_waiting", step=step, bound=bound, **detail)
        began = self.reactor.seconds()
        ended: Deferred[bool] = Deferred()
        timer = self.reactor.callLater(bound, lambda: ended.called or ended.callback(False))

        def finished(result: Any) -> None:
            if isinstance(result, Failure):
                log.warning("shutdown_step_failed", step=step, error=result.getErrorMessage())
            if timer.active():
                timer.cancel()
            if not ended.called:
                ended.callback(True)

        work.addBoth(finished)
        done = await ended
        took = round(self.reactor.seconds() - began, 3)
        if done:
            log.info("shutdown_step_done", step=step, seconds=took)
        else:
            log.warning("shutdown_step_timed_out", step=step, bound=bound)
        return done

    async def _until_api_idle(self, deadline: float) -> None:
        while self._api_in_flight() and self.reactor.seconds() < deadline:
            await deferLater(self.reactor, 0.05, lambda: None)

    async def _stop(self, reason: str) -> None:
        log.info("switch_stopping", reason=reason, grace=self.config.shutdown_grace,
                 in_flight=self._api_in_flight(), bound=self.stop_bound())
        await DeferredList([p.stopListening() or succeed(None) for p in self.api_ports])
        for protocol in list(self.api_factory.connections if self.api_factory else ()):
            protocol._close_when_idle()  # read no new request; close once the ones read are answered
        grace = self.config.shutdown_grace
        await self._bounded("api_requests", ensureDeferred(self._until_api_idle(self.reactor.seconds() + grace)),
                            grace, in_flight=self._api_in_flight())
        if self._api_in_flight():
            log.warning("shutdown_grace_expired", in_flight=self._api_in_flight())
        for protocol in list(self.api_factory.connections if self.api_factory else ()):
            turnwrites.lose_connection(protocol.transport)  # after the answers this turn wrote
        for loop in (self._housekeeping, self._sweeper):
            if loop.running:
                loop.stop()
        if self.notifier is not None:
            self.notifier.stop()
        if self.day_end is not None:
            self.day_end.stop()
        if self.saf is not None:
            self.saf.stop()
        if self.confirmations is not None:
            self.confirmations.stop()
        await self._bounded("links", DeferredList([bank.connector.stop() for bank in self.banks.values()]),
                            STOP_WAITS["links"], connectors=sorted(self.banks),
                            waits_for="bank requests already written, sign-off")
        if self.admin_port is not None:
            await (self.admin_port.stopListening() or succeed(None))
        if self.journal is not None:
            await self._bounded("journal", ensureDeferred(self._close_journal()), STOP_WAITS["journal"],
                                backend=self.config.journal.backend)
        if self._simulators:
            await self._stop_simulators()
        log.info("switch_stopped", reason=reason)

    async def _close_journal(self) -> None:
        assert self.journal is not None
        if self.lease is not None:
            await self.lease.release()
        await self.journal.close()

    async def _stop_simulators(self) -> None:
        """SIGTERM every simulator, then SIGKILL the ones still there: a stuck one must not keep us alive."""
        names = [proto.name for _, proto in self._simulators]
        for process, proto in self._simulators:
            if not proto.ended.called:
                process.signalProcess("TERM")
        ended = DeferredList([proto.ended for _, proto in self._simulators])
        if await self._bounded("simulators", ended, STOP_WAITS["simulators"], simulators=names, signal="TERM"):
            return
        for process, proto in self._simulators:
            if not proto.ended.called:
                process.signalProcess("KILL")
        await self._bounded("simulators_killed", ended, SIMULATOR_KILL_WAIT,
                            simulators=[proto.name for _, proto in self._simulators if not proto.ended.called])
