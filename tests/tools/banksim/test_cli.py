"""bin/banksim as a parent process starts it: port 0, read 'LISTENING <port>', then talk ISO 8583."""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from switch.iso.dialect import load_dialect
from switch.iso.framing import Framing
from switch.ops.devcerts import make_dev_pki
from tests.tools.banksim.test_tls import client_context
from tests.tools.banksim.wire import VISA, blocking_exchange, request

ROOT = Path(__file__).resolve().parents[3]
BANKSIM = [sys.executable, str(ROOT / "bin" / "banksim")]
ISOTRACE = [sys.executable, str(ROOT / "bin" / "isotrace")]


def read_listening(process: subprocess.Popen, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        ready, _, _ = select.select([process.stdout], [], [], max(deadline - time.monotonic(), 0))
        if not ready:
            raise AssertionError("banksim printed no LISTENING line")
        line = process.stdout.readline()
        if not line:
            raise AssertionError(f"banksim exited with status {process.wait()} before listening")
        if line.startswith("LISTENING "):
            return int(line.split()[1])


@contextmanager
def banksim(*args: str, log: Path) -> Iterator[int]:
    with log.open("w") as stderr:
        process = subprocess.Popen([*BANKSIM, "--listen", "127.0.0.1:0", *args], stdout=subprocess.PIPE,
                                   stderr=stderr, text=True)
        try:
            yield read_listening(process)
        finally:
            process.terminate()
            process.wait(10)
            process.stdout.close()


def log_events(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_plain_start_on_port_0_and_a_sale(tmp_path):
    log = tmp_path / "banksim.log"
    dialect = load_dialect("iso87ascii")
    with banksim("--dialect", "iso87ascii", "--framing", "2b", "--plain", log=log) as port:
        frame = blocking_exchange(port, Framing("2b"), Framing("2b").frame(dialect.encode(request("sale", 1987))))
    answer = dialect.decode(frame.payload)
    assert answer["39"] == "00" and len(answer["38"]) == 6
    events = log_events(log)
    listening = next(e for e in events if e["event"] == "banksim_listening")
    assert listening["port"] == port and listening["tls"] is False
    inbound = next(e for e in events if e["event"] == "banksim_in")
    assert inbound["fields"]["2"] == "411111******1111" and inbound["fields"]["48"] == "[3 masked]"
    assert VISA not in log.read_text()


def test_tls_tpdu_trace_and_fault_flags(tmp_path):
    pki = make_dev_pki(tmp_path / "pki")
    trace = tmp_path / "bank.trace"
    log = tmp_path / "banksim.log"
    framing = Framing("4a", tpdu=True)
    dialect = load_dialect("iso93binary")
    args = ["--dialect", "iso93binary", "--framing", "4a", "--tpdu", "6000010000",
            "--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key), "--tls-ca", str(pki.ca.cert),
            "--trace", str(trace), "--name", "bank_b", "--decline-all", "05", "--delay", "0.1"]
    with banksim(*args, log=log) as port:
        wire = framing.frame(dialect.encode(request("sale", 1993)), bytes.fromhex("6000010002"))
        frame = blocking_exchange(port, framing, wire, client_context(pki.ca, pki.client))
    assert frame.tpdu == bytes.fromhex("6000020001")
    assert dialect.decode(frame.payload)["39"] == "100"
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    assert [(r["link"], r["dir"], r["mti"]) for r in records] == [("bank_b", "in", "1200"), ("bank_b", "out", "1210")]
    assert VISA not in trace.read_text()
    shown = subprocess.run([*ISOTRACE, str(trace)], capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0
    assert "→ 1210 stan 000001 rc 100" in shown.stdout and "← 1200 stan 000001" in shown.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dialect", "nope", "--framing", "2b", "--plain"], "banksim: unknown dialect 'nope'"),
        (["--dialect", "iso87ascii", "--framing", "2b", "--plain", "--accounts", "/nonexistent.toml"],
         "banksim: /nonexistent.toml: accounts file not found"),
        (["--dialect", "iso87ascii", "--framing", "2b", "--plain", "--drop-ratio", "1.5"],
         "banksim: drop_ratio: got 1.5; expected a fraction from 0 to 1"),
        (["--dialect", "iso93ascii", "--framing", "2b", "--plain", "--response-code-cvv", "N8"],
         "banksim: response code 'N8': a 1993 dialect expects a three-digit action code"),
    ],
)
def test_bad_settings_fail_at_start_with_one_line(args, message):
    result = subprocess.run([*BANKSIM, "--listen", "127.0.0.1:0", *args], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1
    assert result.stdout == ""


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dialect", "iso87ascii", "--framing", "2b"], "one of the arguments --tls-cert --plain is required"),
        (["--dialect", "iso87ascii", "--framing", "2b", "--tls-cert", "c.pem"], "--tls-cert needs --tls-key and --tls-ca"),
        (["--dialect", "iso87ascii", "--framing", "2x", "--plain"], "invalid choice: '2x'"),
    ],
)
def test_usage_errors(args, message):
    result = subprocess.run([*BANKSIM, "--listen", "127.0.0.1:0", *args], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and message in result.stderr


def test_port_in_use_is_one_line(tmp_path):
    with banksim("--dialect", "iso87ascii", "--framing", "2b", "--plain", log=tmp_path / "first.log") as port:
        result = subprocess.run([*BANKSIM, "--listen", f"127.0.0.1:{port}", "--dialect", "iso87ascii",
                                 "--framing", "2b", "--plain"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert len(lines) == 1 and lines[0].startswith(f"banksim: cannot listen on 127.0.0.1:{port}")
