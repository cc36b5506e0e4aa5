"""Tools tests reuse the socket API test server (a fake payment service on port 0)."""

from tests.gateway.conftest import server  # noqa: F401
