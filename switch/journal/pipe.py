"""The switch's end of the pipe its journal writer process reads units from.

Why not the process transport's stdin: Twisted queues each write there, registers the pipe with epoll
for writing, writes it on the reactor's next turn, unregisters it, and (it watches an idle stdin for
readability, to notice the child going) registers it again for reading. That is four ``epoll_ctl``
calls and one more turn of the reactor per write, and a payment makes two writes: under strace in the
open loop, 8 of a payment's 12 ``epoll_ctl`` calls were this pipe's. Here a write goes into the pipe
at once when nothing waits before it, and the reactor watches the pipe only while the kernel's buffer
is full. The child going is seen as before, by its exit (``ProcessProtocol.processEnded``).

It may use the standard library and Twisted's interfaces, nothing of the switch.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.interfaces import IWriteDescriptor
from zope.interface import implementer


@implementer(IWriteDescriptor)
class PipeOut:
    """A non-blocking pipe written in order: at once while it takes everything, through the reactor after."""

    def __init__(self, reactor: Any, fd: int) -> None:
        os.set_blocking(fd, False)
        self._reactor = reactor
        self._fd = fd
        self._queued = bytearray()
        """What the pipe did not take yet, in order; while it holds anything the reactor watches the pipe."""
        self._closing = False

    def write(self, data: bytes) -> None:
        """Write ``data`` after whatever is queued; dropped once the pipe is closed or broken (the child
        that would read it is gone, and its exit says so)."""
        if self._fd < 0 or self._closing:
            return
        if not self._queued:
            try:
                written = os.write(self._fd, data)
            except BlockingIOError:
                written = 0
            except OSError:
                self.abort()
                return
            if written == len(data):
                return
            data = memoryview(data)[written:]
            self._reactor.addWriter(self)
        self._queued += data

    def close(self) -> None:
        """Close once what is queued is written: the child reads it all, then end of file."""
        if not self._queued:
            self._close_now()
        else:
            self._closing = True

    def abort(self) -> None:
        """Close now, dropping what is queued (the child is gone)."""
        self._queued.clear()
        self._close_now()

    def _close_now(self) -> None:
        if self._fd < 0:
            return
        self._reactor.removeWriter(self)
        os.close(self._fd)
        self._fd = -1

    # -- IWriteDescriptor: called by the reactor while something is queued -----------------------

    def doWrite(self) -> None:
        try:
            written = os.write(self._fd, self._queued)
        except BlockingIOError:
            return
        except OSError:
            self.abort()
            return
        del self._queued[:written]
        if not self._queued:
            self._reactor.removeWriter(self)
            if self._closing:
                self._close_now()

    def fileno(self) -> int:
        return self._fd

    def connectionLost(self, reason: Any) -> None:
        self.abort()

    def logPrefix(self) -> str:
        return "journal-writer-pipe"
