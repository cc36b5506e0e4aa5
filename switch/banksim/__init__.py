"""A simulated issuing bank's host speaking ISO 8583, for tests, the demo and integration work.

`issuer` decides (pure), `server` talks to the network, `cli` is ``bin/banksim``.
"""

from switch.banksim.accounts import DEFAULT_ACCOUNTS, Account, AccountsError, load_accounts
from switch.banksim.faults import Faults
from switch.banksim.issuer import Issuer
from switch.banksim.ledger import Ledger
from switch.banksim.server import BankSim, BankSimOptions
from switch.banksim.tls import TlsError, TlsFiles

__all__ = [
    "DEFAULT_ACCOUNTS", "Account", "AccountsError", "BankSim", "BankSimOptions", "Faults", "Issuer", "Ledger",
    "TlsError", "TlsFiles", "load_accounts",
]
