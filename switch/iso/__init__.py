"""ISO 8583: dialects, framing, MTIs, PCI masking, response codes, translation.

Owns how a domain payment becomes bank messages and how a bank answer is read back
(`translate`, `responses`, `answercheck`), and the wire format (`dialect`, `framing`, `mti`).
May import `switch.domain` (and `switch.observe`, `switch.net`) only.
"""
