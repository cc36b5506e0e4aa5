"""Message type indicators and network-management messages, for ISO 8583:1987 and :1993.

The switch thinks in message *kinds* (authorization, financial, reversal, echo ...);
the dialect's version decides the MTI and where the network-management code goes
(field 70 in 1987, function code in field 24 with MTI 1804 in 1993).
"""

from __future__ import annotations

import functools
from datetime import datetime, timezone
from typing import Mapping

from switch.iso.dialect import Message

_KINDS: dict[str, tuple[str, str]] = {
    # kind: (1987, 1993)
    "authorization": ("0100", "1100"),
    "authorization_advice": ("0120", "1120"),
    "financial": ("0200", "1200"),
    "financial_advice": ("0220", "1220"),
    "reversal": ("0400", "1420"),
    "reversal_repeat": ("0401", "1421"),
    "reversal_advice": ("0420", "1420"),
    "reversal_advice_repeat": ("0421", "1421"),
    "network": ("0800", "1804"),
    "reconciliation": ("0500", "1500"),
}

# Network-management codes: 1987 field 70 / 1993 field 24 (confirm per bank).
NETWORK_CODES: dict[str, tuple[str, str]] = {
    "sign_on": ("001", "801"),
    "sign_off": ("002", "802"),
    "echo": ("301", "831"),
    # 1993: function code 821, "system accounting / cutover"; the bank's new business date in field 15.
    "cutover": ("201", "821"),
}


def mti_for(kind: str, version: int) -> str:
    return _KINDS[kind][0 if version == 1987 else 1]


def response_mti(mti: str) -> str:
    """0200 -> 0210, 0401 -> 0410, 1804 -> 1814: function digit + 1, a repeat's origin answered as the original's."""
    return f"{mti[:2]}{int(mti[2]) + 1}{int(mti[3]) // 2 * 2}"


def is_request(mti: str) -> bool:
    """Requests and advices (function digit even) expect an answer; responses do not."""
    return int(mti[2]) % 2 == 0


def is_network(mti: str) -> bool:
    return mti[1] == "8"


def approved_code(version: int) -> str:
    return "00" if version == 1987 else "000"


def network_code_field(version: int) -> str:
    return "70" if version == 1987 else "24"


def network_kind(message: Mapping[str, str], version: int) -> str | None:
    """sign_on / sign_off / echo / cutover for a network-management message, None if unknown."""
    code = message.get(network_code_field(version))
    index = 0 if version == 1987 else 1
    for kind, codes in NETWORK_CODES.items():
        if codes[index] == code:
            return kind
    return None


def transmission_time(now: float) -> str:
    """Field 7, MMDDhhmmss in UTC."""
    return _utc_texts(int(now))[0]


def local_time_fields(now: float, version: int) -> dict[str, str]:
    """Fields 12 and 13 of 1987 (hhmmss, MMDD) or field 12 of 1993 (YYMMDDhhmmss), in UTC."""
    texts = _utc_texts(int(now))
    return {"12": texts[1], "13": texts[2]} if version == 1987 else {"12": texts[3]}


@functools.lru_cache(maxsize=4)
def _utc_texts(second: int) -> tuple[str, str, str, str]:
    """Field 7, 1987's fields 12 and 13 and 1993's field 12 of one second: formatted once a second
    instead of with four ``strftime`` calls for every message (11 µs of the reactor a payment)."""
    t = datetime.fromtimestamp(second, timezone.utc)
    return t.strftime("%m%d%H%M%S"), t.strftime("%H%M%S"), t.strftime("%m%d"), t.strftime("%y%m%d%H%M%S")


def network_request(kind: str, version: int, now: float, code: str | None = None) -> Message:
    """An 0800/1804 sign-on, sign-off, echo or cutover; STAN (11) is added by the sender."""
    return {
        "t": mti_for("network", version),
        "7": transmission_time(now),
        network_code_field(version): code or NETWORK_CODES[kind][0 if version == 1987 else 1],
    }


def network_response(request: Mapping[str, str], version: int, code: str | None = None) -> Message:
    """The 0810/1814 answer to a peer's network-management request, echoing its keys."""
    answer = {k: v for k, v in request.items() if k in ("7", "11", "15", "24", "41", "70")}
    answer["t"] = response_mti(request["t"])
    answer["39"] = code or approved_code(version)
    return answer
