"""Network management of a bank link: sign on before carrying traffic, echo when the bank is quiet.

`SignOnAndEcho` is a part of `switch.bank.link.Link` (a mixin): the link decides when a
connection is made or lost; these methods decide whether it may carry traffic and whether
the bank is still there. The annotations below name what they use of the link.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from switch.bank.linkparts import Backoff, LinkOptions, LinkProtocol, LinkState
from switch.iso.dialect import Message
from switch.iso.mti import approved_code, network_request
from switch.observe.metrics import Counter


class SignOnAndEcho:
    options: LinkOptions
    _owner: Any  # the link's `switch.bank.link.LinkOwner`
    _clock: IReactorTime
    _log: Any
    _version: int
    _state: LinkState
    _running: bool
    _protocol: LinkProtocol | None
    _backoff: Backoff
    _echo_timer: IDelayedCall | None
    _echo_failures: int
    _echo_failure_count: Counter
    _last_inbound: float
    _set_state: Callable[[LinkState], None]
    _drop: Callable[[LinkProtocol, str], None]

    def _network(self, kind: str, code: str | None = None) -> Message:
        return network_request(kind, self._version, self._clock.seconds(), code)

    def _sign_on(self, protocol: LinkProtocol) -> None:
        self._set_state(LinkState.SIGNING_ON)
        if not self._running or protocol is not self._protocol:
            return
        self._log.info("link_sign_on_sent")
        answer = self._owner.exchange(self, self._network("sign_on", self.options.sign_on_code), self.options.echo_timeout)
        answer.addCallbacks(self._signed_on, self._sign_on_failed, callbackArgs=(protocol,), errbackArgs=(protocol,))

    def _signed_on(self, response: Message, protocol: LinkProtocol) -> None:
        if protocol is not self._protocol or self._state is not LinkState.SIGNING_ON:
            return
        rc = response.get("39")
        if rc == approved_code(self._version):
            self._log.info("link_signed_on", rc=rc)
            self._become_ready()
        else:
            self._log.warning("link_sign_on_failed", rc=rc, reason="declined")
            self._drop(protocol, f"sign-on declined with response code {rc}")

    def _sign_on_failed(self, failure: Failure, protocol: LinkProtocol) -> None:
        if protocol is not self._protocol or self._state is not LinkState.SIGNING_ON:
            return
        self._log.warning("link_sign_on_failed", reason=failure.getErrorMessage())
        self._drop(protocol, "sign-on unanswered")

    def _become_ready(self) -> None:
        self._backoff.reset()
        self._echo_failures = 0
        self._schedule_echo(self.options.echo_interval)
        self._set_state(LinkState.READY)

    def _schedule_echo(self, delay: float) -> None:
        if self.options.echo_interval > 0:
            self._echo_timer = self._clock.callLater(delay, self._echo_due)

    def _echo_due(self) -> None:
        """An echo goes out once nothing has come *from* the bank for ``echo_interval``.

        Our own writes do not count as traffic: a bank that stopped answering while we
        keep sending would otherwise never be tested, and every request would time out.
        """
        self._echo_timer = None
        protocol = self._protocol
        if self._state is not LinkState.READY or protocol is None:
            return
        idle = self._clock.seconds() - self._last_inbound
        if idle < self.options.echo_interval:
            self._schedule_echo(self.options.echo_interval - idle)
            return
        self._log.debug("link_echo_sent", idle=round(idle, 3))
        answer = self._owner.exchange(self, self._network("echo"), self.options.echo_timeout)
        answer.addCallbacks(self._echo_answered, self._echo_failed, callbackArgs=(protocol,), errbackArgs=(protocol,))

    def _echo_answered(self, response: Message, protocol: LinkProtocol) -> None:
        if protocol is not self._protocol or self._state is not LinkState.READY:
            return
        rc = response.get("39")
        if rc != approved_code(self._version):
            self._echo_missed(protocol, f"answered with response code {rc}")
            return
        self._echo_failures = 0
        self._log.debug("link_echo_ok")
        self._schedule_echo(self.options.echo_interval)

    def _echo_failed(self, failure: Failure, protocol: LinkProtocol) -> None:
        if protocol is not self._protocol or self._state is not LinkState.READY:
            return
        self._echo_missed(protocol, failure.getErrorMessage())

    def _echo_missed(self, protocol: LinkProtocol, reason: str) -> None:
        self._echo_failures += 1
        self._echo_failure_count.inc()
        self._log.warning("link_echo_failed", failures=self._echo_failures, limit=self.options.echo_max_failures, reason=reason)
        if self._echo_failures >= self.options.echo_max_failures:
            self._drop(protocol, f"{self._echo_failures} consecutive echo tests failed")
        else:
            self._schedule_echo(0)
