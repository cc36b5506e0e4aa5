"""bin/bench as an operator runs it: against a socket API (here a stand-in that answers every
authorization ``approved``), with idempotency keys by default, and ``--hold`` reporting memory."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bin" / "bench"


class FakeApi:
    """Answers hello and every authorization on one connection at a time; keeps the requests."""

    def __init__(self, answer: bool = True) -> None:
        self.answer = answer
        self.requests: list[dict[str, object]] = []
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(30)
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        try:
            conn, _ = self.server.accept()
        except OSError:
            return
        conn.settimeout(30)
        buffer = b""
        with conn:
            while True:
                try:
                    chunk = conn.recv(65536)
                except OSError:
                    return
                if not chunk:
                    return
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    request = json.loads(line)
                    if request["op"] == "hello":
                        conn.sendall(json.dumps({"id": request["id"], "ok": True}).encode() + b"\n")
                        continue
                    self.requests.append(request)
                    if self.answer:
                        answer = {"id": request["id"], "ok": True, "status": "approved"}
                        try:
                            conn.sendall(json.dumps(answer).encode() + b"\n")
                        except OSError:  # bin/bench has finished and closed the connection
                            return


def bench(api: FakeApi, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--connect", f"127.0.0.1:{api.port}", "--connections", "1", *args],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_requests_carry_idempotency_keys_unless_told_not_to() -> None:
    with_keys = FakeApi()
    out = bench(with_keys, "--duration", "0.5", "--window", "2")
    assert "approved" in out
    keys = [r.get("idempotency_key") for r in with_keys.requests]
    assert keys and all(keys) and len(set(keys)) == len(keys)

    without = FakeApi()
    bench(without, "--duration", "0.5", "--window", "2", "--no-keys")
    assert without.requests and all("idempotency_key" not in r for r in without.requests)


def test_hold_sends_n_payments_and_reports_memory_per_pending_one() -> None:
    api = FakeApi(answer=False)
    out = bench(api, "--hold", "50", "--pid", str(os.getpid()), "--settle", "0.5")
    assert len(api.requests) == 50
    assert "50 authorizations held" in out and "KB per pending payment" in out


def test_hold_with_warm_holds_w_first_then_n_and_reports_the_ns_growth_apart() -> None:
    api = FakeApi(answer=False)
    out = bench(api, "--hold", "30", "--warm", "20", "--pid", str(os.getpid()), "--settle", "0.5")
    assert len(api.requests) == 50 and len({r["id"] for r in api.requests}) == 50
    assert "30 authorizations held" in out and "after 20 held first" in out
    assert "for the last 30" in out and out.count("KB per pending payment") == 2


def test_hold_reports_the_writer_process_apart_and_both_together() -> None:
    api = FakeApi(answer=False)
    out = bench(api, "--hold", "30", "--warm", "20", "--pid", str(os.getpid()), "--writer-pid", str(os.getppid()),
                "--settle", "0.5")
    assert "switch RSS" in out and "writer RSS" in out and out.count("KB per pending payment") == 5
    together = next(line for line in out.splitlines() if line.strip().startswith("together"))
    assert "warm" in together


def test_hold_needs_the_switch_pid() -> None:
    done = subprocess.run([sys.executable, str(BENCH), "--hold", "5"], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "--pid" in done.stderr
