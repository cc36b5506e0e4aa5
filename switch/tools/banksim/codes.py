"""Response codes the simulated issuer gives, in 1987 form, and their 1993 action codes.

The issuer decides in one vocabulary (the 1987 two-character codes every integration
engineer knows) and translates at the edge, so a 1993 dialect gets the same decisions
as three-digit action codes instead of a second, drifting copy of the rules.
"""

from __future__ import annotations

APPROVED = "00"
DO_NOT_HONOUR = "05"
INVALID_TRANSACTION = "12"
INVALID_CARD = "14"
FORMAT_ERROR = "30"
INSUFFICIENT_FUNDS = "51"
EXPIRED_CARD = "54"
EXCEEDS_LIMIT = "61"
RESTRICTED_CARD = "62"
DUPLICATE = "94"
CVV_MISMATCH = "N7"
PENDING_CUSTOMER = "09"  # request in progress: the customer must confirm at the bank

# 1987 response code -> ISO 8583:1993 action code (field 39, n3).
ACTION_CODES: dict[str, str] = {
    APPROVED: "000",  # approved
    DO_NOT_HONOUR: "100",  # do not honour
    INVALID_TRANSACTION: "902",  # invalid transaction
    "13": "110",  # invalid amount
    INVALID_CARD: "111",  # invalid card number (no such number)
    FORMAT_ERROR: "904",  # format error
    INSUFFICIENT_FUNDS: "116",  # not sufficient funds
    EXPIRED_CARD: "101",  # expired card
    "57": "119",  # transaction not permitted to cardholder
    "58": "120",  # transaction not permitted to terminal
    EXCEEDS_LIMIT: "121",  # exceeds withdrawal amount limit
    RESTRICTED_CARD: "104",  # restricted card
    DUPLICATE: "913",  # duplicate transmission
    "91": "907",  # card issuer or switch inoperative
    "96": "909",  # system malfunction
    CVV_MISMATCH: "129",
    PENDING_CUSTOMER: "923",  # request in progress  # suspected counterfeit card (no 1993 code for CVV2 alone)
}


def wire_code(code: str, version: int) -> str:
    """The field 39 value for ``code`` in a dialect of ``version``.

    A 1987 code given to a 1993 dialect is translated through `ACTION_CODES`; a code
    already in the dialect's own form passes through.  Anything else raises ValueError
    saying what a valid code looks like, so a bad ``--decline-all`` fails at start-up
    rather than at the first message.
    """
    if version == 1987:
        if len(code) == 2 and code.isascii() and code.isalnum():
            return code.upper()
        raise ValueError(f"response code {code!r}: a 1987 dialect expects two letters or digits, such as 05 or N7")
    translated = ACTION_CODES.get(code.upper(), code)
    if len(translated) == 3 and translated.isdigit():
        return translated
    known = ", ".join(sorted(ACTION_CODES))
    raise ValueError(
        f"response code {code!r}: a 1993 dialect expects a three-digit action code such as 100, "
        f"or one of the 1987 codes with a known mapping ({known})"
    )
