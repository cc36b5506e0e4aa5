"""Crash test: SIGKILL the real kswitch process under load, restart it, check the money.

Set-up
    Two simulated issuers (``BankSim``: bank_a ISO 8583:1987 ASCII with a TPDU, bank_b
    1993 binary) run *in the test process* over mutual TLS, so their ledgers survive every
    crash of the switch.  The switch is a real child process, ``bin/kswitch run`` with a
    config written to tmp_path: API and admin on Unix sockets, SQLite journal with
    development keys, ``request_timeout`` 1 s, store-and-forward retry every 0.2 s.
    A web tier of worker threads (``BlockingClient``) sends sales and pre-authorizations
    on six cards, each with a unique order id and idempotency key.  When a connection
    dies or cannot be made (the switch is down) the outcome is unknown, so the worker
    sends the identical request with the same key again until it gets an answer
    (socket API spec, section 9).  Meanwhile each bank switches at random between no
    fault, answers later than the timeout, answers just inside it, and dropped answers,
    so timeouts, late approvals and reversals happen all the time.

Crashes
    At random moments (seeded RNG, ``KSWITCH_CRASH_SEED``) the switch is killed with
    SIGKILL, at least three times, restarted at once, and the load goes on.  At the end
    the load stops (every request has a final answer), faults are switched off, the
    store-and-forward queue drains (``kswitch_saf_depth`` 0 on /metrics), the switch
    stops with SIGTERM (exit code 0), and the test opens the journal itself.

Invariants (a posting is the issuer's record of an approved sale = debit, or
pre-authorization = hold; a reversal marks it reversed and undoes it)
    I0  The journal holds exactly the requests the web tier sent: one transaction per
        order, bound to its idempotency key, each (except ``failed`` ones refused before
        any bank saw them) with its outgoing request journalled; RRNs (field 37) unique.
    I1  Bank and journal agree.  Every posting matches a journal transaction by
        connector + RRN with the same amount, card and effect; every un-reversed posting
        belongs to a transaction the journal holds as approved (or captured); every
        approved transaction has exactly one un-reversed posting.
    I2  No double debit: the issuer posted each request at most once, and no order has
        more than one un-reversed posting.
    I3  For every account at every bank: balance == opening balance − Σ amounts of the
        journal's approved sales on it, and available == balance − Σ amounts of its
        approved pre-authorizations (the open holds).
    I4  Every request got a final answer, and the last one agrees with the journal:
          ``approved``            → journal approved, and the money moved exactly once (I1);
          ``timeout``/``reversed`` → journal reversed, no money moved.  ``timeout`` is what
                                    an authorize says when the bank did not answer in
                                    time; ``reversed`` is what an idempotent replay says
                                    once that reversal was acknowledged (e.g. a request
                                    whose first answer was lost in a crash and that
                                    recovery reversed) — both mean "not authorized";
          ``declined``/``failed``  → the same status in the journal, no money moved;
          ``pending``              → never (the spec says authorize never answers it);
        an approval is never reversed behind the web tier's back.
    I5  After recovery and the drain nothing is left ``pending``/``timeout``/
        ``reversal_pending`` in the journal, and no SAF item is queued or dead.
    I6  The switch's logs (all runs, including the killed ones) hold no full PAN, CVV
        or track data.

Run alone: ``.tox/py3/bin/python -m pytest tests/crash -m crash -s`` (``-s`` shows
the summary line).  ``KSWITCH_CRASH_SEED`` picks other kill moments and fault phases;
each run's switch log (``kswitch-run-N.log``) and the journal stay in pytest's tmp_path.
"""

from __future__ import annotations

import json
import os
import random
import time

import pytest
import pytest_twisted
import structlog
from prometheus_client import CollectorRegistry
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred

from switch.journal.journal import open_journal
from switch.ops.config import load_config
from tests.crash.harness import (
    BANKS,
    Banks,
    SwitchProcess,
    accounts_toml,
    config_toml,
    remove_dir,
    short_run_dir,
    sleep,
    wait_saf_drained,
)
from tests.crash.invariants import check
from tests.crash.webtier import WebTier

pytestmark = pytest.mark.crash
log = structlog.get_logger("kswitch.test.crash")

SEED = int(os.environ.get("KSWITCH_CRASH_SEED", "8583"))
KILLS = 4
REQUEST_TIMEOUT = 1.0
WORKERS = 4
READY_TIMEOUT = 20.0

# (name, faults, weight) a bank switches between every 0.5-1.5 s.  Timeouts are kept to a few
# dozen per run: store-and-forward drains only one reversal per connector per second (see the
# report on switch/engine/saf.py), and the test must finish in about a minute.
FAULT_PHASES = (
    ("calm", dict(delay=0.0, drop_ratio=0.0), 5),
    ("late", dict(delay=REQUEST_TIMEOUT + 0.3, drop_ratio=0.0), 1),  # every answer after the timeout
    ("near_timeout", dict(delay=REQUEST_TIMEOUT - 0.08, drop_ratio=0.0), 1),  # in time, or just not
    ("drops", dict(delay=0.0, drop_ratio=0.1), 1),  # processed at the bank, answer lost
)


async def _fault_schedule(banks: Banks, rng: random.Random, stop: list[bool], seen: list[str]) -> None:
    while not stop:
        for bank in BANKS:
            name, faults, _ = rng.choices(FAULT_PHASES, weights=[w for *_, w in FAULT_PHASES])[0]
            banks.set_faults(bank, **faults)
            seen.append(f"{bank}:{name}")
        await sleep(rng.uniform(0.5, 1.5))
    for bank in BANKS:
        banks.set_faults(bank, delay=0.0, drop_ratio=0.0)


@pytest_twisted.ensureDeferred
async def test_sigkill_under_load_keeps_money_invariants(tmp_path):
    began = time.monotonic()
    rng = random.Random(SEED)
    run_dir = short_run_dir()
    state = tmp_path / "state"
    accounts = tmp_path / "accounts.toml"
    accounts.write_text(accounts_toml())
    banks = await Banks.start(accounts, state / "pki")
    for i, bank in enumerate(BANKS):
        banks.set_faults(bank, seed=SEED + i)
    cfg_file = tmp_path / "kswitch.toml"
    cfg_file.write_text(config_toml(state, run_dir, banks.ports, REQUEST_TIMEOUT))
    switch = SwitchProcess(cfg_file, tmp_path, run_dir / "admin.sock")
    web = WebTier(run_dir / "api.sock", SEED, WORKERS)
    stop_faults: list[bool] = []
    phases: list[str] = []
    restarts: list[float] = []
    journal = None
    try:
        switch.start()
        await switch.wait_ready(READY_TIMEOUT)
        web.start()
        faults = ensureDeferred(_fault_schedule(banks, rng, stop_faults, phases))

        for _ in range(KILLS):
            await sleep(rng.uniform(1.0, 2.5))
            answered_before = web.answered()
            switch.kill()
            await sleep(rng.uniform(0.0, 0.3))  # the web tier finds the switch gone
            switch.start()
            restarts.append(await switch.wait_ready(READY_TIMEOUT))
            assert web.alive() == WORKERS, f"web tier threads died: {web.crashes}"
            assert answered_before > 0, "no request was answered between two kills: the load is not running"
        await sleep(1.5)  # load on the last run too
        timings = {"load": time.monotonic() - began}

        stop_faults.append(True)
        await faults
        web.stop_new()
        await web.finished(timeout=30.0)
        timings["answered"] = time.monotonic() - began
        saf_backlog, _ = await wait_saf_drained(switch)
        timings["drained"] = time.monotonic() - began
        code = await switch.terminate(timeout=20.0)
        timings["stopped"] = time.monotonic() - began
        assert code == 0, f"kswitch exited with {code} on SIGTERM\n{switch.log_tail()}"

        config = load_config(cfg_file)
        journal = await open_journal(config.journal, reactor, registry=CollectorRegistry())
        report = await check(journal, banks, web.snapshot(), switch.logs)
        timings["checked"] = time.monotonic() - began
        summary = {
            "seed": SEED, "kills": switch.kills, "restart_seconds": [round(s, 2) for s in restarts],
            **report.summary,
            "recovered_in_flight": _recovered(switch),
            "saf_backlog_after_load": saf_backlog,
            "fault_phases": len(phases),
            "timings": {k: round(v, 1) for k, v in timings.items()},
        }
        print(f"\ncrash test summary: {json.dumps(summary)}")
        log.info("crash_test_summary", **summary)
        assert not report.violations, (
            f"money invariants violated (seed {SEED}, {switch.kills} kills, logs in {tmp_path}):\n"
            f"{report.render()}\nsummary: {json.dumps(summary)}"
        )
        assert switch.kills >= 3
        assert report.summary["web_answers"].get("approved", 0) > 0
        assert report.summary["journal"].get("reversed", 0) > 0, "no reversal happened: the faults did not bite"
    finally:
        stop_faults.append(True)
        web.abort()
        switch.abort()
        if journal is not None:
            await journal.close()
        await banks.close()
        remove_dir(run_dir)


def _recovered(switch: SwitchProcess) -> int:
    """Transactions the restarted switches found in flight (their ``recovered_pending`` log lines)."""
    count = 0
    for path in switch.logs:
        for line in path.read_text(errors="replace").splitlines():
            if '"recovered_pending"' in line:
                count += 1
    return count
