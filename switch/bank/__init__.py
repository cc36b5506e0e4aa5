"""Talking to one bank: persistent TLS links, pools, the request/response mux, numbering.

Owns `Link` (sign-on, echo, reconnect), `LinkPool`, `Mux` (STAN matching, timeouts) and its match keys,
`Connector` (links + pool + mux of one bank), STAN/RRN allocation and TLS
options. May import `switch.iso`, `switch.domain`, `switch.observe` and `switch.net`.
"""
