"""Chaos test: money safety across the whole payment lifecycle (issue 8, acceptance).

Set-up and faults: see `tests.chaos.scenario` (the real kswitch process, two in-process
banksims, a web tier taking sales and pre-authorizations through full and partial
captures, voids and refunds with idempotent retries; late and dropped bank answers, bank
restarts, SIGKILLs of the switch and of its journal writer process, and on PostgreSQL the server ending
the journal's connections).  ``bin/soak`` runs the same scenario for longer.

Invariants, checked after the load stops, faults go off and store-and-forward drains
(`tests.chaos.invariants`; a failure lists every violation by invariant, each naming
the order, its answers, its status and its postings at the bank):

    W0 answers        every request got an answer; none was an error or ``internal``.
    W1 web tier vs    the web tier's last answers agree with ``status``: an approved
       status         authorization is still approved/captured/refunded (reversed only
                      after a void it asked for); a timeout ended reversed; the captured
                      amount is the one capture answered approved; the refunded amount is
                      the sum of refunds answered approved; a void ended reversed.
    W2 one key, one   a request sent twice at once under one key gets one operation and
       operation      the same answer twice.
    K  lifecycle      capture, void and refund accept ``idempotency_key``.
       idempotency
    S  status lists   ``status`` lists every capture, refund and void as the journal has it.
       operations
    J  journal        one payment per order, ``status`` equals the journal; the parent's
                      captured and refunded totals equal the sum of its approved operations.
    B1 bank vs status per order the bank's live debits, credits and holds equal what
                      ``status`` says (captured, refunded, held); no posting without an order.
    B2 no double      no order debited twice; no more live credits than approved refunds.
    B3 balances       every card's balance == opening - captured + refunded over all its
                      orders, and available == balance - open pre-authorizations.
    P  nothing        nothing pending in the journal, in ``status`` or in the SAF queue.
       pending
    D  dead letters   none, unless the bank was unreachable past the SAF maximum.
    L  logs           no card data in any run's log, killed runs included.

``KSWITCH_CHAOS_SEED`` (default: random, printed), ``KSWITCH_CHAOS_SECONDS`` (default 45)
and ``KSWITCH_CHAOS_JOURNAL`` (``sqlite`` or ``postgresql``, with ``KSWITCH_PG_DSN``).
"""

from __future__ import annotations

import json
import os
import random

import pytest
import pytest_twisted

from tests.chaos.scenario import ChaosOptions, run

pytestmark = pytest.mark.chaos

SEED = int(os.environ.get("KSWITCH_CHAOS_SEED") or random.SystemRandom().randrange(1, 1_000_000))
SECONDS = float(os.environ.get("KSWITCH_CHAOS_SECONDS", "45"))
JOURNAL = os.environ.get("KSWITCH_CHAOS_JOURNAL", "sqlite")


@pytest.mark.timeout(300)
@pytest_twisted.ensureDeferred
async def test_lifecycles_under_chaos_keep_money_invariants(tmp_path):
    if JOURNAL == "postgresql":
        from tests.journal.conftest import require_postgres

        require_postgres()
    result = await run(ChaosOptions(seed=SEED, seconds=SECONDS, journal=JOURNAL), tmp_path)
    print(f"\nchaos test summary: {json.dumps(result.summary)}")
    if result.report.violations:
        pytest.fail(result.failure(), pytrace=False)
    assert result.summary["kills"] >= 3
    assert result.summary["writer_kills"] >= 1, f"no writer process was there to kill: {result.summary}"
    if JOURNAL == "postgresql":
        assert result.summary["pg_backends_ended"] >= 1, f"no journal connection was ended: {result.summary}"
    ops = result.summary["ops"]
    for needed in ("capture:approved", "refund:approved", "void:reversed", "authorize:timeout"):
        assert ops.get(needed, 0) > 0, f"the load never produced {needed} (seed {SEED}): {ops}"
