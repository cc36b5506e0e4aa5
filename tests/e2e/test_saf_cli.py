"""``kswitch saf`` run as a separate process on a real journal, exactly as an operator would:
``list`` with ``--state``/``--limit``, ``retry``/``drop`` mistakes in one line with exit 2,
and ``--config`` before or after the subcommand."""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from switch.app import ensure_dev_keys
from switch.journal import CardData, Kind, NewTransaction, SafDraft, SafKind, open_journal
from switch.journal.models import utc_from_seconds
from switch.ops.config import load_config
from tests.e2e.harness import config_text
from tests.tools.test_kpay import Collect

ROOT = Path(__file__).resolve().parents[2]


def kswitch(*args: str) -> Deferred[tuple[int, str, str]]:
    collect = Collect(b"")
    command = [sys.executable, str(ROOT / "bin" / "kswitch"), *args]
    reactor.spawnProcess(collect, sys.executable, command, env={"PATH": "/usr/bin:/bin"}, path=str(ROOT))
    return collect.done.addTimeout(60, reactor)


async def queue_with_every_state(cfg_file: Path) -> dict[str, int]:
    """Items 1 dead, 2 and 3 queued, 4 done, written through the journal as the switch would."""
    cfg = load_config(cfg_file)
    ensure_dev_keys(cfg.state_dir / "keys")
    journal = await open_journal(cfg.journal, reactor)
    ids = {}
    try:
        for name in ("dead", "queued", "queued2", "done"):
            txn = await journal.create_transaction(NewTransaction(
                kind=Kind.SALE, merchant_id="M100", connector="bank_a", amount=1250, currency="USD",
                order_id=f"o-{name}", card=CardData("4111111111111111", "3012"), stan="000001",
            ))
            draft = SafDraft(connector="bank_a", kind=SafKind.REVERSAL, mti="0400", fields={"11": "000001"},
                             max_attempts=1 if name == "dead" else 5)
            ids[name] = (await journal.saf_enqueue(txn.txn_id, draft)).saf_id
        later = utc_from_seconds(reactor.seconds()) + timedelta(minutes=5)
        await journal.saf_record_attempt(ids["dead"], next_due_at=later, error="not sent: KeyError: '11'")
        await journal.saf_complete(ids["done"], response_code="00")
    finally:
        await journal.close()
    return ids


@pytest_twisted.ensureDeferred
async def test_saf_list_retry_and_drop_as_an_operator(tmp_path: Path) -> None:
    cfg = tmp_path / "kswitch.toml"
    cfg.write_text(config_text(tmp_path / "state", {"bank_a": 1, "bank_b": 2}, 1.0))
    ids = await queue_with_every_state(cfg)

    code, out, err = await kswitch("saf", "list", "--config", str(cfg))
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[-1] == "1 item(s)" and lines[0].split()[:4] == [str(ids["dead"]), "bank_a", "reversal", "dead"]
    assert "no final answer after 1 attempts; last: not sent: KeyError" in lines[0]

    code, out, _ = await kswitch("--config", str(cfg), "saf", "list", "--state", "queued,done", "--json")
    assert code == 0
    assert [(r["saf_id"], r["state"]) for r in json.loads(out)] == [
        (ids["queued"], "queued"), (ids["queued2"], "queued"), (ids["done"], "done")
    ]
    code, out, _ = await kswitch("saf", "--config", str(cfg), "list", "--state", "queued", "--state", "dead",
                                 "--limit", "2", "--json")
    assert code == 0 and [r["saf_id"] for r in json.loads(out)] == [ids["dead"], ids["queued"]]
    code, out, _ = await kswitch("saf", "list", "--state", "dropped", "--limit", "1", "--config", str(cfg))
    assert (code, out) == (0, "0 item(s)\n")

    mistakes: list[tuple[tuple[str, ...], str]] = [
        (("retry", "999", "--operator", "alice"), "kswitch: store-and-forward item 999 not found\n"),
        (("retry", str(ids["queued"]), "--operator", "alice"),
         f"kswitch: cannot retry store-and-forward item {ids['queued']}: it is 'queued', allowed from [dead]\n"),
        (("drop", str(ids["done"]), "--operator", "alice", "--reason", "settled by phone"),
         f"kswitch: cannot drop store-and-forward item {ids['done']}: it is 'done', allowed from [dead, queued]\n"),
        (("drop", "abc", "--operator", "alice", "--reason", "x"),
         "kswitch saf drop: argument saf_id: expected a store-and-forward item id (a number from saf list), "
         "got 'abc' (see kswitch saf drop --help)\n"),
        (("list", "--state", "stuck"),
         "kswitch saf list: argument --state: expected queued, dead, done, dropped (comma list allowed), "
         "got 'stuck' (see kswitch saf list --help)\n"),
        (("list", "--limit", "0"),
         "kswitch saf list: argument --limit: expected a positive whole number, got '0' (see kswitch saf list --help)\n"),
    ]
    for args, expected in mistakes:
        code, out, err = await kswitch("saf", *args, "--config", str(cfg))
        assert (code, out, err) == (2, "", expected), args

    code, out, err = await kswitch("saf", "retry", str(ids["dead"]), "--operator", "alice", "--config", str(cfg))
    assert (code, err) == (0, "") and "is queued again" in out
    code, out, err = await kswitch("saf", "drop", str(ids["queued2"]), "--operator", "bob", "--reason",
                                   "bank confirmed no original", "--config", str(cfg))
    assert (code, err) == (0, "")
    code, out, _ = await kswitch("saf", "list", "--state", "queued,dropped", "--json", "--config", str(cfg))
    rows: list[dict[str, Any]] = json.loads(out)
    assert [(r["saf_id"], r["state"], r["attempts"]) for r in rows] == [
        (ids["dead"], "queued", 0), (ids["queued"], "queued", 0), (ids["queued2"], "dropped", 0)
    ]
    assert rows[2]["state_reason"] == "bank confirmed no original"


@pytest_twisted.ensureDeferred
async def test_config_after_any_subcommand(tmp_path: Path) -> None:
    cfg = tmp_path / "kswitch.toml"
    cfg.write_text(config_text(tmp_path / "state", {"bank_a": 1, "bank_b": 2}, 1.0))
    after = await kswitch("check-config", "--config", str(cfg))
    before = await kswitch("--config", str(cfg), "check-config")
    route = await kswitch("route", "--amount", "100", "--currency", "USD", "--pan", "4111111111111111",
                          "--config", str(cfg))
    missing = await kswitch("saf", "list", "--config", str(tmp_path / "nothing.toml"))
    assert after[0] == before[0] == 0 and after[1] == before[1] and "OK" in after[1]
    assert route[0] == 0 and "bank_a" in route[1]
    assert missing[0] == 2 and len(missing[2].splitlines()) == 1 and "nothing.toml" in missing[2]
    assert all("Traceback" not in err for _, _, err in (after, before, route, missing))
