"""The transaction engine: payments, lifecycle operations, confirmations, SAF, recovery.

Owns the money-safety rules (journal before send, one final state, reversal on
uncertainty), routing, idempotency, notifications of late outcomes and start-up
recovery. May import `switch.bank`, `switch.iso`, `switch.journal`, `switch.domain`,
`switch.observe` and the `connectors` plugins; never the gateway.
"""
