"""The customer behind a payment, as the web tier saw them: what risk rules key on.

Owns the `Customer` record and what may be logged of it: the email and IP address are
personal data, so logs carry only a short hash of the email and a masked address
(IPv4 /24, IPv6 /48), enough for an operator to group events, not to identify a person.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass

ISO3166_ALPHA2 = frozenset("""
AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW
BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI
FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN
IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME
MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF
PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV
SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE
YT ZA ZM ZW
""".split())
"""ISO 3166-1 alpha-2 country codes in current use (249)."""


def valid_ip(text: str) -> bool:
    """An IPv4 or IPv6 address in its usual textual form (no zone, no prefix)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def mask_ip(text: str) -> str:
    """The network an address belongs to: IPv4 /24, IPv6 /48."""
    address = ipaddress.ip_address(text)
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def hash_email(email: str) -> str:
    """A short, stable, non-reversible tag for an email address (case-insensitive), for logs only."""
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class Customer:
    """Every field optional: the web tier sends what it knows."""

    id: str | None = None
    email: str | None = None
    ip: str | None = None
    device_id: str | None = None
    country: str | None = None

    def log_fields(self) -> dict[str, object]:
        """What logs may show: the id and device as given, the email hashed, the ip masked."""
        return {
            "customer": self.id,
            "email_hash": hash_email(self.email) if self.email else None,
            "ip_net": mask_ip(self.ip) if self.ip else None,
            "device": self.device_id,
            "customer_country": self.country,
        }

    def __repr__(self) -> str:
        fields = self.log_fields()
        return "Customer(" + ", ".join(f"{k}={v!r}" for k, v in fields.items()) + ")"

    __str__ = __repr__
