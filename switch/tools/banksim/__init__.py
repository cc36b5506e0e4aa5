"""A simulated issuing bank's host speaking ISO 8583, for tests, the demo and integration work.

`issuer` decides, `ledger` keeps the books (in memory or a SQLite file), `server` talks
to the network, `cli` is ``bin/banksim``, `web` the customer page and ``GET /ledger``.
"""

from switch.tools.banksim.accounts import DEFAULT_ACCOUNTS, Account, AccountsError, load_accounts
from switch.tools.banksim.faults import Faults
from switch.tools.banksim.issuer import Issuer
from switch.tools.banksim.ledger import ANOMALIES, KINDS, ORIGINAL_KINDS, Ledger, LedgerError, Posting, read_snapshot
from switch.tools.banksim.server import BankSim, BankSimOptions
from switch.tools.banksim.tls import TlsError, TlsFiles

__all__ = [
    "ANOMALIES", "DEFAULT_ACCOUNTS", "KINDS", "ORIGINAL_KINDS", "Account", "AccountsError", "BankSim", "BankSimOptions",
    "Faults", "Issuer", "Ledger", "LedgerError", "Posting", "TlsError", "TlsFiles", "load_accounts", "read_snapshot",
]
