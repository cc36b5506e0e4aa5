"""Link traces: masked JSON lines written off the reactor thread, and isotrace reading them."""

from __future__ import annotations

import io
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest_twisted
from structlog.testing import capture_logs
from twisted.internet import reactor

from switch.iso.dialect import MessageError, load_dialect
from switch.tools.banksim.faults import Faults
from switch.tools.tracing import LinkTrace, TraceReader, render, trace_record
from tests.tools.banksim.wire import VISA, network, request

ROOT = Path(__file__).resolve().parents[3]
ISOTRACE = [sys.executable, str(ROOT / "bin" / "isotrace")]
DIALECT = load_dialect("iso87ascii")


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest_twisted.inlineCallbacks
def test_link_trace_writes_masked_records_and_errors(tmp_path):
    path = tmp_path / "link.trace"
    trace = LinkTrace(path, "bank_a", DIALECT, "2b", reactor)
    sale = request("sale", 1987, **{"35": "4111111111111111=3012101"})
    payload = DIALECT.encode(sale)
    trace.record("out", payload, sale, bytes.fromhex("6000010000"))
    trace.record("in", b"\xff\xfe", MessageError("Field data is 2 bytes, expecting 4", "t", 0))
    yield trace.close()
    written = records(path)
    assert written[0]["link"] == "bank_a" and written[0]["dir"] == "out" and written[0]["framing"] == "2b"
    assert written[0]["length"] == len(payload) and written[0]["tpdu"] == "6000010000" and written[0]["mti"] == "0200"
    assert written[0]["fields"]["2"] == "411111******1111"
    assert written[0]["fields"]["35"] == "[24 masked]" and written[0]["fields"]["48"] == "[3 masked]"
    assert list(written[0]["fields"]) == sorted(written[0]["fields"], key=int)
    assert written[1] == {**written[1], "dir": "in", "length": 2,
                          "error": "Field data is 2 bytes, expecting 4 (field t, byte offset 0)"}
    text = path.read_text()
    assert VISA not in text and payload.hex() not in text


@pytest_twisted.inlineCallbacks
def test_many_records_keep_their_order(tmp_path):
    path = tmp_path / "order.trace"
    trace = LinkTrace(path, "bank_a", DIALECT, "2b", reactor)
    for n in range(200):
        message = network(1987, stan=f"{n:06d}")
        trace.record("out", DIALECT.encode(message), message)
    yield trace.flush()
    assert [r["fields"]["11"] for r in records(path)] == [f"{n:06d}" for n in range(200)]
    yield trace.close()


@pytest_twisted.inlineCallbacks
def test_unwritable_trace_is_logged_not_raised(tmp_path):
    trace = LinkTrace(tmp_path / "missing-dir" / "x.trace", "bank_a", DIALECT, "2b", reactor)
    message = network(1987)
    with capture_logs() as logs:
        trace.record("in", DIALECT.encode(message), message)
        yield trace.flush()
    assert [e["event"] for e in logs] == ["trace_write_failed"]
    assert logs[0]["link"] == "bank_a" and "No such file or directory" in logs[0]["reason"]


@pytest_twisted.inlineCallbacks
def test_banksim_traces_requests_answers_and_garbage(banks, tmp_path):
    path = tmp_path / "banksim.trace"
    bank = yield banks(trace=path, name="bank_a", faults=Faults(garbage_every=2))
    client = yield bank.connect()
    yield client.exchange(network(1987, stan="000001"))
    client.send(network(1987, stan="000002"))
    yield client.next_frame()
    yield bank.sim.trace.flush()
    written = records(path)
    assert [(r["dir"], r.get("mti")) for r in written] == [("in", "0800"), ("out", "0810"), ("in", "0800"), ("out", None)]
    assert "expecting" in written[3]["error"]


def test_render_two_columns():
    out = trace_record("bank_a", "out", "2b", b"x" * 90, request("sale", 1987), DIALECT, 1781524800.123)
    answer = {"t": "0210", "11": "000001", "39": "51", "37": "616600000100"}
    back = trace_record("bank_a", "in", "2b", b"x" * 40, answer, DIALECT, 1781524800.2)
    sent, received = render(out), render(back)
    assert sent.startswith("12:00:00.123 bank_a     → 0200 stan 000001 pan 411111******1111 pc 000000 amt 000000001000 cur 840")
    assert received.startswith("12:00:00.200 bank_a     ") and "← 0210 stan 000001 rc 51 rrn 616600000100" in received
    assert received.index("←") > sent.index("→") + 40


def test_isotrace_prints_a_conversation_and_flags_bad_lines(tmp_path):
    path = tmp_path / "t.trace"
    lines = [
        trace_record("bank_a", "out", "2b", b"x", network(1987), DIALECT, 1781524800),
        trace_record("bank_a", "in", "2b", b"x", MessageError("truncated", "4", 12), DIALECT, 1781524801),
    ]
    path.write_text(json.dumps(lines[0]) + "\n{not json\n" + json.dumps(lines[1]) + "\n")
    result = subprocess.run([*ISOTRACE, str(path)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    out = result.stdout.splitlines()
    assert out[0] == "── 2026-06-15 ──"
    assert out[1].endswith("→ 0800 stan 000009 nmc 301")
    assert out[2].endswith("← undecodable 1 bytes: truncated (field 4, byte offset 12)")
    assert result.stderr.startswith("isotrace: line 2: not a trace record")


def test_isotrace_missing_file():
    result = subprocess.run([*ISOTRACE, "/nonexistent.trace"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and result.stderr == "isotrace: cannot read /nonexistent.trace: No such file or directory\n"


def test_reader_waits_for_the_end_of_a_half_written_line():
    out, err = io.StringIO(), io.StringIO()
    reader = TraceReader(out, err)
    line = json.dumps(trace_record("bank_a", "in", "2b", b"x", {"t": "0810", "39": "00"}, DIALECT, 1781524800))
    reader.feed(line[:25])
    assert out.getvalue() == "" and err.getvalue() == ""
    reader.feed(line[25:] + "\n")
    assert out.getvalue().endswith("← 0810 rc 00\n") and err.getvalue() == ""


def test_isotrace_follow_prints_appended_records(tmp_path):
    path = tmp_path / "live.trace"
    path.write_text("")
    process = subprocess.Popen([*ISOTRACE, "--follow", str(path)], stdout=subprocess.PIPE)
    try:
        record = trace_record("bank_a", "in", "2b", b"x", {"t": "0810", "11": "000009", "39": "00"}, DIALECT, 1781524800)
        with path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        shown = b""
        deadline = time.monotonic() + 20
        while shown.count(b"\n") < 2 and time.monotonic() < deadline:
            ready, _, _ = select.select([process.stdout], [], [], 1)
            if ready:
                shown += os.read(process.stdout.fileno(), 4096)
        lines = shown.decode().splitlines()
        assert lines[0] == "── 2026-06-15 ──"
        assert lines[1].endswith("← 0810 stan 000009 rc 00")
    finally:
        process.terminate()
        process.wait(10)
        process.stdout.close()
