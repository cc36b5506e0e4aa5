"""Ctrl-C on ``kswitch run`` with the demo configuration: the switch and its two simulated banks
stop cleanly, and the log says which steps it waited for.

The demo config (config/kswitch.toml) is what ``tox -e run`` starts; here it runs with its
state in a temporary directory, the API and admin server on Unix sockets and free ports for the
simulated banks.  Ctrl-C reaches the whole process group (the switch and its simulators), so
one case signals the group (the simulators ignore it and wait for the switch to sign off and
stop them); the other signals the switch alone, as ``kill -INT`` does.  The time allowed is the bound the configuration
gives (`Switch.stop_bound`) plus the interpreter's own exit, never a speed claim.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sqlite3
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_twisted
from structlog.testing import capture_logs
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from switch.app import STOP_WAITS, Switch
from switch.cli import LEASE_LOST_EXIT
from switch.gateway.client import BlockingClient, KSwitchError
from switch.heap import GEN0_THRESHOLD
from switch.libc import TRIM_INTERVAL
from switch.ops.config import load_config
from tests.crash.harness import SwitchProcess, remove_dir, short_run_dir, sleep
from tests.e2e.harness import authorize, eventually, start_env

DEMO = Path(__file__).resolve().parent.parent / "config"
EXIT_MARGIN = 10.0  # seconds for the interpreter to exit after the last step (thread pools, logs)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def demo_config(tmp_path: Path, run_dir: Path) -> Path:
    """config/kswitch.toml with a private state directory, Unix sockets, JSON logs and free ports."""
    text = (DEMO / "kswitch.toml").read_text()
    text = re.sub(r'(?m)^state_dir = .*$', f'state_dir = "{tmp_path / "state"}"', text)
    text = re.sub(r'(?m)^log_format = .*$', 'log_format = "json"', text)
    text = re.sub(r'(?m)^listen = \[.*\]', f'listen = ["unix:{run_dir / "api.sock"}:lockfile=1"]', text)
    text = re.sub(r'(?m)^listen = "tcp:.*"', f'listen = "unix:{run_dir / "admin.sock"}:lockfile=1"', text)
    text = re.sub(r'port = \d+', lambda _: f"port = {_free_port()}", text)
    text = re.sub(r'"127\.0\.0\.1:\d+"', lambda _: f'"127.0.0.1:{_free_port()}"', text)
    shutil.copy(DEMO / "banksim-accounts.toml", tmp_path)
    path = tmp_path / "kswitch.toml"
    path.write_text(text)
    return path


def events(log: Path) -> list[dict[str, Any]]:
    """The JSON log events of one run (the simulators' own lines are skipped)."""
    found = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and "event" in event:
            found.append(event)
    return found


async def exit_code(switch: SwitchProcess, timeout: float) -> int | None:
    """The exit code once the process ends; None if it is still running after ``timeout`` seconds."""
    assert switch.proc is not None
    waited = 0.0
    while switch.proc.poll() is None and waited < timeout:
        await sleep(0.1)
        waited += 0.1
    return switch.proc.poll()


@pytest.mark.timeout(100)
@pytest.mark.parametrize("target", ["process group", "switch alone"])
@pytest_twisted.ensureDeferred
async def test_sigint_stops_the_demo_switch_and_its_simulators_in_logged_bounded_steps(tmp_path, target):
    run_dir = short_run_dir()
    cfg_file = demo_config(tmp_path, run_dir)
    config = load_config(cfg_file)
    bound = Switch(config, reactor).stop_bound()
    switch = SwitchProcess(cfg_file, tmp_path, run_dir / "admin.sock")
    try:
        switch.start()
        await switch.wait_ready(30.0)
        assert switch.proc is not None
        if target == "process group":  # Ctrl-C in a terminal (the process leads its own session)
            os.killpg(switch.proc.pid, signal.SIGINT)
        else:
            switch.proc.send_signal(signal.SIGINT)
        code = await exit_code(switch, bound + EXIT_MARGIN)
        assert code == 0, f"kswitch exit code {code} (None: still running {bound + EXIT_MARGIN}s after SIGINT)\n" \
                          f"{switch.log_tail(30)}"

        log = events(switch.logs[-1])
        names = [e["event"] for e in log]
        frozen = next(e for e in log if e["event"] == "startup_heap_frozen")  # after start, before any payment
        assert frozen["objects"] > 10_000 and frozen["gen0_threshold"] == GEN0_THRESHOLD
        assert names.index("switch_started") < names.index("startup_heap_frozen")
        trim = next(e for e in log if e["event"] == "heap_trim")  # glibc: the C heap's free pages go back
        assert trim["interval"] == TRIM_INTERVAL
        stopping = next(e for e in log if e["event"] == "switch_stopping")
        assert stopping["reason"] == "SIGINT" and stopping["bound"] == bound
        waited = [e["step"] for e in log if e["event"] == "shutdown_waiting"]
        assert waited == ["api_requests", "links", "journal", "simulators"], switch.log_tail(30)
        assert all(e["bound"] > 0 for e in log if e["event"] == "shutdown_waiting")
        assert [e["step"] for e in log if e["event"] == "shutdown_step_done"] == waited, switch.log_tail(30)
        assert "shutdown_step_timed_out" not in names, switch.log_tail(30)
        assert sorted(e["simulator"] for e in log if e["event"] == "simulator_stopped") == ["bank_a", "bank_b"]
        # The simulators ignore Ctrl-C (the switch stops them last), so every link signed off first.
        assert sorted(e["connector"] for e in log if e["event"] == "link_signed_off") == ["bank_a", "bank_b"]
        assert names[-1] == "switch_stopped", switch.log_tail(10)
    finally:
        switch.abort()
        remove_dir(run_dir)


def test_a_step_that_runs_out_of_time_is_logged_and_the_stop_goes_on():
    """A bank link that never finishes closing (no sign-off answer, no close) holds the stop for
    its bound only; the journal step still runs and the switch reports stopped."""
    clock = Clock()
    switch = Switch(load_config(DEMO / "kswitch.toml"), clock)
    closing: Deferred[None] = Deferred()
    switch.banks = {"bank_a": SimpleNamespace(connector=SimpleNamespace(stop=lambda: closing))}  # type: ignore[dict-item]
    closed_journal = []
    switch.journal = SimpleNamespace(close=lambda: closed_journal.append(True) or succeed(None))  # type: ignore[assignment]
    with capture_logs() as logs:
        stopped = switch.stop(reason="SIGTERM")
        clock.advance(STOP_WAITS["links"] - 0.1)
        assert not stopped.called  # still waiting for the link, within its bound
        clock.advance(0.1)
        assert stopped.called and closed_journal == [True]
    steps = [(e["event"], e.get("step")) for e in logs if e["event"].startswith("shutdown_")]
    assert steps == [
        ("shutdown_waiting", "api_requests"), ("shutdown_step_done", "api_requests"),
        ("shutdown_waiting", "links"), ("shutdown_step_timed_out", "links"),
        ("shutdown_waiting", "journal"), ("shutdown_step_done", "journal"),
    ]
    assert logs[-1]["event"] == "switch_stopped"


@pytest.mark.timeout(100)
@pytest_twisted.ensureDeferred
async def test_a_switch_whose_journal_lease_is_taken_over_stops_with_its_own_exit_status(tmp_path):
    """Another node took the journal over (this one stalled past its lease, seen from the database): at its
    next write (the journal's lease fence) or heartbeat the switch stops, and exits with a status a supervisor
    restarts it on, not 0. A payment sent after the takeover is not committed: the web tier hears ``busy``
    (or, if the heartbeat came first, finds the switch closing)."""
    run_dir = short_run_dir()
    cfg_file = demo_config(tmp_path, run_dir)
    bound = Switch(load_config(cfg_file), reactor).stop_bound()
    switch = SwitchProcess(cfg_file, tmp_path, run_dir / "admin.sock")
    journal_file = tmp_path / "state" / "journal.sqlite3"
    try:
        switch.start()
        await switch.wait_ready(30.0)
        with BlockingClient(unix_path=str(run_dir / "api.sock"), client="demo", token=DEMO_TOKEN, timeout=10) as web:
            assert web.authorize(**demo_payment("before"))["status"] == "approved"
            with sqlite3.connect(journal_file, timeout=10) as journal:
                taken = journal.execute("UPDATE node_lease SET owner = 'other-node', host = 'host-b'").rowcount
            assert taken == 1
            with pytest.raises(KSwitchError) as refused:
                web.authorize(**demo_payment("after"))
        assert refused.value.code in ("busy", "connection_lost", "connect_failed"), refused.value
        code = await exit_code(switch, 5.0 + bound + EXIT_MARGIN)  # a heartbeat every 5 s, then the stop
        assert code == LEASE_LOST_EXIT != 0, f"kswitch exit code {code}\n{switch.log_tail(30)}"
        log = {e["event"]: e for e in events(switch.logs[-1])}
        assert "now held by kswitch node other-node (host host-b" in log["journal_lease_lost"]["error"]
        assert "switch_stopping_lease_lost" in log and "switch_stopped" in log
        assert "api_internal_error" not in log, switch.log_tail(30)
        with sqlite3.connect(journal_file, timeout=10) as journal:
            orders = journal.execute("SELECT order_id, status FROM transactions ORDER BY order_id").fetchall()
        assert orders == [("before", "approved")], orders
    finally:
        switch.abort()
        remove_dir(run_dir)


DEMO_TOKEN = "demo-token-not-for-production"  # config/kswitch.toml's demo web tier


def demo_payment(order_id: str) -> dict[str, Any]:
    return {"merchant_id": "M100", "store_id": "web", "order_id": order_id, "amount": 1250, "currency": "USD",
            "pan": "4111111111111111", "expiry": "3012", "cvv": "123"}


@pytest_twisted.ensureDeferred
async def test_a_stopping_switch_answers_what_it_read_and_reads_nothing_more(tmp_path):
    """A web tier that keeps sending while the switch stops cannot hold the stop for the whole
    grace: the request already read is answered, the next one is not read (it never reaches
    the bank), and the connection closes once the answer is written."""
    env = await start_env(tmp_path)
    try:
        sim = env.sims["bank_a"]
        sim.set_faults(delay=0.5)
        c = await env.connect()
        c.send(authorize(1))
        await eventually(lambda: env.switch.banks["bank_a"].connector.mux.in_flight == 1)
        stopping = env.switch.stop(reason="test")
        c.send(authorize(2))
        answer = await c.answers.get()
        assert (answer["id"], answer["status"]) == (1, "approved")
        await c.closed
        assert c.answers.pending == []  # nothing for request 2: send it again with its key, elsewhere or later
        await stopping
        assert sim.received["0200"] == 1
    finally:
        await env.switch.stop()
        for s in env.sims.values():
            await s.close()
