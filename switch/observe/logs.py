"""Structured logging set-up: JSON lines in production, a readable console on a terminal.

Every component logs through ``structlog.get_logger(...)`` with an event name and
key/value pairs; card data should already be masked (see `switch.iso.masking`) before it
reaches a log call. Because log calls also carry strings from outside (request ids,
field names, order ids, hello names, bank fields), rendering masks every card number
`switch.domain.cardcheck.card_numbers` finds in any key or value, whatever its type
(`redact_card_numbers`), and never raises: a log call must not be able to break the
request that made it (a lone surrogate in a request id, an object whose ``__str__``
fails).
"""

from __future__ import annotations

import datetime
import functools
import json
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import IO, Any, Literal, Protocol

import orjson
import structlog

from switch.domain.cardcheck import SCAN_MIN_DIGITS, card_numbers, may_hold_card_number, redact_pans

LogFormat = Literal["auto", "json", "console"]
_NATIVE = (bool, type(None), datetime.date, datetime.time, uuid.UUID)
_MAX_DEPTH = 16
_SMALLEST_SCANNED = 10 ** (SCAN_MIN_DIGITS - 1)


class Child(Protocol):
    """A process that finishes raw lines and writes them (`switch.observe.logchild.LogChild`)."""

    def send(self, data: bytes) -> bool: ...

    def close(self) -> None: ...


CHILD_BATCH_SECONDS = 0.02
"""How long the reactor's lines gather before they go to the log child in one write: each write wakes the child,
and one a reactor turn cost it about twice the CPU a line (12 µs against 6, perf_ratio's closed loop)."""


def configure(
    fmt: LogFormat = "auto", stream: IO[str] | None = None, level: str = "info",
    call_later: Callable[[float, Callable[[], None]], object] | None = None,
    start_child: Callable[[int], Child] | None = None,
) -> LineWriter:
    """Configure structlog once for the whole process.

    JSON lines are rendered with orjson and loggers are cached on first use: at a few
    log events per payment, logging is otherwise the largest CPU cost on the reactor.
    With ``call_later`` (the reactor's ``callLater``), lines are written once per reactor
    turn (`LineWriter`); `LineWriter.close` writes what is left.

    With ``start_child`` (`switch.observe.logchild.LogChild`, given the stream's file descriptor), JSON
    lines are only encoded here (`raw_processors`) and a child process finishes and writes them: the
    card-number scan and the write leave the reactor. The reactor's lines then go to the child every
    `CHILD_BATCH_SECONDS`. If the child cannot start, or the stream has no file descriptor, lines are
    finished here as without one.
    """
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    child = _started(start_child, stream) if start_child is not None and fmt == "json" else None
    call_soon = None
    if call_later is not None:
        delay = CHILD_BATCH_SECONDS if child is not None else 0.0
        call_soon = functools.partial(call_later, delay)
    writer = LineWriter(stream, call_soon, child)
    structlog.configure(
        processors=raw_processors() if child is not None else processors(fmt, colors=stream.isatty()),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=lambda *_: writer,
        cache_logger_on_first_use=True,
    )
    return writer


def _started(start_child: Callable[[int], Child], stream: IO[str]) -> Child | None:
    try:
        out = stream.fileno()
        stream.flush()
        return start_child(out)
    except (OSError, ValueError) as e:  # no descriptor (a StringIO), or no process to start: lines are finished here
        stream.write(_json({"event": "log_child_unavailable", "level": "warning", "error": _text(e)}) + "\n")
        return None


class LineWriter:
    """Writes rendered lines to a stream; lines logged on the configuring (reactor) thread wait for the
    end of the reactor's turn and go out in one write.

    Why: each write and flush is a system call that gives up the GIL, and on a busy switch the journal
    writer takes it meanwhile, so a line written at once cost the reactor about 47 µs a request. A line
    waits at most one turn of the reactor; a process killed outright loses at most that turn's lines
    (the journal, not the log, is the record of payments). Lines from other threads, and every line
    once `close` ran or without ``call_soon``, are written at once, after any that wait.

    With a ``child``, the lines are raw (`raw_processors`) and go to the child in that one write; once
    the child is gone (it died, or `close` ended it), they are finished here (`safe_line`).
    """

    def __init__(self, stream: IO[str], call_soon: Callable[[Callable[[], None]], object] | None,
                 child: Child | None = None) -> None:
        self._stream = stream
        self._call_soon = call_soon
        self._thread = threading.get_ident()
        self._lock = threading.Lock()
        self._waiting: list[str] = []
        self._child = child
        self._raw = child is not None

    def msg(self, message: str) -> None:
        with self._lock:
            self._waiting.append(message)
            if self._call_soon is not None and threading.get_ident() == self._thread:
                if len(self._waiting) == 1:
                    self._call_soon(self.flush)
                return
            self._write()

    log = debug = info = warning = warn = error = critical = exception = fatal = failure = err = msg

    def flush(self) -> None:
        with self._lock:
            self._write()

    def close(self) -> None:
        """Write what waits and end the child, once it has written everything; from now on every line is
        written at once, here (the reactor has stopped)."""
        with self._lock:
            self._call_soon = None
            self._write()
            if self._child is not None:
                self._child.close()
                self._child = None

    def _write(self) -> None:  # under _lock
        if not self._waiting:
            return
        lines = self._waiting
        self._waiting = []
        if self._child is not None:
            if self._child.send("".join(line + "\n" for line in lines).encode("utf-8", "backslashreplace")):
                return
            self._child = None
            lines.insert(0, _json({"event": "log_child_ended", "level": "error",
                                   "detail": "log lines are finished by the switch itself from now on"}))
        text = "".join((safe_line(line) if self._raw else line) + "\n" for line in lines)
        self._stream.write(text)
        self._stream.flush()


def failed(logger: Any, event: str, failure: Any) -> None:
    """A background task's Twisted ``Failure`` as one error line: its message and where it came from.
    (structlog's loggers have no ``failure`` method, unlike Twisted's.)"""
    logger.error(event, error=failure.getErrorMessage(), traceback=failure.getTraceback())


def processors(fmt: Literal["json", "console"], colors: bool = False) -> list[structlog.typing.Processor]:
    """The processor chain `configure` installs, ending in the renderer for ``fmt``."""
    renderer: structlog.typing.Processor
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=colors)
    else:
        renderer = structlog.processors.JSONRenderer(serializer=_json)
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _SafeRenderer(renderer),
    ]


def raw_processors() -> list[structlog.typing.Processor]:
    """The chain when a log child finishes the lines: the event as one JSON line, its card numbers
    still in it (`safe_line` masks them in the child). Why: on the reactor this is the line's
    encoding alone, without the scan of its text, the second rendering of a line that holds a card
    number, or the timestamp's datetime."""
    return [structlog.processors.add_log_level, _UtcStamp(), structlog.processors.format_exc_info, _raw_line]


def safe_line(line: str) -> str:
    """A raw line (`raw_processors`) as it may be written: itself when it holds no card number, else
    rendered again from its event with every card number masked, as `_SafeRenderer` renders a line.

    Every key and value is in the line whole, between quotes or as a number, so a card number the
    event held is one the line holds."""
    if next(card_numbers(line), None) is None:
        return line
    try:
        event = json.loads(line)
    except ValueError:  # not a line the switch made: masked as text
        return redact_pans(line)
    if not isinstance(event, dict):
        return redact_pans(line)
    return _json(redact_card_numbers(None, "", event))


class _UtcStamp:
    """The event's time in ISO 8601 UTC with microseconds, its date and second formatted once a second."""

    def __init__(self) -> None:
        self._second: tuple[int, str] = (-1, "")

    def __call__(self, _logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
        now = time.time()
        second, prefix = self._second
        if int(now) != second:  # one tuple: a thread never pairs another second's text with its own
            second = int(now)
            prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = (second, prefix)
        event["timestamp"] = f"{prefix}.{int((now - second) * 1_000_000):06d}Z"
        return event


def _raw_line(_logger: Any, _method: str, event: dict[str, Any]) -> str:
    try:
        return _json(event)
    except Exception as e:
        return _unrenderable(event, e)


def redact_card_numbers(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: every key and value with a card number in it masked (first six, last four).

    Numbers become strings when masked (a masked number is no JSON number); values of
    types the renderer does not know are turned into text first, so nothing escapes
    the scan through ``str()`` at render time.
    """
    return {_redact_key(key): _redact(value, 0) for key, value in event.items()}


def _redact_key(key: Any) -> Any:
    if isinstance(key, str):
        return redact_pans(key) if may_hold_card_number(key) else key
    return _redact(key, _MAX_DEPTH)


def _redact(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return redact_pans(value) if may_hold_card_number(value) else value
    if isinstance(value, _NATIVE):
        return value
    if isinstance(value, int | float):
        if -_SMALLEST_SCANNED < value < _SMALLEST_SCANNED:
            return value
        text = str(value)
        masked = redact_pans(text)
        return value if masked is text else masked
    if depth < _MAX_DEPTH:
        if isinstance(value, dict):
            return {_redact_key(key): _redact(item, depth + 1) for key, item in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [_redact(item, depth + 1) for item in value]
    return redact_pans(_text(value))


def _text(value: object) -> str:
    try:
        return str(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"


class _SafeRenderer:
    """Wraps the renderer: every event becomes one writable line with card numbers masked.

    The rendered line is checked first with the scan `redact_card_numbers` masks by: every
    key and value is in the line whole (between quotes, or a number), so a card number the
    event holds is one the line holds. Only a line that holds one is rendered again from a
    masked copy of the event; a line whose long digit runs all fail Luhn (an order id with
    a timestamp in it) is rendered once. Whatever the renderer fails on still becomes a line.
    """

    def __init__(self, renderer: structlog.typing.Processor) -> None:
        self._renderer = renderer

    def __call__(self, logger: Any, method: str, event: dict[str, Any]) -> str:
        text = self._render(logger, method, dict(event))  # a copy: the console renderer pops keys
        if next(card_numbers(text), None) is not None:
            text = self._render(logger, method, redact_card_numbers(logger, method, event))
        # A lone surrogate cannot be written to a UTF-8 stream: escape it instead.
        return text.encode("utf-8", "backslashreplace").decode("utf-8")

    def _render(self, logger: Any, method: str, event: dict[str, Any]) -> str:
        try:
            rendered = self._renderer(logger, method, event)
            return rendered if isinstance(rendered, str) else _text(rendered)
        except Exception as e:
            return _unrenderable(event, e)


def _unrenderable(event: dict[str, Any], error: Exception) -> str:
    """A line for an event the renderer failed on: every key and value as text."""
    fields = {_text(key): _text(value) for key, value in event.items()}
    return json.dumps({**fields, "log_render_error": type(error).__name__}, ensure_ascii=True)


def _json(event: dict[str, Any], **_: Any) -> str:
    try:
        return orjson.dumps(event, default=_text, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # lone surrogates, integers beyond 64 bits: the standard library escapes them
        return json.dumps(event, default=_text, ensure_ascii=True)
