"""Tools around the switch: the bank simulator, message decoder, link traces, `kpay`.

They use the public parts of the other packages (the gateway client, the ISO codec)
and nothing imports them except tests and `bin/` scripts.
"""
