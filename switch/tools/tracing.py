"""Link traces: what went over a link, one masked JSON line per frame, and a reader for people.

An integration engineer debugging a bank link needs the conversation, not the
bytes, and a trace is a file that gets mailed around: so a record holds the
decoded fields already masked (`switch.iso.masking`) or the reason the frame did not
decode, and never the raw hex, which would carry the PAN.

Writing happens on a thread, one batch at a time in order, so a slow disk never
stalls the reactor; `LinkTrace.flush` tells when everything recorded is on disk.

``isotrace FILE [--follow]`` (`main`) prints a trace as a two-column conversation:
what the tracing side sent (→) on the left, what it received (←) on the right.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Iterable, Mapping

import structlog
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import LoopingCall, react
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure

from switch.iso.dialect import Dialect, Message
from switch.iso.masking import mask_message

DIRECTIONS = ("in", "out")

log = structlog.get_logger("kswitch.tracing")


def trace_record(
    link: str, direction: str, framing: str, payload: bytes, decoded: Message | Exception,
    dialect: Dialect, now: float, tpdu: bytes | None = None,
) -> dict[str, Any]:
    """One trace record; ``decoded`` is the decoded message or the error that prevented it."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction: got {direction!r}; expected 'in' or 'out'")
    record: dict[str, Any] = {
        "ts": datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "link": link,
        "dir": direction,
        "framing": framing,
        "length": len(payload),
    }
    if tpdu is not None:
        record["tpdu"] = tpdu.hex()
    if isinstance(decoded, Exception):
        record["error"] = str(decoded)
        return record
    masked = mask_message(decoded, dialect)
    record["mti"] = masked.pop("t", None)
    record["fields"] = {n: masked[n] for n in sorted(masked, key=lambda n: int(n) if n.isdigit() else 0)}
    return record


class LinkTrace:
    """Appends trace records of one link to a file without blocking the reactor."""

    def __init__(self, path: Path | str, link: str, dialect: Dialect, framing: str, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.path = Path(path)
        self.link = link
        self.dialect = dialect
        self.framing = framing
        self._reactor = reactor
        self._pending: list[str] = []
        self._writing: Deferred | None = None
        self._waiters: list[Deferred] = []
        self._file: IO[str] | None = None

    def record(self, direction: str, payload: bytes, decoded: Message | Exception, tpdu: bytes | None = None) -> None:
        """Trace one frame's payload; ``direction`` is "in" (received) or "out" (sent)."""
        entry = trace_record(
            self.link, direction, self.framing, payload, decoded, self.dialect, self._reactor.seconds(), tpdu
        )
        self._pending.append(json.dumps(entry) + "\n")
        self._write_pending()

    def flush(self) -> Deferred:
        """Fires once every record made so far has been written (or failed to be, logged)."""
        if self._writing is None and not self._pending:
            return succeed(None)
        waiter: Deferred = Deferred()
        self._waiters.append(waiter)
        return waiter

    def close(self) -> Deferred:
        """Flush, then close the file."""
        return self.flush().addCallback(lambda _: self._close_file())

    def _write_pending(self) -> None:
        if self._writing is not None or not self._pending:
            return
        lines, self._pending = self._pending, []
        pool = self._reactor.getThreadPool()
        self._writing = deferToThreadPool(self._reactor, pool, self._write, lines)
        self._writing.addBoth(self._written)

    def _write(self, lines: list[str]) -> None:
        if self._file is None:
            self._file = self.path.open("a", encoding="utf-8")
        self._file.writelines(lines)
        self._file.flush()

    def _written(self, result: None | Failure) -> None:
        if isinstance(result, Failure):
            log.error("trace_write_failed", link=self.link, path=str(self.path), reason=result.getErrorMessage())
        self._writing = None
        self._write_pending()
        if self._writing is None:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                waiter.callback(None)

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


# Key fields shown in a conversation line, in this order, with their labels.
_SHOWN = (("11", "stan"), ("39", "rc"), ("38", "auth"), ("2", "pan"), ("3", "pc"), ("4", "amt"), ("49", "cur"),
          ("37", "rrn"), ("41", "tid"), ("70", "nmc"), ("24", "fc"), ("90", "orig"), ("56", "orig"))
COLUMN = 58
FOLLOW_INTERVAL = 0.25


def render(record: Mapping[str, Any]) -> str:
    """One line of conversation: sent frames on the left (→), received ones on the right (←)."""
    ts = str(record.get("ts", ""))
    clock = ts[11:23] if len(ts) >= 23 else ts
    if "error" in record:
        summary = f"undecodable {record.get('length', '?')} bytes: {record['error']}"
    else:
        fields = record.get("fields", {})
        shown = [f"{label} {fields[n]}" for n, label in _SHOWN if n in fields]
        summary = " ".join([str(record.get("mti")), *shown])
    prefix = f"{clock} {record.get('link', '?'):<10} "
    if record.get("dir") == "out":
        return f"{prefix}→ {summary}"
    return f"{prefix}{'':<{COLUMN}}← {summary}"


class TraceReader:
    """Turns chunks of a trace file into printed lines, keeping a partly written last line."""

    def __init__(self, out: IO[str], err: IO[str]) -> None:
        self.out = out
        self.err = err
        self.line_number = 0
        self.unreadable = 0
        self._partial = ""
        self._day = ""

    def feed(self, text: str) -> None:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        self.show(lines)

    def show(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.line_number += 1
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("expected a JSON object")
            except ValueError as e:
                self.unreadable += 1
                print(f"isotrace: line {self.line_number}: not a trace record ({e})", file=self.err)
                continue
            day = str(record.get("ts", ""))[:10]
            if day != self._day:
                self._day = day
                print(f"── {day} ──", file=self.out)
            print(render(record), file=self.out)
        self.out.flush()

    def finish(self) -> None:
        if self._partial:
            self.show([self._partial])
            self._partial = ""


def _follow(stream: IO[str], reader: TraceReader, interval: float) -> Deferred:
    """Print what is appended to the trace until interrupted, polling without blocking."""
    return LoopingCall(lambda: reader.feed(stream.read())).start(interval)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="isotrace", description="Print a kswitch link trace as a two-column conversation (sent →, received ←)."
    )
    parser.add_argument("file", type=Path, help="trace file written by a link or by banksim --trace")
    parser.add_argument("--follow", "-f", action="store_true", help="keep printing records as they are appended")
    args = parser.parse_args(argv)
    reader = TraceReader(sys.stdout, sys.stderr)
    try:
        stream = args.file.open(encoding="utf-8", errors="replace")
    except OSError as e:
        print(f"isotrace: cannot read {args.file}: {e.strerror}", file=sys.stderr)
        return 1
    with stream:
        try:
            reader.feed(stream.read())
            if args.follow:
                react(lambda _reactor: _follow(stream, reader, FOLLOW_INTERVAL))
            reader.finish()
        except (BrokenPipeError, KeyboardInterrupt):
            return 0
    return 1 if reader.unreadable else 0
