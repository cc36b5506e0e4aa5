"""Pieces of the crash test: simulated banks in the test process and the switch as a real
child process that can be SIGKILLed and restarted (the web tier of threads is `tests.crash.webtier`).

Nothing here knows about invariants; `tests.crash.invariants` reads what these record.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from switch.iso.dialect import load_dialect
from switch.iso.framing import Framing
from switch.ops.devcerts import make_dev_pki
from switch.tools.banksim import ORIGINAL_KINDS, BankSim, BankSimOptions, load_accounts
from switch.tools.banksim.tls import TlsFiles

REPO = Path(__file__).resolve().parent.parent.parent
KSWITCH = REPO / "bin" / "kswitch"
CLIENT, TOKEN = "web-1", "crash-test-token-0123456789"
MERCHANT, STORE = "M100", "web"
EXPIRY, CVV = "3012", "123"
OPENING_BALANCE = 1_000_000_000  # minor units; far more than the test can spend

# Two banks that differ in everything a connector can differ in: dialect, framing, TPDU.
BANKS: dict[str, dict[str, Any]] = {
    "bank_a": dict(dialect="iso87ascii", framing="2b", tpdu="6000010000", prefixes=["4"]),
    "bank_b": dict(dialect="iso93binary", framing="4a", tpdu=None, prefixes=["5", "2"]),
}


@dataclass(frozen=True)
class Card:
    pan: str
    bank: str
    status: str = "active"
    weight: int = 10


CARDS = (
    Card("4111111111111111", "bank_a"),
    Card("4012888888881881", "bank_a"),
    Card("5555555555554444", "bank_b"),
    Card("5105105105105100", "bank_b"),
    Card("4000000000000002", "bank_a", status="do_not_honour", weight=1),
    Card("2223003122003222", "bank_b", status="do_not_honour", weight=1),
)


def accounts_toml() -> str:
    parts = ["# Crash-test accounts: a few cards with large balances, one always-declined card per bank.\n"]
    for card in CARDS:
        parts.append(
            f'\n[[account]]\npan = "{card.pan}"\nexpiry = "{EXPIRY}"\ncvv = "{CVV}"\nstatus = "{card.status}"\n'
            f'balance = {OPENING_BALANCE}\ncurrency = "USD"\n'
        )
    return "".join(parts)


def journal_toml(backend: str = "sqlite", pg_dsn: str | None = None, pg_schema: str | None = None,
                 writer: str = "auto") -> str:
    """The ``[journal]`` table: SQLite in the state directory, or a PostgreSQL schema of its own."""
    common = f'dev_keys = true\nwriter = "{writer}"\n'
    if backend == "sqlite":
        return 'backend = "sqlite"\n' + common
    return f'backend = "postgresql"\npostgres_dsn = "{pg_dsn}"\npostgres_schema = "{pg_schema}"\n' + common


def config_toml(
    state_dir: Path, run_dir: Path, ports: dict[str, int], request_timeout: float, journal: str = journal_toml()
) -> str:
    """A whole switch on loopback: API and admin on Unix sockets (no port races), SQLite journal by default."""
    parts = [f"""
[switch]
state_dir = "{state_dir}"
log_format = "json"
log_level = "info"
shutdown_grace = 5.0

[api]
listen = ["unix:{run_dir / 'api.sock'}:lockfile=1"]

[admin]
listen = "unix:{run_dir / 'admin.sock'}:lockfile=1"

[journal]
{journal}
[[clients]]
name = "{CLIENT}"
token = "{TOKEN}"
merchants = ["{MERCHANT}"]

[[merchants]]
id = "{MERCHANT}"
name = "CRASH TEST SHOP"
city = "PHNOM PENH"
country = "KH"
mcc = "5999"
acquirer_merchant_id = "000000000100001"
stores = [{{ id = "{STORE}", terminal_id = "WEB00001" }}]
"""]
    for name, b in BANKS.items():
        tpdu = f'tpdu = "{b["tpdu"]}"\n' if b["tpdu"] else ""
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
saf = {{ retry_interval = 0.2, backoff = 1.0, max_attempts = 200 }}
""")
    for name, b in BANKS.items():
        prefixes = ", ".join(f'"{p}"' for p in b["prefixes"])
        parts.append(f'\n[[routes]]\nname = "{name}"\nbin_prefixes = [{prefixes}]\nconnectors = ["{name}"]\n')
    return "".join(parts)


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


# -- banks --------------------------------------------------------------------------------


@dataclass
class Banks:
    sims: dict[str, BankSim]
    ports: dict[str, int]
    tls: TlsFiles
    accounts: dict[str, Any]
    down: set[str] = field(default_factory=set)

    @classmethod
    async def start(cls, accounts_file: Path, pki_dir: Path, ledger_dir: Path | None = None) -> Banks:
        pki = make_dev_pki(pki_dir)
        tls = TlsFiles(pki.server.cert, pki.server.key, pki.ca.cert)
        accounts = load_accounts(accounts_file)
        sims, ports = {}, {}
        for name, b in BANKS.items():
            framing = Framing(b["framing"], tpdu=b["tpdu"] is not None)
            ledger = ledger_dir / f"{name}-ledger.sqlite3" if ledger_dir is not None else None
            sims[name] = BankSim(reactor, load_dialect(b["dialect"]), framing, accounts,
                                 BankSimOptions(name=name, ledger_path=ledger))
            ports[name] = (await sims[name].listen(0, tls)).getHost().port
        return cls(sims, ports, tls, accounts)

    def set_faults(self, name: str, **faults: Any) -> None:
        self.sims[name].set_faults(**faults)

    async def stop(self, name: str) -> None:
        """The bank host goes down: its port closes, every link drops, answers not yet sent are lost.

        The ledger (balances, holds, postings, answers remembered for duplicates) is kept,
        as a bank's database outlives its host process.
        """
        self.down.add(name)
        await self.sims[name].close()
        if self.sims[name].options.ledger_path is not None:
            self.sims[name].ledger.close()  # the host process is gone; its ledger file stays

    async def resume(self, name: str) -> None:
        """The bank host is back on the same port with the same ledger."""
        old = self.sims[name]
        if old.options.ledger_path is not None:  # a new process, reopening the ledger file
            self.sims[name] = BankSim(reactor, old.dialect, old.framing, self.accounts, old.options)
        await self.sims[name].listen(self.ports[name], self.tls)
        self.down.discard(name)

    async def close(self) -> None:
        for name, sim in self.sims.items():
            if name not in self.down:
                await sim.close()


def postings(sim: BankSim) -> list[Any]:
    """Every sale, hold, completion and refund the simulated issuer posted, each with ``reversed``."""
    return sim.ledger.postings(kinds=ORIGINAL_KINDS)


# -- the switch as a child process --------------------------------------------------------------


def http_get_unix(path: str, target: str, timeout: float = 1.0) -> tuple[int, bytes]:
    """GET over a Unix socket (the admin server); (0, b"") when nobody answers."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(path)
            s.sendall(f"GET {target} HTTP/1.0\r\nHost: kswitch\r\n\r\n".encode())
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
    except OSError:
        return 0, b""
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    try:
        return int(head.split(b" ", 2)[1]), body
    except (IndexError, ValueError):
        return 0, b""


class SwitchExited(AssertionError):
    """kswitch exited on its own while the test waited for it to become ready."""


class SwitchProcess:
    """``bin/kswitch run --config FILE`` as a real process; each run logs to its own file."""

    def __init__(self, config: Path, log_dir: Path, admin_sock: Path) -> None:
        self.config = config
        self.log_dir = log_dir
        self.admin_sock = admin_sock
        self.proc: subprocess.Popen[bytes] | None = None
        self.logs: list[Path] = []
        self.kills = 0
        self.writer_kills = 0

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "the previous switch is still running"
        log_path = self.log_dir / f"kswitch-run-{len(self.logs) + 1}.log"
        self.logs.append(log_path)
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(KSWITCH), "run", "--config", str(self.config)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True,
            )

    def log_text(self) -> str:
        """What the current run of the switch has logged so far."""
        if not self.logs or not self.logs[-1].exists():
            return ""
        return self.logs[-1].read_text(errors="replace")

    def log_tail(self, lines: int = 15) -> str:
        if not self.logs:
            return "(no log)"
        text = self.logs[-1].read_text(errors="replace").splitlines()
        return f"--- last {lines} lines of {self.logs[-1]} ---\n" + "\n".join(text[-lines:])

    async def wait_ready(self, timeout: float) -> float:
        """Until /readyz answers 200 (API listening and every connector signed on); returns seconds taken."""
        assert self.proc is not None
        began = time.monotonic()
        while True:
            status, body = await deferToThread(http_get_unix, str(self.admin_sock), "/readyz", 0.5)
            if status == 200:
                return time.monotonic() - began
            if self.proc.poll() is not None:
                raise SwitchExited(
                    f"kswitch exited with code {self.proc.returncode} before it was ready "
                    f"(run {len(self.logs)}, after {self.kills} SIGKILLs)\n{self.log_tail()}"
                )
            if time.monotonic() - began > timeout:
                raise AssertionError(
                    f"kswitch not ready within {timeout}s (last /readyz: {status} {body[:300]!r})\n{self.log_tail()}"
                )
            await sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, exactly like a power cut of the process."""
        assert self.proc is not None and self.proc.poll() is None, f"kswitch died on its own\n{self.log_tail()}"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.kills += 1

    def pid(self) -> int | None:
        """The running switch's process id."""
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def writer_pid(self) -> int | None:
        """The switch's journal writer process, if it has one."""
        assert self.proc is not None
        for status in Path("/proc").glob("[0-9]*/status"):
            try:
                text = status.read_text()
                cmdline = (status.parent / "cmdline").read_bytes()
            except OSError:
                continue
            if f"\nPPid:\t{self.proc.pid}\n" in text and b"switch.journal.writerproc" in cmdline:
                return int(status.parent.name)
        return None

    def kill_writer(self) -> bool:
        """SIGKILL the switch's journal writer process, if it has one; True when one was killed."""
        pid = self.writer_pid()
        if pid is None:
            return False
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return False
        self.writer_kills += 1
        return True

    async def terminate(self, timeout: float) -> int:
        """SIGTERM and wait for the graceful shutdown; returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait(timeout=10)
                raise AssertionError(f"kswitch did not stop within {timeout}s of SIGTERM\n{self.log_tail()}")
            await sleep(0.05)
        return self.proc.returncode

    def abort(self) -> None:
        """Clean-up after a failure: make sure no switch outlives the test."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    async def metrics(self) -> dict[str, float]:
        """The admin /metrics samples, summed over labels (e.g. kswitch_saf_depth of every connector)."""
        from prometheus_client.parser import text_string_to_metric_families

        status, body = await deferToThread(http_get_unix, str(self.admin_sock), "/metrics", 2.0)
        if status != 200:
            return {}
        totals: dict[str, float] = {}
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
        return totals


async def wait_saf_drained(switch: SwitchProcess, cap: float = 90.0, dead_ok: bool = False) -> tuple[float, float]:
    """Until /metrics shows no queued (and, unless ``dead_ok``, no dead) SAF item on two scrapes a SAF poll apart.

    The time allowed grows with the backlog found at the start (store-and-forward sends
    about one item per connector per second today); returns (backlog, seconds taken).
    """
    began = time.monotonic()
    backlog = (await switch.metrics()).get("kswitch_saf_depth", 0.0)
    timeout = min(20.0 + 1.2 * backlog, cap)
    clean = 0
    last: dict[str, float] = {}
    while clean < 2:
        if time.monotonic() - began > timeout:
            raise AssertionError(
                f"store-and-forward did not drain within {timeout:.0f}s (backlog {backlog:.0f}): saf_depth "
                f"{last.get('kswitch_saf_depth')}, dead letters {last.get('kswitch_saf_dead_letters')}\n"
                f"{switch.log_tail()}"
            )
        last = await switch.metrics()
        # No sample at all means no connector has had an item since this run started.
        drained = bool(last) and last.get("kswitch_saf_depth", 0) == 0 \
            and (dead_ok or last.get("kswitch_saf_dead_letters", 0) == 0)
        clean = clean + 1 if drained else 0
        await sleep(1.1 if drained else 0.2)
    return backlog, time.monotonic() - began


def short_run_dir() -> Path:
    """A short directory for Unix sockets (their paths are limited to about 100 bytes)."""
    return Path(tempfile.mkdtemp(prefix="kswc-", dir="/tmp" if os.path.isdir("/tmp") else None))


def remove_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
