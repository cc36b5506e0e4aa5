"""Tools around the switch: the bank simulator, message decoder, link traces, `kpay`.

They use the public parts of the other packages only (`switch.domain`, `switch.iso`,
`switch.observe`, the gateway's Python clients), and nothing of the switch imports them:
`kswitch run` starts simulators as separate processes (`bin/banksim`).
"""
