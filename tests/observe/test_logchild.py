"""The log child (`switch.observe.logchild`) as an operator sees its work: the lines in the switch's log, masked
and in order, none lost at a clean stop, and the switch finishing its own lines once the child is gone."""

from __future__ import annotations

import io
import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import structlog
from twisted.internet.task import Clock

from switch.observe import logs
from switch.observe.logchild import LogChild, serve
from tests.cardscan import problems

pytestmark = pytest.mark.timeout(60)

PAN = "4012888888881881"


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def suite_logs() -> Any:
    """Puts the suite's own log set-up (tests/conftest.py) back after, the very objects: loggers cached before hold
    its processor list, which `structlog.testing.capture_logs` changes in place."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture
def logged(tmp_path: Path, suite_logs: None) -> Any:
    """structlog configured as `kswitch run` configures it, into a file."""
    path = tmp_path / "kswitch.log"
    stream = path.open("w", encoding="utf-8")
    clock = Clock()
    writer = logs.configure("json", stream=stream, level="info", call_later=clock.callLater, start_child=LogChild)
    try:
        yield path, writer, clock
    finally:
        writer.close()
        stream.close()


def test_the_child_writes_each_turns_lines_masked_and_in_order_and_a_clean_stop_loses_none(logged):
    path, writer, clock = logged
    child = writer._child
    assert child is not None, "the child did not start"
    log = structlog.get_logger("kswitch.test")
    for index in range(200):
        log.info("api_request", index=index, order_id=f"order-{PAN}" if index % 3 == 0 else f"order-{index}")
    assert [call.getTime() for call in clock.getDelayedCalls()] == [logs.CHILD_BATCH_SECONDS]  # they gather
    clock.advance(logs.CHILD_BATCH_SECONDS)  # then go to the child in one write
    log.warning("last", pan=PAN)
    writer.close()  # waits for the child to write all it was sent
    lines = read(path)
    assert [line.get("index") for line in lines[:200]] == list(range(200))
    assert lines[0]["order_id"] == "order-401288******1881" and lines[1]["order_id"] == "order-1"
    assert lines[-1]["event"] == "last" and lines[-1]["pan"] == "401288******1881"
    assert problems(path.read_text(encoding="utf-8")) == []
    with pytest.raises(ChildProcessError):  # the child has exited and been reaped
        os.waitpid(child.pid, os.WNOHANG)


def test_once_the_child_is_gone_the_switch_finishes_its_lines_itself(logged):
    path, writer, clock = logged
    child = writer._child
    log = structlog.get_logger("kswitch.test")
    log.info("before", pan=PAN)
    clock.advance(logs.CHILD_BATCH_SECONDS)
    os.kill(child.pid, signal.SIGKILL)
    child._process.wait(timeout=30)
    log.info("after", pan=PAN, order_id=f"x{PAN}")
    clock.advance(logs.CHILD_BATCH_SECONDS)
    log.info("later")
    clock.advance(logs.CHILD_BATCH_SECONDS)
    lines = read(path)
    events = [line["event"] for line in lines]
    assert events[-3:] == ["log_child_ended", "after", "later"]
    assert lines[-2]["pan"] == "401288******1881" and lines[-2]["order_id"] == "x401288******1881"
    assert problems(path.read_text(encoding="utf-8")) == []


def test_without_a_file_descriptor_lines_are_finished_in_the_switch(suite_logs):
    stream = io.StringIO()
    writer = logs.configure("json", stream=stream, level="info", start_child=LogChild)
    structlog.get_logger("kswitch.test").info("here", pan=PAN)
    writer.close()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["log_child_unavailable", "here"]
    assert lines[1]["pan"] == "401288******1881"


def test_a_line_cut_off_by_the_switchs_death_is_dropped_not_written_unmasked(tmp_path):
    into_read, into_write = os.pipe()
    out = tmp_path / "out"
    with out.open("wb") as sink:
        os.write(into_write, b'{"event":"whole","pan":"' + PAN.encode() + b'"}\n{"event":"cut","pan":"' + PAN.encode())
        os.close(into_write)
        serve(into_read, sink.fileno())
    os.close(into_read)
    assert [line["event"] for line in read(out)] == ["whole"]
    assert read(out)[0]["pan"] == "401288******1881"
