"""Observability every layer shares: Prometheus metric bundles, structlog set-up and the log child.

The lowest kswitch package next to `switch.domain`: anything may import it; it imports
only `switch.domain` (card-number redaction in logs). `logchild` also finds the directory
the `switch` package came from, to start its child (and the journal's writer process) on it.
"""
