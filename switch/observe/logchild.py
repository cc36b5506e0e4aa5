"""The log child: a process of the switch's own that finishes its JSON log lines and writes them.

Why: the one line a request writes cost the reactor about 35 µs in place, a ninth of its time per
payment (README, Performance): most of it the Python of rendering the line, scanning it for card
numbers and writing it. With a log child, the reactor only encodes each event as JSON (orjson) and
hands its lines over in one pipe write every `switch.observe.logs.CHILD_BATCH_SECONDS`; the child
scans them, masks any that holds a card number (`switch.observe.logs.safe_line`) and writes them to
the switch's standard error. The JSON that crosses the pipe may hold a card number, as a journal
unit may: it goes between two processes of one installation and is never stored.

The child ends when its input ends: when the switch closes the pipe (`LogChild.close`, which waits
for it) or dies. A line cut off by the switch's death is dropped, never written unfinished. If the
child dies, `send` says so and the switch finishes its lines itself (`switch.observe.logs.LineWriter`).

May use: `switch.observe.logs` (the finishing, shared with the switch's own fallback).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import switch
from switch.observe.logs import safe_line

_READ = 1 << 16
CLOSE_TIMEOUT = 5.0
"""Seconds `LogChild.close` waits for the child to write what it was sent, before it kills it."""


def child_environment() -> dict[str, str]:
    """The switch's environment, with the directory its own ``switch`` package came from first on the
    child's path: ``bin/kswitch`` runs a checkout by putting it on ``sys.path``, which a child does not
    inherit, and a child of the switch must run the same code as the switch."""
    root = str(Path(switch.__file__).resolve().parent.parent)
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([root, path] if path else [root])}


class LogChild:
    """The switch's side: the child started with its output on ``out`` (a file descriptor: the switch's
    standard error), and the pipe to it. Writes block as a write to standard error would."""

    def __init__(self, out: int) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "switch.observe.logchild"], stdin=subprocess.PIPE, stdout=out, stderr=out,
            env=child_environment(), bufsize=0,
        )
        assert self._process.stdin is not None
        self._pipe = self._process.stdin.fileno()
        self.alive = True

    def send(self, data: bytes) -> bool:
        """Hand ``data`` (whole lines) to the child; False once it is gone (nothing more is sent to it)."""
        if not self.alive:
            return False
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._pipe, view):]
        except OSError:  # the child is gone (EPIPE): what it had not written is lost, as in a crash
            self.alive = False
        return self.alive

    def close(self) -> None:
        """End the child's input and wait until it has written everything it was sent."""
        self.alive = False
        assert self._process.stdin is not None
        try:
            self._process.stdin.close()
        except OSError:
            pass
        try:
            self._process.wait(timeout=CLOSE_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    @property
    def pid(self) -> int:
        return self._process.pid


def serve(read: int, write: int) -> None:
    """Finish each whole line read from ``read`` and write it to ``write``, until ``read`` ends."""
    rest = b""
    while chunk := os.read(read, _READ):
        *lines, rest = (rest + chunk).split(b"\n")
        if lines:
            finished = "".join(safe_line(line.decode("utf-8", "backslashreplace")) + "\n" for line in lines)
            data = memoryview(finished.encode("utf-8"))
            while data:
                data = data[os.write(write, data):]


def main() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # the switch ends us: by closing our input
        signal.signal(signum, signal.SIG_IGN)
    serve(sys.stdin.fileno(), sys.stdout.fileno())


if __name__ == "__main__":
    main()
