"""Socket plumbing the switch's protocols share, on Twisted: how a reactor turn's writes reach the kernel, and
that no write waits for Nagle's algorithm.

A layer of its own at the bottom, beside `switch.observe`: the socket API (`switch.gateway`) and the bank
links (`switch.iso.framing`) both write through it, and neither may import the other's layer. It may use
the standard library and Twisted, nothing of the switch.
"""
