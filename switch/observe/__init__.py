"""Observability every layer shares: Prometheus metric bundles and structlog set-up.

The lowest kswitch package next to `switch.domain`: anything may import it; it imports
only `switch.domain` (card-number redaction in logs).
"""
