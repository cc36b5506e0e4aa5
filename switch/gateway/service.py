"""The boundary between the socket API and the rest of the switch.

The API validates, authenticates and answers; everything that talks to banks sits
behind `IPaymentService`, so the protocol can be tested with a fake and the switch
core can change without touching the wire format.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from twisted.internet.defer import Deferred

from switch.domain.answering import Answerable
from switch.domain.model import AuthorizeRequest

TransactionAnswer = Mapping[str, Any]


class IPaymentService(Protocol):
    """What the switch core provides to the socket API.

    Both queries answer a mapping with the transaction fields of the spec
    (``switch.gateway.answers.TRANSACTION_FIELDS``): ``txn_id``, ``status`` (one of
    ``approved``, ``declined``, ``failed``, ``timeout``, ``pending``) and ``reason``
    are required; ``response_code``, ``auth_code``, ``rrn``, ``stan``, ``connector``
    and ``masked_pan`` may be None. Extra keys are passed to the client unchanged,
    so they must be JSON values and must never hold a full PAN or a CVV.

    To refuse a request, raise (or fail the Deferred, or tell the answer target, with) a
    `switch.domain.errors.DomainError`;
    the API answers it with its class's error code (`switch.gateway.errors.from_domain`) and
    its message verbatim. Any other exception is answered as ``internal`` and logged with
    its traceback.
    """

    def authorize_to(self, request: AuthorizeRequest, client: str, answer_to: Answerable[TransactionAnswer]) -> None:
        """Authorize (``capture=False``, 0100) or sell (``capture=True``, 0200) with a bank, and tell
        ``answer_to`` (`callback` or `errback`, once) how it ended.

        An answer target, not a returned Deferred: the request's exchange waits on the payment for as long
        as the bank takes, and with 10,000 payments held a Deferred and its callback entries would cost
        about 0.4 KB each (`switch.domain.answering`).

        The API has already checked that ``client`` may use ``request.merchant_id``
        and that the store exists. Tell only the final outcome (never
        ``pending``), within the bank timeout: the API does not time requests
        out, because an answer it made up could contradict the bank.

        ``request.bank``, when set, forces the connector; an unknown connector is
        ``InvalidRequest(..., field="bank")``. ``request.idempotency_key``,
        when set, must make a repeat with the same key and the same request replay
        the first answer (waiting for it if still in flight), and the same key with
        a different request fail with ``IdempotencyConflict(..., field="idempotency_key")``.
        """
        ...

    def status(self, txn_id: str, merchant_ids: frozenset[str]) -> Deferred[TransactionAnswer]:
        """The current state of a transaction of one of ``merchant_ids``.

        The answer must include ``merchant_id``, ``store_id``, ``order_id``, ``amount``
        (int) and ``currency`` (alpha code). A transaction that does not exist, or
        belongs to another merchant, is ``NotFound(...)`` alike, so a
        client cannot probe for other merchants' transactions.
        """
        ...

    def status_by_order(self, merchant_id: str, order_id: str) -> Deferred[TransactionAnswer]:
        """The latest payment (not capture/void/refund) of an order; ``NotFound`` when none.

        The API has already checked that the client may use ``merchant_id``.
        """
        ...

    def answer_undeliverable(self, txn_id: str, client: str) -> None:
        """The authorize answer for ``txn_id`` could not be written: the client had gone.

        Acquirers commonly reverse such a transaction (the merchant never learnt
        the outcome), unless the client comes back with the same idempotency key;
        the policy is the service's. Called at most once per answer, best effort:
        bytes the kernel accepted before the connection broke cannot be detected.
        """
        ...
