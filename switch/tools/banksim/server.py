"""The simulated bank host on the network: frames in, the issuer's answers out, faults on demand.

`BankSim` is what tests, the demo (``kswitch run`` with ``[[simulators]]``) and
``bin/banksim`` start.  It owns the ledger and the issuer, counts what it
receives, logs every message masked, and applies `Faults` between decoding a
request and writing its answer.  A bad frame is logged and, when its MTI is
readable, answered with a format error; it never affects another connection.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import structlog
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IStreamServerEndpoint
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure

from switch.iso.dialect import Dialect, Message, MessageError
from switch.iso.framing import TPDU_LENGTH, Frame, FramedProtocol, Framing, swap_tpdu
from switch.iso.masking import mask_message
from switch.iso.mti import is_network, is_request, network_kind, transmission_time
from switch.net import turnwrites
from switch.tools.banksim import codes
from switch.tools.banksim.accounts import Account
from switch.tools.banksim.day import BankDay
from switch.tools.banksim.faults import Faults
from switch.tools.banksim.issuer import DEFAULT_RETENTION, ECHOED, Issuer
from switch.tools.banksim.ledger import Ledger
from switch.tools.banksim.tls import TlsFiles, server_tls_options
from switch.tools.tracing import LinkTrace

GARBAGE = b"\xff\xfe\xfd"
"""The payload of a garbage answer: too short for any shipped dialect's MTI and bitmap."""

log = structlog.get_logger("kswitch.banksim")


@dataclass(frozen=True)
class BankSimOptions:
    """
    - ``name``: the simulated bank's name in logs and traces.
    - ``cvv_code``: answer to a wrong CVV (default N7; 129 on a 1993 dialect).
    - ``faults``: faults in force at start (see `Faults`; change later with `BankSim.set_faults`).
    - ``trace``: write a masked link trace to this file (`switch.tools.tracing`).
    - ``expected_tpdu``: the TPDU the acquirer addresses this host with; a request whose
      TPDU ID or destination differs is logged as misaddressed (and still answered).
    - ``retention``: seconds postings can be reversed, holds stay open and answers are
      remembered for duplicates (default 7 days).
    - ``ledger_path``: keep the ledger in this SQLite file (created if missing) instead of
      in memory, so that a new `BankSim` on the same file (see `BankSim.restart`) still
      holds every balance, hold, posting and remembered answer.
    """

    name: str = "banksim"
    cvv_code: str = codes.CVV_MISMATCH
    faults: Faults = field(default_factory=Faults)
    trace: Path | None = None
    expected_tpdu: bytes | None = None
    retention: float = DEFAULT_RETENTION
    ledger_path: Path | None = None


def peek_mti(dialect: Dialect, payload: bytes) -> str | None:
    """The MTI of a message that does not decode as a whole, None when even that is unreadable."""
    spec = dialect.spec["t"]
    if spec["data_enc"] == "b":
        mti = payload[:2].hex() if len(payload) >= 2 else ""
    else:
        try:
            mti = payload[:4].decode(spec["data_enc"])
        except UnicodeDecodeError:
            return None
    return mti if len(mti) == 4 and mti.isascii() and mti.isdigit() else None


class BankSimProtocol(FramedProtocol):
    """One connection from the switch; all decisions are the `BankSim`'s."""

    def __init__(self, sim: BankSim) -> None:
        self.sim = sim
        self.framing = sim.framing
        self.received = 0
        self.last_tpdu: bytes | None = None
        """The TPDU for a message we start (an advice): the last request's, swapped."""
        self._later: set[IDelayedCall] = set()

    def connectionMade(self) -> None:
        super().connectionMade()
        turnwrites.no_delay(self.transport)  # an answer must not wait for the switch's delayed acknowledgement
        peer = self.transport.getPeer()
        self.peer_name = f"{getattr(peer, 'host', '?')}:{getattr(peer, 'port', '?')}"
        self.sim.connected(self)

    def frameReceived(self, frame: Frame) -> None:
        if not frame.payload:
            return
        self.received += 1
        try:
            self.sim.handle(self, frame)
        except Exception:
            log.exception("banksim_internal_error", bank=self.sim.options.name, peer=self.peer_name)

    def later(self, delay: float, send: Any, *args: Any) -> None:
        """Run ``send`` after ``delay`` seconds unless the connection goes first."""
        def fire() -> None:
            self._later.discard(call)
            send(*args)

        call = self.sim.reactor.callLater(delay, fire)
        self._later.add(call)

    def connectionLost(self, reason: Failure) -> None:
        for call in self._later:
            call.cancel()
        self._later.clear()
        self.sim.disconnected(self, reason)
        super().connectionLost(reason)


class _Factory(Factory):
    noisy = False

    def __init__(self, sim: BankSim) -> None:
        self.sim = sim

    def buildProtocol(self, addr: Any) -> BankSimProtocol:
        return BankSimProtocol(self.sim)


class BankSim:
    """A simulated issuer's host: ``BankSim(reactor, dialect, framing, accounts, options)``.

    ``reactor`` provides the clock and the network; ``accounts`` come from
    `switch.tools.banksim.accounts.load_accounts`.  ``received`` and ``sent`` count
    messages by MTI (``"undecodable"`` when not even the MTI could be read).
    ``ledger`` is the bank's books (`Ledger`: ``snapshot()``, ``postings()``); with
    ``options.ledger_path`` they live in that file (LedgerError when it cannot be used);
    ``ledger`` hands over open books instead (`restart` of a banksim without a file).
    """

    def __init__(
        self,
        reactor: Any,
        dialect: Dialect,
        framing: Framing,
        accounts: Mapping[str, Account],
        options: BankSimOptions | None = None,
        ledger: Ledger | None = None,
    ) -> None:
        self.reactor = reactor
        self.dialect = dialect
        self.framing = framing
        self.options = options or BankSimOptions()
        if self.options.expected_tpdu is not None and len(self.options.expected_tpdu) != TPDU_LENGTH:
            raise ValueError(f"expected_tpdu: got {len(self.options.expected_tpdu)} bytes; a TPDU has {TPDU_LENGTH}")
        self._accounts = accounts
        self.ledger = ledger if ledger is not None else Ledger(accounts, self.options.ledger_path)
        self.issuer = Issuer(self.ledger, dialect, reactor, self.options.cvv_code, self.options.retention)
        self.day = BankDay(self.ledger, dialect.version, reactor, self.options.name, self.ledger.business_date)
        """The bank's business date, cutover and reconciliation totals (`BankDay`)."""
        self.received: Counter[str] = Counter()
        self.sent: Counter[str] = Counter()
        self.trace = (
            LinkTrace(self.options.trace, self.options.name, dialect, framing.header, reactor)
            if self.options.trace is not None else None
        )
        self._faults = Faults()
        self._random = random.Random()
        self.set_faults(**vars(self.options.faults))
        self._answers = 0
        self._advice_stans = itertools.count(900001)
        self._advices: dict[str, Deferred[str]] = {}
        self._connections: set[BankSimProtocol] = set()
        self._ports: list[IListeningPort] = []
        self._listened: tuple[int | IStreamServerEndpoint, TlsFiles | None, str] | None = None

    # -- ledger and faults, for tests and operators ------------------------------------------

    def balance(self, pan: str) -> int:
        """Ledger balance of a card's account in minor units (KeyError for an unknown PAN)."""
        return self.ledger.balance(pan)

    def available(self, pan: str) -> int:
        """Balance less open pre-authorization holds."""
        return self.ledger.available(pan)

    @property
    def faults(self) -> Faults:
        return self._faults

    def set_faults(self, **changes: Any) -> Faults:
        """Change some faults, e.g. ``set_faults(delay=2.0)`` then ``set_faults(delay=0)``.

        Raises ValueError (and changes nothing) when a value is out of range.
        A new ``seed`` restarts the drop sequence.
        """
        faults = replace(self._faults, **changes)
        faults.check(self.dialect.version)
        if "seed" in changes:
            self._random.seed(faults.seed)
        self._faults = faults
        self.ledger.settle_weight = 0 if faults.drop_posting else 2 if faults.double_posting else 1
        log.info("banksim_faults", bank=self.options.name,
                 **{**vars(faults), "answer_fields": mask_message(dict(faults.answer_fields))})
        return faults

    # -- customer confirmation ------------------------------------------------------------

    def pending(self) -> list[str]:
        """References of payments waiting for the customer, oldest first."""
        return list(self.issuer.pending)

    def confirm(self, ref: str, approve: bool = True) -> Deferred[str]:
        """The customer approves or rejects ``ref`` on the bank's page.

        The outcome goes to the switch as an advice (0120/0220, 1120/1220: the original's
        MTI with function 2) over a live connection; fires with the response code of the
        switch's acknowledgement (0130/0230 ...).  KeyError for an unknown ref; ConnectionError
        (the decision is kept) when no connection is up.
        """
        if ref not in self.issuer.pending:
            raise KeyError(ref)
        connection = next(iter(self._connections), None)
        if connection is None:
            raise ConnectionError("no connection from the switch to send the advice on")
        pending, code, auth_code = self.issuer.decide_pending(ref, approve)
        advice = self._advice(pending.request, code, auth_code)
        acknowledged: Deferred[str] = Deferred()
        self._advices[advice["11"]] = acknowledged
        log.info("banksim_customer_decision", bank=self.options.name, ref=ref, approve=approve, rc=code)
        self._write(connection, Frame(self.dialect.encode(advice), connection.last_tpdu), advice)
        return acknowledged

    def _advice(self, request: Message, code: str, auth_code: str | None) -> Message:
        """The advice telling the switch the outcome of ``request``, pointing back at it."""
        mti = request["t"]
        advice = {n: request[n] for n in (*ECHOED, "102") if n in request}
        advice.update({"t": f"{mti[:2]}2{mti[3]}", "7": transmission_time(self.reactor.seconds()),
                       "11": f"{next(self._advice_stans) % 1_000_000:06d}", "39": code})
        if auth_code is not None:
            advice["38"] = auth_code
        acquirer = request.get("32", "")
        if self.dialect.version == 1987:
            original = f"{mti}{request['11']}{request.get('7', '0' * 10)}{int(acquirer or 0):011d}{0:011d}"
        else:
            original = f"{mti}{request['11']}{request.get('12', '0' * 12)}{len(acquirer):02d}{acquirer}"
        advice[self.dialect.original_data_field] = original
        return advice

    def cutover(self) -> Deferred[str]:
        """The bank ends its business day: close the date, open the next and tell the switch with an
        0800/201 (1804/821) carrying the new date in field 15; fires with the switch's response code.
        ConnectionError (the date is not changed) when no connection is up."""
        connection = next(iter(self._connections), None)
        if connection is None:
            raise ConnectionError("no connection from the switch to send the cutover on")
        request = self.day.request_cutover()
        request["11"] = f"{next(self._advice_stans) % 1_000_000:06d}"
        acknowledged: Deferred[str] = Deferred()
        self._advices[request["11"]] = acknowledged
        self._write(connection, Frame(self.dialect.encode(request), connection.last_tpdu), request)
        return acknowledged

    def _advice_acknowledged(self, response: Message) -> bool:
        waiter = self._advices.pop(response.get("11", ""), None)
        if waiter is None:
            return False
        waiter.callback(response.get("39", ""))
        return True

    # -- network ----------------------------------------------------------------------------

    def listen(
        self, where: int | IStreamServerEndpoint, tls: TlsFiles | None = None, interface: str = "127.0.0.1"
    ) -> Deferred:
        """Listen on a port number (0 for any free port) or on a ready endpoint.

        With ``tls`` the host requires and verifies a client certificate from ``tls.ca``.
        Fires with the `IListeningPort` (``.getHost().port`` is the actual port).
        """
        self._listened = (where, tls, interface)
        if isinstance(where, int):
            endpoint: IStreamServerEndpoint = (
                SSL4ServerEndpoint(self.reactor, where, server_tls_options(tls), interface=interface)
                if tls is not None
                else TCP4ServerEndpoint(self.reactor, where, interface=interface)
            )
        elif tls is not None:
            raise ValueError("tls applies to a port number; an endpoint brings its own TLS settings")
        else:
            endpoint = where
        return endpoint.listen(_Factory(self)).addCallback(self._listening, tls is not None)

    def _listening(self, port: IListeningPort, tls: bool) -> IListeningPort:
        self._ports.append(port)
        address = port.getHost()
        if self._listened is not None and isinstance(self._listened[0], int):
            self._listened = (address.port, *self._listened[1:])
        log.info(
            "banksim_listening", bank=self.options.name, host=address.host, port=address.port, tls=tls,
            dialect=self.dialect.name, framing=self.framing.header, tpdu=self.framing.tpdu,
        )
        return port

    def close(self) -> Deferred:
        """Stop listening, drop every connection and finish writing the trace.

        The ledger stays open and readable, and `listen` may be called again (the host came
        back, the bank's database never went away); `restart` is a restart of the process.
        """
        stopping = [port.stopListening() for port in self._ports]
        self._ports.clear()
        for connection in list(self._connections):
            connection.transport.abortConnection()
        if self.trace is not None:
            stopping.append(self.trace.close())
        return gatherResults(stopping)

    async def restart(self) -> BankSim:
        """The host process restarts: close this one (network, trace, ledger) and return a new
        `BankSim` with the same settings listening where this one last listened.

        Only the ledger survives (in memory: the same one; with ``ledger_path``: reopened from
        the file); faults changed at run time, counters, waiting customer confirmations and
        answers not yet written are gone, as they would be after a crash.
        """
        if self._listened is None:
            raise RuntimeError("restart: this banksim never listened")
        await self.close()
        kept = None if self.options.ledger_path is not None else self.ledger
        if kept is None:
            self.ledger.close()
        successor = BankSim(self.reactor, self.dialect, self.framing, self._accounts, self.options, kept)
        await successor.listen(*self._listened)
        return successor

    def connected(self, connection: BankSimProtocol) -> None:
        self._connections.add(connection)
        log.info("banksim_connection", bank=self.options.name, peer=connection.peer_name)

    def disconnected(self, connection: BankSimProtocol, reason: Failure) -> None:
        self._connections.discard(connection)
        log.info("banksim_connection_lost", bank=self.options.name, peer=connection.peer_name,
                 reason=reason.getErrorMessage())

    # -- one message ------------------------------------------------------------------------

    def handle(self, connection: BankSimProtocol, frame: Frame) -> None:
        """Decode, record, apply faults, ask the issuer, answer."""
        self._check_tpdu(connection, frame.tpdu)
        connection.last_tpdu = swap_tpdu(frame.tpdu) if frame.tpdu is not None else None
        reply_tpdu = swap_tpdu(frame.tpdu) if frame.tpdu is not None else None
        request = self._decode(frame.payload)
        faults = self._faults
        if isinstance(request, MessageError):
            mti = peek_mti(self.dialect, frame.payload)
            self.received[mti or "undecodable"] += 1
            self._record("in", frame, request)
            log.warning(
                "banksim_bad_message", bank=self.options.name, peer=connection.peer_name, mti=mti,
                field=request.field, offset=request.offset, reason=request.reason,
                answer="format error" if mti is not None and is_request(mti) else "none",
            )
            if self._disconnect_due(connection) or mti is None or not is_request(mti):
                return
            answer = self.issuer.format_error(mti)
        else:
            mti = request["t"]
            self.received[mti] += 1
            self._record("in", frame, request)
            log.info("banksim_in", bank=self.options.name, peer=connection.peer_name, mti=mti,
                     stan=request.get("11"), fields=mask_message(request, self.dialect))
            if self._disconnect_due(connection):
                return
            if not is_request(mti):
                if self._advice_acknowledged(request):
                    return
                log.warning("banksim_unexpected_response", bank=self.options.name, peer=connection.peer_name, mti=mti)
                return
            answer = self._day_answer(request)
            if faults.answer_fields and mti[1] in "12" and mti[2] == "0":
                answer = {**answer, **dict(faults.answer_fields)}
            if not is_network(mti) and self._random.random() < faults.drop_ratio:
                log.info("banksim_fault", bank=self.options.name, fault="drop", mti=mti, stan=request.get("11"),
                         rc=answer.get("39"))
                return
        self._answer(connection, answer, reply_tpdu)

    def _day_answer(self, request: Message) -> Message:
        """The issuer's answer, with the day's part: cutover and reconciliation are `BankDay`'s, and
        every authorization, financial and reversal answer carries the business date in field 15."""
        mti = request["t"]
        if mti[1] == "5":
            return self.day.reconcile(request)
        answer = self.issuer.answer(request, decline_all=self._faults.decline_all)
        if is_network(mti) and network_kind(request, self.dialect.version) == "cutover":
            return self.day.answer_cutover(request, answer)
        if mti[1] in "124":
            answer["15"] = self.day.business_date[5:7] + self.day.business_date[8:10]
        return answer

    def _decode(self, payload: bytes) -> Message | MessageError:
        try:
            message = self.dialect.decode(payload)
        except MessageError as e:
            return e
        if peek_mti(self.dialect, payload) is None:
            return MessageError("expected a four-digit MTI", "t", 0)
        return message

    def _disconnect_due(self, connection: BankSimProtocol) -> bool:
        limit = self._faults.disconnect_after
        if limit is None or connection.received < limit:
            return False
        log.info("banksim_fault", bank=self.options.name, fault="disconnect", peer=connection.peer_name,
                 after=connection.received)
        connection.transport.loseConnection()
        return True

    def _answer(self, connection: BankSimProtocol, answer: Message, tpdu: bytes | None) -> None:
        self._answers += 1
        every = self._faults.garbage_every
        sent: Message | MessageError = answer
        if every is not None and self._answers % every == 0:
            payload = GARBAGE
            sent = self._decode(GARBAGE)
            log.info("banksim_fault", bank=self.options.name, fault="garbage", instead_of=answer["t"],
                     stan=answer.get("11"))
        else:
            try:
                payload = self.dialect.encode(answer)
            except MessageError as e:
                log.error("banksim_encode_failed", bank=self.options.name, mti=answer["t"], field=e.field,
                          reason=e.reason)
                return
        delay = self._faults.delay
        if delay > 0:
            connection.later(delay, self._write, connection, Frame(payload, tpdu), sent)
        else:
            self._write(connection, Frame(payload, tpdu), sent)

    def _write(self, connection: BankSimProtocol, frame: Frame, sent: Message | MessageError) -> None:
        if not connection.connected:
            return
        connection.sendFrame(frame.payload, frame.tpdu)
        self._record("out", frame, sent)
        if isinstance(sent, MessageError):
            self.sent["undecodable"] += 1
            return
        self.sent[sent["t"]] += 1
        log.info("banksim_out", bank=self.options.name, peer=connection.peer_name, mti=sent["t"],
                 stan=sent.get("11"), rc=sent.get("39"), fields=mask_message(sent, self.dialect))

    def _record(self, direction: str, frame: Frame, decoded: Message | MessageError) -> None:
        if self.trace is not None:
            self.trace.record(direction, frame.payload, decoded, frame.tpdu)

    def _check_tpdu(self, connection: BankSimProtocol, tpdu: bytes | None) -> None:
        expected = self.options.expected_tpdu
        if expected is not None and tpdu is not None and tpdu[:3] != expected[:3]:
            log.warning("banksim_tpdu_mismatch", bank=self.options.name, peer=connection.peer_name,
                        expected=expected[:3].hex(), got=tpdu[:3].hex())
