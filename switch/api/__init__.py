"""The gateway-facing socket API: JSON lines over TCP, TLS or a Unix socket.

See ``specs/socket-api.md`` for the wire protocol. To serve it::

    factory = ApiFactory(service, ApiConfig.build(clients, merchants), reactor)
    ports = yield listen(reactor, ["tcp:7583:interface=127.0.0.1"], factory)
"""

from switch.api.answers import STATUSES, TRANSACTION_FIELDS
from switch.api.config import ApiConfig, ApiLimits, ClientConfig, MerchantConfig, StoreConfig
from switch.api.errors import ApiError, ErrorCode
from switch.api.listen import ListenError, listen, server_endpoint
from switch.api.model import AuthorizeRequest, CardInstrument, HelloRequest, PingRequest, StatusRequest
from switch.api.ops import PROTOCOL_VERSION, OpContext, Operation, OperationRegistry, default_operations
from switch.api.protocol import ApiFactory, ApiProtocol
from switch.api.service import IPaymentService, TransactionAnswer

__all__ = [
    "PROTOCOL_VERSION",
    "STATUSES",
    "TRANSACTION_FIELDS",
    "ApiConfig",
    "ApiError",
    "ApiFactory",
    "ApiLimits",
    "ApiProtocol",
    "AuthorizeRequest",
    "CardInstrument",
    "ClientConfig",
    "ErrorCode",
    "HelloRequest",
    "IPaymentService",
    "ListenError",
    "MerchantConfig",
    "OpContext",
    "Operation",
    "OperationRegistry",
    "PingRequest",
    "StatusRequest",
    "StoreConfig",
    "TransactionAnswer",
    "default_operations",
    "listen",
    "server_endpoint",
]
