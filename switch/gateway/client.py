"""Client library for the kswitch socket API (``specs/socket-api.md``).

Two clients share the request building and answer handling (`switch.gateway.clientcore`):

* `KSwitchClient` for Twisted code: pipelined, every method returns a Deferred.
  It lives in `switch.gateway.twisted_client` and is imported from there on first use,
  so this module itself needs nothing but the standard library.
* `BlockingClient` for plain synchronous Python (scripts, ``kpay``, PHP-style
  request handlers): the ``socket`` module only, one request at a time.

Both raise `KSwitchError` for an ``ok: false`` answer, and its subclass
`KSwitchConnectionError` when the switch could not be reached or the connection
broke; after a broken ``authorize`` the outcome is unknown, so repeat it with the
same ``idempotency_key`` (or ask ``status``) rather than sending a new payment.
"""

from __future__ import annotations

import itertools
import socket
import time
from typing import Any

from switch.gateway.clientcore import (
    DEFAULT_CONNECT,
    MAX_ANSWER_BYTES,
    Answer,
    KSwitchConnectionError,
    KSwitchError,
    Operations,
    answer_fields,
    authorize_fields,
    connection_error,
    decode_answer,
    encode_request,
    lifecycle_fields,
    parse_connect,
)

# KSwitchClient and KSwitchProtocol are loaded on first use (see __getattr__ below).
__all__ = [
    "DEFAULT_CONNECT",
    "Answer",
    "BlockingClient",
    "KSwitchConnectionError",
    "KSwitchError",
    "authorize_fields",
    "lifecycle_fields",
    "parse_connect",
]

class BlockingClient(Operations[Answer]):
    """Synchronous client; connects on first use and says hello when given ``client`` and ``token``.

    After a timeout or a broken connection the socket is closed, and the next
    call connects again (and says hello again). So does a call after the connection
    has been unused for the ``idle_timeout`` the switch announced in its hello answer,
    since the switch has closed it meanwhile.
    """

    def __init__(
        self,
        host: str | None = None,
        port: int | None = None,
        *,
        unix_path: str | None = None,
        client: str | None = None,
        token: str | None = None,
        timeout: float = 60.0,
    ) -> None:
        self._target: tuple[str, int] | str
        if unix_path is not None and host is None and port is None:
            self._target = unix_path
        elif unix_path is None and host is not None and port is not None:
            self._target = (host, port)
        else:
            raise ValueError("give either host and port, or unix_path")
        self._credentials = (client, token) if client is not None and token is not None else None
        self._timeout = timeout
        self._ids = itertools.count(1)
        self._socket: socket.socket | None = None
        self._reader: Any = None
        self._idle_timeout = 0.0
        self._last_used = 0.0

    @classmethod
    def from_description(cls, description: str = DEFAULT_CONNECT, **options: Any) -> BlockingClient:
        target = parse_connect(description)
        if isinstance(target, str):
            return cls(unix_path=target, **options)
        return cls(*target, **options)

    def __enter__(self) -> BlockingClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._socket is not None:
            self._reader.close()
            self._socket.close()
        self._socket = self._reader = None

    def call(self, op: str, **fields: Any) -> Answer:
        """Send any op and wait for its answer fields; raises `KSwitchError`."""
        if self._socket is not None and self._idle_timeout and time.monotonic() - self._last_used >= self._idle_timeout:
            self.close()
        if self._socket is None:
            self._connect()
        return answer_fields(self._exchange(op, fields))

    def _open(self) -> socket.socket:
        if not isinstance(self._target, str):
            return socket.create_connection(self._target, timeout=self._timeout)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self._timeout)
            sock.connect(self._target)
        except OSError:
            sock.close()
            raise
        return sock

    def _connect(self) -> None:
        try:
            sock = self._open()
        except OSError as e:
            message = f"cannot connect to {self._describe()}: {_reason(e)}"
            raise KSwitchConnectionError("connect_failed", message) from None
        self._socket, self._reader = sock, sock.makefile("rb")
        if self._credentials is not None:
            client, token = self._credentials
            try:
                hello = answer_fields(self._exchange("hello", {"client": client, "token": token}))
            except KSwitchError:
                self.close()
                raise
            idle = hello.get("idle_timeout")
            self._idle_timeout = float(idle) if isinstance(idle, int | float) and not isinstance(idle, bool) else 0.0

    def _exchange(self, op: str, fields: dict[str, Any]) -> Answer:
        assert self._socket is not None
        request_id = next(self._ids)
        try:
            self._socket.sendall(encode_request(request_id, op, fields))
            while True:
                line = self._reader.readline(MAX_ANSWER_BYTES + 1)
                if len(line) > MAX_ANSWER_BYTES:
                    message = f"the switch sent an answer over {MAX_ANSWER_BYTES} bytes"
                    raise KSwitchConnectionError("protocol_error", message)
                if not line.endswith(b"\n"):
                    raise KSwitchConnectionError("connection_lost", f"the switch closed the connection during {op}")
                answer = decode_answer(line)
                if answer.get("id") == request_id:
                    self._last_used = time.monotonic()
                    return answer
                error = connection_error(answer)
                if error is not None:
                    raise error
        except TimeoutError:
            self.close()
            message = f"no answer to {op} within {self._timeout:g} s; the outcome is unknown"
            raise KSwitchConnectionError("timeout", message) from None
        except OSError as e:
            self.close()
            message = f"connection to {self._describe()} broke: {_reason(e)}"
            raise KSwitchConnectionError("connection_lost", message) from None
        except KSwitchError:
            self.close()
            raise

    def _describe(self) -> str:
        if isinstance(self._target, str):
            return f"unix:{self._target}"
        host, port = self._target
        return f"tcp:{host}:{port}"


def _reason(error: OSError) -> str:
    return error.strerror or str(error) or type(error).__name__


def __getattr__(name: str) -> Any:
    """Load the Twisted client only when asked for, keeping ``kpay`` free of dependencies."""
    if name in ("KSwitchClient", "KSwitchProtocol"):
        from switch.gateway import twisted_client

        return getattr(twisted_client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
