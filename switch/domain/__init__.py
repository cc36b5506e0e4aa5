"""The payment domain: what a payment is, independent of how it arrives or leaves.

Owns the canonical payment model (requests and instruments), money and currencies, card
checks (Luhn, expiry, schemes, card-number recognition), statuses and domain errors, and the shape
of whoever waits on an outcome (`answering`).
May import nothing else of kswitch: no JSON, no ISO 8583, no Twisted.
"""
