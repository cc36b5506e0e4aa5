"""Microseconds per ISO 8583 encode and decode, compiled codec against pyiso8583, per shipped dialect.

What one authorization costs the reactor in codec work: one encode of the request (about 18
fields) and one decode of the answer (about 20 fields).  ``fast`` is `Dialect.encode`/`decode`
(the compiled codec, pyiso8583 when it bails out), ``pyiso`` is `Dialect._slow_encode`/
`_slow_decode` (pyiso8583 alone, the path before the codec).  Best of --repeat runs; figures only:

    PYTHONPATH=$PWD .tox/py3/bin/python bench/codec.py [--number 20000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import timeit
from typing import Callable

from switch.iso.dialect import SPECS_DIR, load_dialect
from switch.tools.bench.link import authorization


def microseconds(call: Callable[[], object], number: int, repeat: int) -> float:
    return min(timeit.repeat(call, number=number, repeat=repeat)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20000, help="calls per timing run")
    parser.add_argument("--repeat", type=int, default=5, help="timing runs; the best is printed")
    args = parser.parse_args()
    print(f"{'dialect':<12} {'fields':>9} {'encode pyiso':>13} {'encode fast':>12} {'decode pyiso':>13} "
          f"{'decode fast':>12}   (µs per message)")
    for path in sorted(SPECS_DIR.glob("*.toml")):
        d = load_dialect(path.stem)
        request, answer = authorization(d)
        raw = d.encode(request)
        answer_raw = d.encode(answer)
        figures = [
            microseconds(lambda: d._slow_encode(request), args.number, args.repeat),
            microseconds(lambda: d.encode(request), args.number, args.repeat),
            microseconds(lambda: d._slow_decode(answer_raw), args.number, args.repeat),
            microseconds(lambda: d.decode(answer_raw), args.number, args.repeat),
        ]
        fields = f"{len(request) - 1}/{len(answer) - 1}"
        enc_slow, enc_fast, dec_slow, dec_fast = figures
        print(f"{d.name:<12} {fields:>9} {enc_slow:>13.2f} {enc_fast:>12.2f} {dec_slow:>13.2f} {dec_fast:>12.2f}"
              f"   ({len(raw)} / {len(answer_raw)} bytes)")


if __name__ == "__main__":
    main()
