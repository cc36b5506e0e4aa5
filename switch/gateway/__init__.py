"""The gateway-facing socket API: JSON lines over TCP, TLS or a Unix socket.

See ``specs/socket-api.md`` for the wire protocol. To serve it::

    factory = protocol.ApiFactory(service, config.ApiConfig.build(clients, merchants), reactor)
    ports = yield listen.listen(reactor, ["tcp:7583:interface=127.0.0.1"], factory)

May import `switch.engine`, `switch.domain`, `switch.observe` and `switch.net`; never a bank, the ISO
layer or the journal. The package itself imports nothing, so the Python client (`client`, standard library
only) and `kpay` run with any interpreter.
"""
