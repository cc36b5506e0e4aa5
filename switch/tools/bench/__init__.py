"""Benchmarks (not tests): load on a running switch's socket API (`api`, ``kswitch-bench``), the
journal's durable write rate (`journal`, ``kswitch-bench-journal``) and one bank link with the
codec (`link`, ``kswitch-bench-link``).  Installed as console scripts and run from a checkout as
``bin/bench``, ``bin/bench-journal`` and ``bin/bench-link``; they use the switch's public parts only.
"""
