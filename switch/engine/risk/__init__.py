"""Risk management: rules checked after routing and before a payment reaches a bank.

`rules` holds the rule kinds and their parameters, `compiled` turns a scope's rules into the
one function that checks them, `stage` the evaluation and its effects, `bins` the BIN
country table.  Counters, the blocklist and decisions live in the journal
(`switch.journal.risk`).
"""

from switch.engine.risk.bins import BinTable, BinTableError, load_bin_table
from switch.engine.risk.rules import ACTIONS, KINDS, LIST_KINDS, MODES, SUBJECTS, Facts, Rule, Scope, tag
from switch.engine.risk.stage import RiskRules, RiskStage, Verdict

__all__ = ["ACTIONS", "KINDS", "LIST_KINDS", "MODES", "SUBJECTS", "BinTable", "BinTableError", "Facts", "RiskRules",
           "RiskStage", "Rule", "Scope", "Verdict", "load_bin_table", "tag"]
