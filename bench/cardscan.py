"""Microseconds per card-number scan, on the texts one authorization has scanned.

The switch looks for card numbers in every string from outside before it logs or journals it
(`switch.domain.cardcheck`): the rendered ``api_request`` log line, each masked ISO message as the
journal stores it (JSON), and the order id. perf_ratio's order ids hold a 19-digit timestamp, as
many shops' do. Best of --repeat runs; figures only, run it in two trees to compare:

    PYTHONPATH=$PWD .tox/py3/bin/python bench/cardscan.py [--number 20000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import timeit

import orjson

from switch.domain.cardcheck import card_numbers, may_hold_card_number, redact_pans
from switch.iso.dialect import load_dialect
from switch.iso.masking import mask_message
from switch.observe import logs
from switch.tools.bench.link import authorization

ORDER_ID = "p-41234-1764553127123456789-42"


def log_line() -> str:
    """An ``api_request`` line as the JSON renderer writes it (every processor but the scan itself)."""
    event = {
        "request_id": 4242, "op": "authorize", "status": "approved", "client": "perf", "merchant": "M1",
        "txn_id": "01KB9Q7T9ABCDEF0123456789X", "response_code": "00", "connector": "relay",
        "peer": "127.0.0.1:45678", "duration_ms": 12.345, "merchant_id": "M1", "store_id": "S1",
        "order_id": ORDER_ID, "amount": 1, "currency": "USD", "pan": "411111******1111", "event": "api_request",
    }
    for processor in logs.processors("json")[:-1]:
        event = processor(None, "info", event)
    return orjson.dumps(event).decode()


def texts() -> dict[str, str]:
    request, approval = authorization(load_dialect("iso87ascii"))
    return {
        "log line": log_line(),
        "request as JSON": orjson.dumps(mask_message(request)).decode(),
        "answer as JSON": orjson.dumps(mask_message(approval)).decode(),
        "order id": ORDER_ID,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20000, help="calls per timing run")
    parser.add_argument("--repeat", type=int, default=5, help="timing runs; the best is printed")
    args = parser.parse_args()
    print(f"{'text':<16} {'chars':>6} {'may hold':>9} {'card numbers':>13} {'redact':>8}  (µs per call)")
    for name, text in texts().items():
        timings = [
            min(timeit.repeat(call, number=args.number, repeat=args.repeat)) / args.number * 1e6
            for call in (lambda: may_hold_card_number(text), lambda: list(card_numbers(text)),
                         lambda: redact_pans(text))
        ]
        print(f"{name:<16} {len(text):>6} {timings[0]:>9.2f} {timings[1]:>13.2f} {timings[2]:>8.2f}")


if __name__ == "__main__":
    main()
