"""A day of mixed traffic through the demo stack, then the day's settlement: banksim's settlement file
reconciles clean with the journal, a dropped or doubled posting (banksim fault injection) becomes an
exception naming the payment, and every report's totals equal sums computed here with plain SQL over
the journal's rows; JSON, CSV and xlsx read back; the admin endpoint serves it only to operators."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from argparse import Namespace
from collections import defaultdict
from dataclasses import replace
from typing import Any

import pytest_twisted
from openpyxl import load_workbook
from twisted.internet.address import IPv4Address
from twisted.web.test.requesthelper import DummyRequest

from switch.domain.currency import by_alpha
from switch.ops.admin import admin_site
from switch.ops.reports.build import settlement_report
from switch.ops.reports.render import render
from switch.ops.settlementcli import run_reconcile
from switch.tools.banksim.settlement import settlement_lines
from tests.e2e.harness import TOKEN, Env, authorize, eventually, http_get, start_env, stop_env
from tests.e2e.test_fees import DEMO_FEES

VISA, MC, DECLINED = "4111111111111111", "5555555555554444", "4000000000000002"


async def mixed_day(env: Env) -> dict[str, Any]:
    """Sales on both banks, a partial refund, a pre-authorization captured, one left bare, a void, a decline,
    a sale for another merchant, and a sale whose answer is lost and the switch reverses. Returns the answers."""
    c = await env.connect()
    other = await env.connect(client="other", token=f"{TOKEN}-other")
    done: dict[str, Any] = {}
    done["sale_a"] = await c.call(authorize(1, amount=10_000))
    small = done["refunded_a"] = await c.call(authorize(2, amount=1_000))
    done["refund"] = await c.call({"id": 3, "op": "refund", "txn_id": small["txn_id"], "amount": 400})
    auth = done["preauth_b"] = await c.call(authorize(4, pan=MC, amount=5_000, capture=False))
    done["capture"] = await c.call({"id": 5, "op": "capture", "txn_id": auth["txn_id"], "amount": 3_001})
    done["bare_a"] = await c.call(authorize(6, amount=700, capture=False))
    voided = done["voided_b"] = await c.call(authorize(7, pan=MC, amount=2_000))
    done["void"] = await c.call({"id": 8, "op": "void", "txn_id": voided["txn_id"]})
    done["declined"] = await c.call(authorize(9, pan=DECLINED, amount=300))
    done["other_merchant"] = await other.call(authorize(10, pan=MC, amount=4_200, merchant_id="M200"))
    bank = env.sims["bank_a"]
    bank.set_faults(drop_ratio=1.0)  # the bank debits, its answer is lost: the switch reverses
    lost = done["lost"] = await c.call(authorize(11, amount=900))
    bank.set_faults(drop_ratio=0.0)
    assert lost["status"] == "timeout", lost

    async def reversed_() -> bool:
        return (await env.journal.get_transaction(lost["txn_id"])).status.value == "reversed"

    await eventually(reversed_)
    assert [done[k]["status"] for k in ("sale_a", "refund", "capture", "bare_a", "void", "declined",
                                        "other_merchant")] == [
        "approved", "partially_refunded", "captured", "approved", "reversed", "declined", "approved"]
    return done


def banksim_file(env: Env, bank: str, day: str) -> list:
    """banksim's settlement file of the day: every posting of this test's banksim is of ``day``."""
    return settlement_lines(env.sims[bank].ledger.postings(), day, date_of=lambda _: day)


def _db(env: Env) -> sqlite3.Connection:
    db = sqlite3.connect(env.switch.config.journal.sqlite_path)
    db.row_factory = sqlite3.Row
    return db


MOVED_SALE = "('approved', 'captured', 'voided', 'refunded', 'partially_refunded', 'reversed')"


def sql_totals(env: Env, day: str) -> dict[str, Any]:
    """The day's totals straight from the journal's table, without the switch's classification code."""
    db = _db(env)
    banks: dict[tuple, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    merchants: dict[tuple, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    queries = {
        "sales": "SELECT connector, merchant_id, currency, CASE WHEN kind = 'sale' AND amount_captured > 0 "
                 "THEN amount_captured ELSE amount END AS amount FROM transactions WHERE business_date = :d AND "
                 f"((kind = 'sale' AND status IN {MOVED_SALE}) OR (kind = 'capture' AND status IN "
                 "('approved', 'reversed')))",
        "refunds": "SELECT connector, merchant_id, currency, amount FROM transactions WHERE business_date = :d "
                   "AND kind = 'refund' AND status IN ('approved', 'reversed')",
        "voids": "SELECT v.connector, v.merchant_id, v.currency, p.amount_captured AS amount FROM transactions v "
                 "JOIN transactions p ON p.txn_id = v.parent_txn_id WHERE v.business_date = :d AND v.kind = 'void' "
                 "AND v.status = 'approved' AND (p.kind = 'sale' OR p.amount_captured > 0)",
        "reversals": "SELECT connector, merchant_id, currency, CASE WHEN kind = 'sale' AND amount_captured > 0 "
                     "THEN amount_captured ELSE amount END AS amount FROM transactions WHERE status = 'reversed' "
                     "AND reversal_business_date = :d AND kind IN ('sale', 'capture')",
    }
    for name, sql in queries.items():
        for r in db.execute(sql, {"d": day}):
            b, m = banks[(r["connector"], r["currency"])], merchants[(r["merchant_id"], r["currency"])]
            b[f"{name}_count"] += 1
            b[f"{name}_amount"] += r["amount"]
            m[name] += r["amount"]
    for r in db.execute("SELECT connector, merchant_id, currency, SUM(bank_fee) AS bank, SUM(merchant_fee) AS mdr "
                        "FROM transactions WHERE business_date = :d GROUP BY connector, merchant_id, currency",
                        {"d": day}):
        banks[(r["connector"], r["currency"])]["bank_fees"] += r["bank"]
        merchants[(r["merchant_id"], r["currency"])]["mdr"] += r["mdr"]
    for b in banks.values():
        b["net"] = (b["sales_amount"] - b["voids_amount"] - b["reversals_amount"] - b["refunds_amount"]
                    - b["bank_fees"])
    for m in merchants.values():
        m["gross"] = m["sales"] - m["voids"] - m["reversals"]
        m["net"] = m["gross"] - m["refunds"] - m["mdr"]
    gateway: dict[str, int] = defaultdict(int)
    for (_, currency), m in merchants.items():
        gateway[currency] += m["mdr"]
    for (_, currency), b in banks.items():
        gateway[currency] -= b["bank_fees"]
    db.close()
    return {"banks": banks, "merchants": merchants, "gateway": gateway}


BANK_FIELDS = ("sales_count", "sales_amount", "refunds_count", "refunds_amount", "reversals_count",
               "reversals_amount", "voids_count", "voids_amount", "bank_fees", "net")


def check_report_against_sql(report: dict[str, Any], expected: dict[str, Any]) -> None:
    banks = {(b["bank"], b["currency"]): b for b in report["banks"]}
    assert set(banks) == {k for k, v in expected["banks"].items() if any(v.values())}
    for key, b in banks.items():
        assert {f: b[f] for f in BANK_FIELDS} == {f: expected["banks"][key][f] for f in BANK_FIELDS}, key
    merchants = {(m["merchant"], m["currency"]): m for m in report["merchants"]}
    for key, m in merchants.items():
        want = expected["merchants"][key]
        assert (m["gross"], m["refunds"], m["mdr"], m["net"]) == (want["gross"], want["refunds"], want["mdr"],
                                                                 want["net"]), key
    assert {g["currency"]: g["revenue"] for g in report["gateway"]} == dict(expected["gateway"])


@pytest_twisted.ensureDeferred
async def test_a_mixed_day_reconciles_clean_by_file_and_every_report_adds_up(tmp_path):
    env = await start_env(tmp_path, request_timeout=0.5, extra_config=DEMO_FEES)
    try:
        done = await mixed_day(env)
        day = env.journal.business_date("bank_a")
        assert day == env.journal.business_date("bank_b")
        for bank in ("bank_a", "bank_b"):
            lines = banksim_file(env, bank, day)
            result = await run_reconcile(env.journal, Namespace(bank=bank, date=day), lines)
            assert result.clean, result.as_dict()
            assert result.matched == len(lines) > 0
        types = [(x.type, x.amount) for x in banksim_file(env, "bank_a", day)]
        assert types == [("debit", 10_000), ("debit", 1_000), ("credit", 400), ("debit", 900),
                         ("debit_reversal", 900)], "the lost sale and its reversal are both in the file"

        report = await settlement_report(env.journal, day, env.switch.config.banks)
        as_json = report.as_dict()
        check_report_against_sql(as_json, sql_totals(env, day))
        bank_b = next(b for b in as_json["banks"] if b["bank"] == "bank_b")
        assert (bank_b["voids_count"], bank_b["voids_amount"], bank_b["sales_count"]) == (1, 2_000, 3)
        bank_a = next(b for b in as_json["banks"] if b["bank"] == "bank_a")
        assert (bank_a["sales_count"], bank_a["reversals_count"], bank_a["reversals_amount"],
                bank_a["authorizations_count"]) == (3, 1, 900, 1), "the lost sale and its reversal, the same day"
        assert {m["merchant"] for m in as_json["merchants"]} == {"M100", "M200"}
        m200 = await settlement_report(env.journal, day, env.switch.config.banks, merchant="M200")
        assert [(b["bank"], b["sales_amount"]) for b in m200.as_dict()["banks"]] == [("bank_b", 4_200)]
        assert done["other_merchant"]["connector"] == "bank_b"
        check_formats(report)
        await check_admin(env, report)
    finally:
        await stop_env(env)


def check_formats(report: Any) -> None:
    data = report.as_dict()
    assert json.loads(render(report, "json")) == data
    sections = render(report, "csv").decode().split("\n\n")
    assert len(sections) == 3
    for text, name in zip(sections, ("banks", "merchants", "gateway")):
        rows = list(csv.DictReader(io.StringIO(text)))
        assert len(rows) == len(data[name])
        for row, want in zip(rows, data[name]):
            assert row["business_date"] == data["business_date"]
            assert {k: str(v) for k, v in want.items()} == {k: v for k, v in row.items() if k != "business_date"}
    book = load_workbook(io.BytesIO(render(report, "xlsx")))
    assert book.sheetnames == ["Banks", "Merchants", "Gateway"]
    sheet = book["Banks"]
    header = [c.value for c in sheet[1]]
    rows = [dict(zip(header, (c.value for c in r))) for r in sheet.iter_rows(min_row=2)]
    body, totals = [r for r in rows if r["business_date"] != "TOTAL"], [r for r in rows if r["business_date"] == "TOTAL"]
    assert len(body) == len(data["banks"]) and [t["currency"] for t in totals] == ["USD"]
    scale = 10 ** by_alpha("USD").exponent
    for row, want in zip(body, data["banks"]):
        assert round(row["net"] * scale) == want["net"] and row["sales_count"] == want["sales_count"]
    for column in ("sales_amount", "refunds_amount", "voids_amount", "bank_fees", "net"):
        assert round(totals[0][column] * scale) == sum(b[column] for b in data["banks"]), column
    cell = sheet.cell(row=2, column=header.index("net") + 1)
    assert cell.number_format == "#,##0.00;-#,##0.00"
    merchants = book["Merchants"]
    assert [c.value for c in merchants[1]][:3] == ["business_date", "merchant", "currency"]


async def check_admin(env: Env, report: Any) -> None:
    day = report.business_date
    code, body = await http_get(env.admin_port, f"/reports/settlement?date={day}&format=json")
    assert code == 200 and json.loads(body) == report.as_dict()
    code, body = await http_get(env.admin_port, f"/reports/settlement?date={day}&format=csv&bank=bank_b")
    assert code == 200 and body.decode().startswith("business_date,bank,currency,sales_count")
    assert body.decode().count("bank_a") == 0 and "bank_b" in body.decode()
    code, body = await http_get(env.admin_port, "/reports/settlement")
    assert code == 200 and json.loads(body)["business_date"] == day, "default: the open date (none closed yet)"
    for query, expected in (("date=2026-02-30", "date: expected a date"), ("format=xlsx", "format: expected"),
                            ("bank=bank_z", "bank: unknown bank 'bank_z'"), ("bank=bank_a&merchant=M100", "at most"),
                            ("color=red", "unknown parameter 'color'")):
        code, body = await http_get(env.admin_port, f"/reports/settlement?{query}")
        assert code == 400 and expected in json.loads(body)["error"], (query, body)
    # From anywhere but loopback or a Unix socket: refused, and the report is not even built.
    built = []

    async def source(*args: Any) -> Any:
        built.append(args)
        return report

    resource = admin_site(env.registry, dict, reports=source).resource.children[b"reports"].children[b"settlement"]
    outsider = DummyRequest([b""])
    outsider.client = IPv4Address("TCP", "192.0.2.7", 40000)
    assert json.loads(resource.render_GET(outsider))["error"].startswith("reports are served to loopback")
    assert outsider.responseCode == 403 and built == []


@pytest_twisted.ensureDeferred
async def test_a_dropped_and_a_doubled_posting_are_exceptions_naming_the_payments(tmp_path):
    env = await start_env(tmp_path, extra_config=DEMO_FEES)
    try:
        c = await env.connect()
        first = await c.call(authorize(1, amount=1_500))
        env.sims["bank_a"].set_faults(drop_posting=True)
        dropped = await c.call(authorize(2, amount=2_500))
        env.sims["bank_a"].set_faults(drop_posting=False)
        env.sims["bank_b"].set_faults(double_posting=True)
        doubled = await c.call(authorize(3, pan=MC, amount=3_500))
        env.sims["bank_b"].set_faults(double_posting=False)
        declined = await c.call(authorize(4, pan=DECLINED, amount=100))
        day = env.journal.business_date("bank_a")

        result_a = await run_reconcile(env.journal, Namespace(bank="bank_a", date=day), banksim_file(env, "bank_a", day))
        [missing] = result_a.exceptions
        assert (missing.kind, missing.payment, missing.switch_amount, missing.bank_amount) == (
            "missing_at_bank", dropped["txn_id"], 2_500, None)
        result_b = await run_reconcile(env.journal, Namespace(bank="bank_b", date=day), banksim_file(env, "bank_b", day))
        [twice] = result_b.exceptions
        assert (twice.kind, twice.payment, twice.bank_amount) == ("duplicate_at_bank", doubled["txn_id"], 3_500)

        # What a bank's file can say otherwise: another amount, a payment the switch declined, one it never sent.
        refused = await env.journal.get_transaction(declined["txn_id"])
        sale = banksim_file(env, "bank_a", day)[0]
        lines = [replace(sale, amount=1_499), replace(sale, rrn=refused.rrn, stan=refused.stan, amount=100),
                 replace(sale, rrn="999999999999", stan="999999")]
        result = await run_reconcile(env.journal, Namespace(bank="bank_a", date=day), lines)
        assert sorted((e.kind, e.payment) for e in result.exceptions) == sorted([
            ("amount_mismatch", first["txn_id"]), ("status_mismatch", declined["txn_id"]),
            ("missing_at_switch", None), ("missing_at_bank", dropped["txn_id"])])
        status = next(e for e in result.exceptions if e.kind == "status_mismatch")
        assert status.detail == "posted at the bank as debit; declined at the switch"
    finally:
        await stop_env(env)
