"""``kswitch reconcile`` and ``kswitch report settlement`` run as separate processes on the journal of a
day's traffic, as an operator runs them: exit 0 clean, 1 with exceptions (named), 2 with one line for
every mistake; the report in each format, the same numbers as the switch computes in process."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest_twisted
from openpyxl import load_workbook

from switch.domain.settlementfile import HEADER, render_file
from switch.ops.reports.build import settlement_report
from tests.e2e.harness import authorize, start_env, stop_env
from tests.e2e.test_fees import DEMO_FEES
from tests.e2e.test_saf_cli import kswitch
from tests.e2e.test_settlement_day import MC, banksim_file


@pytest_twisted.ensureDeferred
async def test_reconcile_and_report_from_the_command_line(tmp_path: Path) -> None:
    env = await start_env(tmp_path, extra_config=DEMO_FEES)
    try:
        c = await env.connect()
        sale = await c.call(authorize(1, amount=10_000))
        await c.call(authorize(2, pan=MC, amount=2_000))
        refund = await c.call({"id": 3, "op": "refund", "txn_id": sale["txn_id"], "amount": 2_500})
        assert refund["status"] == "partially_refunded", refund
        day = env.journal.business_date("bank_a")
        lines = banksim_file(env, "bank_a", day)
        report = (await settlement_report(env.journal, day, env.switch.config.banks)).as_dict()
    finally:
        await stop_env(env)
    cfg = str(env.config_file)
    clean, doubled = tmp_path / "clean.csv", tmp_path / "doubled.csv"
    clean.write_bytes(render_file(lines))
    doubled.write_bytes(render_file(lines + [lines[0]]))

    code, out, err = await kswitch("reconcile", "--config", cfg, "--bank", "bank_a", "--date", day, "--file",
                                   str(clean))
    assert (code, err) == (0, "") and out.endswith("2 matched, 0 cancelled within the day; clean: every line "
                                                   "matches the journal\n"), out
    code, out, err = await kswitch("reconcile", "--bank", "bank_a", "--date", day, "--file", str(doubled), "--json",
                                   "--config", cfg)
    assert (code, err) == (1, "")
    result = json.loads(out)
    assert result["result"] == "exceptions"
    assert [(e["kind"], e["payment"], e["bank_amount"]) for e in result["exceptions"]] == [
        ("duplicate_at_bank", sale["txn_id"], 10_000)]
    code, out, err = await kswitch("reconcile", "--config", cfg, "--bank", "bank_a", "--date", day, "--file",
                                   str(doubled))
    assert code == 1 and out.startswith("duplicate_at_bank") and sale["txn_id"] in out

    bad_line = tmp_path / "bad.csv"
    bad_line.write_text(f"{HEADER}\n{lines[0].text()}\n{lines[1].text().replace(',USD,', ',usd,')}\n")
    other_day = tmp_path / "other.csv"
    other_day.write_bytes(render_file([replace(lines[0], business_date="2001-01-01")]))
    mistakes = [
        (("--bank", "bank_z", "--date", day, "--file", str(clean)), "kswitch: unknown bank 'bank_z'; configured: "
                                                                    "bank_a, bank_b\n"),
        (("--bank", "bank_a", "--date", "2026-02-30", "--file", str(clean)),
         "kswitch reconcile: argument --date: expected a date YYYY-MM-DD, got '2026-02-30' (see kswitch reconcile "
         "--help)\n"),
        (("--bank", "bank_a", "--date", day, "--file", str(tmp_path / "none.csv")),
         f"kswitch: cannot read {tmp_path / 'none.csv'}: No such file or directory\n"),
        (("--bank", "bank_a", "--date", day, "--file", str(bad_line)),
         f"kswitch: {bad_line}: line 3: currency: expected an ISO 4217 code such as USD, got 'usd'\n"),
        (("--bank", "bank_a", "--date", day, "--file", str(other_day)),
         f"kswitch: {other_day}: a line of business date 2001-01-01, not {day} (rrn {lines[0].rrn}, stan "
         f"{lines[0].stan})\n"),
    ]
    for args, expected in mistakes:
        assert await kswitch("reconcile", "--config", cfg, *args) == (2, "", expected), args

    code, out, err = await kswitch("report", "settlement", "--config", cfg, "--format", "json")
    assert (code, err) == (0, "") and json.loads(out) == report, "default date: the open one, none closed yet"
    code, out, err = await kswitch("report", "settlement", "--config", cfg, "--date", day, "--bank", "bank_b",
                                   "--format", "csv")
    assert code == 0 and out.splitlines()[1].startswith(f"{day},bank_b,USD,1,2000,")
    code, out, err = await kswitch("report", "settlement", "--config", cfg, "--date", day)
    assert code == 0 and out.startswith(f"Settlement report, business date {day}\n")
    net_a = next(b["net"] for b in report["banks"] if b["bank"] == "bank_a")
    assert "TOTAL" in out and f" {net_a // 100}.{net_a % 100:02d}" in out, "money in dollars and cents"
    xlsx = tmp_path / "report.xlsx"
    code, out, err = await kswitch("report", "settlement", "--config", cfg, "--format", "xlsx", "--output", str(xlsx))
    assert (code, out, err) == (0, "", "")
    assert load_workbook(xlsx).sheetnames == ["Banks", "Merchants", "Gateway"]
    code, out, err = await kswitch("report", "settlement", "--config", cfg, "--date", "2001-01-01", "--format",
                                   "json")
    assert code == 0 and json.loads(out)["banks"] == [], "a date without traffic is an empty report"
    for args, expected in (
        (("--format", "xlsx"), "kswitch: --format xlsx writes a file: give --output FILE\n"),
        (("--bank", "bank_z"), "kswitch: unknown bank 'bank_z'; configured: bank_a, bank_b\n"),
        (("--format", "json", "--output", str(tmp_path / "no-dir" / "r.json")),
         f"kswitch: cannot write {tmp_path / 'no-dir' / 'r.json'}: No such file or directory\n"),
    ):
        assert await kswitch("report", "settlement", "--config", cfg, *args) == (2, "", expected), args
