"""Log lines as an operator reads them: card numbers masked wherever they arrive, and a log
call never raises, whatever strange value it is handed."""

from __future__ import annotations

import io
import json
import threading

import pytest
import structlog
from twisted.internet.task import Clock

from switch.observe import logs
from tests.cardscan import problems

PAN = "4012888888881881"


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


def render(fmt: str, **fields: object) -> str:
    """The line as written: rendered here (json, console), or encoded raw and finished as the log
    child finishes it (child)."""
    stream = io.StringIO()
    chain = logs.raw_processors() if fmt == "child" else logs.processors(fmt)  # type: ignore[arg-type]
    logger = structlog.wrap_logger(structlog.PrintLogger(stream), processors=chain)
    logger.info("event", **fields)
    line = stream.getvalue()
    return logs.safe_line(line.rstrip("\n")) + "\n" if fmt == "child" else line


HOSTILE = {
    "request_id": int(PAN),
    "float_id": float(PAN),
    "client_name": "4012 8888 8888 1881",
    "order_id": "order-4012-8888-8888-1881",
    "bank_fields": {"2": PAN, 48: f"order:{PAN}", PAN: "as a key"},
    "ids": (PAN, [PAN]),
    "raw": PAN.encode(),
    "surrogate": "\ud800 lone",
    "unprintable": Unprintable(),
}


@pytest.mark.parametrize("fmt", ["json", "console", "child"])
def test_card_numbers_are_masked_in_any_field_of_any_type(fmt):
    line = render(fmt, **HOSTILE)
    assert problems(line) == []
    assert "401288******1881" in line and "4012 88** **** 1881" in line
    line.encode("utf-8")  # writable to any UTF-8 stream


@pytest.mark.parametrize("fmt", ["json", "child"])
def test_json_lines_stay_json_with_masked_numbers_as_strings(fmt):
    event = json.loads(render(fmt, **HOSTILE))
    assert event["request_id"] == "401288******1881"
    assert event["float_id"] == "401288******1881.0"
    assert event["bank_fields"] == {"2": "401288******1881", "48": "order:401288******1881", "401288******1881": "as a key"}
    assert event["surrogate"] == "\ud800 lone"
    assert event["unprintable"] == "<unprintable Unprintable>"


@pytest.mark.parametrize("fmt", ["json", "child"])
def test_ordinary_numbers_are_left_alone(fmt):
    event = json.loads(render(fmt, amount=1250, rrn="000000000042", field_90="0" * 42, txn_id="01JDXYZ"))
    assert (event["amount"], event["rrn"], event["field_90"], event["txn_id"]) == (1250, "000000000042", "0" * 42, "01JDXYZ")


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def test_lines_logged_on_the_reactor_thread_go_out_at_the_end_of_its_turn_in_one_write():
    clock, stream = Clock(), CountingStream()
    writer = logs.LineWriter(stream, lambda f: clock.callLater(0, f))
    writer.info('{"event": "one"}')
    writer.warning('{"event": "two"}')
    assert stream.getvalue() == "" and len(clock.getDelayedCalls()) == 1
    other = threading.Thread(target=writer.error, args=('{"event": "from the writer thread"}',))
    other.start()
    other.join(timeout=10)
    assert stream.getvalue().splitlines() == ['{"event": "one"}', '{"event": "two"}', '{"event": "from the writer thread"}']
    assert stream.writes == 1
    writer.info('{"event": "three"}')
    clock.advance(0)  # the scheduled turn-end write finds one line
    clock.advance(0)
    assert stream.getvalue().splitlines()[-1] == '{"event": "three"}' and stream.writes == 2
    writer.info('{"event": "four"}')
    writer.close()  # the reactor stopped: what waits is written, later lines at once
    writer.info('{"event": "five"}')
    assert stream.getvalue().splitlines()[-2:] == ['{"event": "four"}', '{"event": "five"}']
    clock.advance(0)  # the turn-end write scheduled before the stop finds nothing left
    assert stream.getvalue().count('"four"') == 1


def test_every_log_call_in_the_switch_names_a_method_its_logger_has() -> None:
    """The switch's loggers are structlog's filtering bound loggers (`logs.configure`): a call to a method they
    lack (Twisted's ``log.failure``, say) raises where a failure was to be logged, inside an errback, so the
    line never appears and the Deferred's error goes unhandled. Read from the source: those calls run only
    when something has gone wrong."""
    import re
    from pathlib import Path

    import switch

    bound = structlog.make_filtering_bound_logger(20)
    root = Path(switch.__file__).parent
    structlogged = [path for path in root.rglob("*.py")  # a module's own logger, or one imported as ``log``
                    if re.search(r"^log = structlog\.get_logger|^from switch\S* import .*\blog\b", path.read_text(), re.M)]
    calls = {
        f"{path.relative_to(root)}:{number}": name
        for path in structlogged
        for number, line in enumerate(path.read_text().splitlines(), 1)
        for name in re.findall(r"\blog\.(\w+)\(", line)
    }
    assert calls, "the scan found no log calls at all"
    assert {where: name for where, name in calls.items() if not hasattr(bound, name)} == {}
