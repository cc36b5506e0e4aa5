"""The risk stage of an authorization: after routing, before anything is sent to a bank.

Owns the order of evaluation and what a decision does.  Rules run in their configured
order inside one journal writer unit (`switch.journal.risk.RiskLedger`), the one that
journals the payment and its request (`Screening`, `Journal.create_screened`), so
counters, the decision, the take-back of a blocked payment's reservations and the
payment itself commit together, with no commit of the stage's own:

* a rule in mode ``shadow`` that matches is recorded ("would have ...") and evaluation
  goes on; it changes nothing for the payment;
* the first rule in mode ``enforce`` that matches decides, and evaluation stops:
  ``allow`` lets the payment through, ``block`` refuses it (nothing is sent),
  ``review`` sends it flagged, ``step_up`` sends it asking the bank to have the customer
  confirm it where the routed connector's plugin can (`ConnectorPlugin.step_up`), else
  acts as the rule's ``otherwise``: the journalled decision is what was done;
* no match: allowed.

Every evaluated payment's decision (rules matched, their mode and action, counter
values seen, the cumulative counts it holds) is journalled under its txn_id.  Bank
declines feed the card-testing rules, and a payment that ends without money gives its
cumulative counts back (`Closing`, in the commit that journals the outcome).  Rules can
be replaced at run time (`replace`, on SIGHUP).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import structlog
from prometheus_client import CollectorRegistry
from twisted.internet.interfaces import IReactorTime

from switch.domain.model import AuthorizeRequest, CardInstrument
from switch.engine.risk.bins import BinTable
from switch.engine.risk.compiled import Screen, compile_guess, compile_screen
from switch.engine.risk.rules import NAMES_REMEMBERED, SLOTS, Facts, Remembered, Rule, feed_decline, tag
from switch.iso.translate import sealed_instrument
from switch.journal import Journal
from switch.journal.guard import Derived
from switch.journal.risk import Decision, Reservation, RiskLedger
from switch.observe.metrics import Counter, MetricBundle

log = structlog.get_logger("kswitch.risk")


@dataclass(frozen=True)
class RiskRules:
    """The configured rules in order, and the BIN table the country rules read."""

    rules: tuple[Rule, ...] = ()
    bins: BinTable | None = None
    _scoped: dict[tuple[str, str, str], Plan] = field(default_factory=dict, compare=False, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        """The rules and the BIN table, not the plans compiled from them: generated code does not pickle,
        and a writer process compiles its own once (the stage shares the rules with the journal's writer)."""
        return {"rules": self.rules, "bins": self.bins, "_scoped": {}}

    @functools.cached_property
    def horizon_us(self) -> int:
        """How long an authorization's counts may count (µs): the longest counting window, a slot more; a
        calendar day (and its daylight-saving hour) for a ``period = "day"`` rule."""
        return max([_DAY_US if r.period == "day" else (SLOTS + 1) * r.slot_us
                    for r in self.rules if r.counts], default=0)

    def plan(self, f: Facts) -> Plan:
        """The rules whose scope covers ``f``, compiled (`Plan`): remembered per (merchant, currency,
        instrument), a handful of combinations, so scopes are looked at and rules compiled once per
        combination, not per payment."""
        key = (f.merchant_id, f.currency, f.instrument)
        found = self._scoped.get(key)
        if found is None:
            found = Plan(tuple(rule for rule in self.rules if rule.scope.covers(f)))
            if len(self._scoped) < 4096:
                self._scoped[key] = found
        return found


_VERSIONS = itertools.count(1)
"""Numbers the rules' versions shared with journals (`RiskStage._load`): unique in the process."""
_STATELESS = ("amount_limit", "country")
"""Rule kinds that decide from the payment alone."""
_DAY_US = 26 * 3600 * 1_000_000


class Plan:
    """A scope's rules, and what the stage runs for them: the screen compiled from them
    (`switch.engine.risk.compiled`), its variant for `kswitch risk explain`, and the guess whether a
    payment will be stepped up."""

    def __init__(self, rules: tuple[Rule, ...]) -> None:
        self.rules = rules
        self.lookups = tuple(dict.fromkeys(pair for r in rules for pair in r.lookups))
        self.card_testing = tuple(r for r in rules if r.kind == "card_testing")
        self.screen = compile_screen(rules, self.lookups)

    @functools.cached_property
    def explain(self) -> Screen:
        """The screen for `kswitch risk explain`, going on past the deciding rule: compiled when asked."""
        return compile_screen(self.rules, self.lookups, every_rule=True)

    @functools.cached_property
    def guess(self) -> Callable[[Facts], bool] | None:
        """Whether a payment will likely be stepped up, known before anything is read: the first enforced
        rule that reads nothing from the journal and matches asks for it.  Wrong only when a rule reading
        the journal decides first with something else than a block (see `Screening`).  None when no
        enforced rule steps up: nothing to guess."""
        if not any(r.action == "step_up" and r.mode == "enforce" for r in self.rules):
            return None
        return compile_guess([r for r in self.rules if r.kind in _STATELESS and r.mode == "enforce"])


@dataclass(frozen=True)
class Verdict:
    """``action`` is what happens: allow, block, review or step_up; ``rule`` the enforced rule that decided."""

    action: str
    rule: str | None
    matches: tuple[dict[str, Any], ...]
    reserved: tuple[Reservation, ...] = ()
    """Cumulative counts this payment added: (counter, count, amount, slot), given back if it fails."""
    journal_as: str = "send"
    """How the payment's first commit journals it (`Journal.create_screened`)."""

    def answer_field(self) -> dict[str, str] | None:
        """The answer's ``risk`` object, when an enforced rule decided."""
        return None if self.rule is None else {"rule": self.rule, "action": self.action}


ALLOWED = Verdict("allow", None, ())
"""Most payments' verdict: nothing matched, nothing held (one immutable value shared by all)."""


class RiskMetrics(MetricBundle):
    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry)
        self.evaluations = Counter("kswitch_risk_evaluations_total", "Authorizations the risk stage evaluated, "
                                   "by the action taken", ["action"], registry=registry)
        self.matches = Counter("kswitch_risk_rule_matches_total", "Risk rule matches by rule, action and mode "
                               "(shadow: would have)", ["rule", "action", "mode"], registry=registry)


def _outcome(rule: Rule | None, step_up: bool) -> str:
    if rule is None:
        return "allow"
    if rule.action == "step_up" and not step_up:
        return rule.otherwise
    return rule.action


class Judging(NamedTuple):
    """A payment's evaluation as a writer unit (`judge`), in data only, as a unit travels to the writer
    (`switch.journal.units`): the rules by the key the stage shared them under (`RiskStage._load`), the
    payment's facts, ``step_up`` and ``built_step_up`` as `judge` takes them.  The scope's compiled plan
    is found on the writer's side (`RiskRules.plan`, remembered there)."""

    rules: Hashable
    facts: Facts
    txn_id: str
    step_up: bool
    built_step_up: bool = False

    def __call__(self, ledger: RiskLedger) -> Verdict:
        rules: RiskRules = ledger.shared(self.rules)
        plan = rules.plan(self.facts)
        return judge(ledger, plan, plan.screen, rules.horizon_us, self.facts, self.txn_id, self.step_up,
                     self.built_step_up)


def judge(ledger: RiskLedger, plan: Plan, screen: Screen, horizon_us: int, facts: Facts, txn_id: str,
          step_up: bool, built_step_up: bool) -> Verdict:
    """Evaluate one payment inside a writer unit (see the module docstring): run the scope's ``screen``,
    decide, and journal the decision; ``step_up``: the routed connector can ask the customer to
    confirm; ``built_step_up``: the request waiting to be journalled asks it (a verdict that disagrees
    is journalled ``apart``)."""
    decisive, windows, matches, adds, held = screen(facts, ledger, horizon_us)
    if decisive < 0 and not matches and not held and not built_step_up:  # most payments
        ledger.allowed(txn_id, adds, windows.values())
        return ALLOWED
    rule = plan.rules[decisive] if decisive >= 0 else None
    action = _outcome(rule, step_up)
    reserved: tuple[Reservation, ...] = ()
    if held:
        if action == "block":
            for name, count, amount, start, _ in held:
                windows[name].take_back(start, count, amount)
        else:
            reserved = tuple((name, count, amount, start) for name, count, amount, start, _ in held)
            adds += [(name, start, count, amount, expires) for name, count, amount, start, expires in held]
    rule_name = rule.name if rule is not None else None
    journal_as = "refuse" if action == "block" else "apart" if (action == "step_up") != built_step_up else "send"
    ledger.record(txn_id, Decision(action, rule_name, matches, reserved, adds), windows.values(),
                  journal_as != "apart")
    if not matches and not reserved and journal_as == "send":
        return ALLOWED
    return Verdict(action, rule_name, tuple(matches), reserved, journal_as)


class Screening:
    """One authorization's pass through the stage before its request is sent, in the payment's own commit (no
    commit of its own):

    * on the reactor, before the request is built: the payment's facts, and whether to build the
      request asking for a step-up (`Plan.guess`);
    * `decide`, the unit run inside the commit that journals the payment and its request
      (`Journal.create_screened`): counts, decides and journals the decision; a block journals the
      payment declined instead, and a verdict that disagrees with the request as built (an enforced
      rule reading counters decided something else than a block) is journalled apart, the caller
      building and journalling the request again.

    The payment keeps only the verdict once sent: the stage's part of its outcome (`RiskStage.outcome_closing`,
    inside the commit that journals the outcome) is built from the request and the verdict.
    """

    __slots__ = ("stage", "facts", "step_up", "decide", "verdict")

    def __init__(self, stage: RiskStage, txn_id: str, facts: Facts, can_step_up: bool) -> None:
        self.stage = stage
        self.facts = facts
        plan = stage.rules.plan(facts)
        self.step_up = can_step_up and plan.guess is not None and plan.guess(facts)
        # the rules of the moment, should a reload come before the unit runs
        self.decide = Judging(stage.rules_key, facts, txn_id, can_step_up, self.step_up)
        self.verdict: Verdict | None = None

    def decided(self, txn_id: str, verdict: Verdict) -> None:
        """Count and log a verdict, once its commit is durable."""
        self.verdict = verdict
        self.stage.decided(txn_id, verdict)


Held = tuple[tuple[str, int], ...]
"""The holds a `Closing` put: (rule, declines counted) each."""


class Closing(NamedTuple):
    """A payment's outcome as the stage sees it, run in the outcome's commit: anything but an approval
    (or a wait for the customer) gives the cumulative counts back; a bank's decline counts for the
    card-testing rules of its scope (``declined``: it has some, in the rules shared under ``rules``), which
    may put a hold.  It runs on the writer's copy, so the holds it put are its result (`Held`), logged by
    `log_holds` once durable."""

    rules: Hashable
    facts: Facts
    declined: bool
    release: tuple[Reservation, ...]

    def __call__(self, ledger: RiskLedger, txn: object = None) -> Held:
        rules = ledger.shared(self.rules).plan(self.facts).card_testing if self.declined else ()
        counting = [(rule, c) for rule in rules if (c := rule.counter(self.facts, ledger.now_us, "declines"))]
        windows = ledger.windows([c.name for _, c in counting] + [name for name, *_ in self.release])
        for name, count, amount, start in self.release:
            windows[name].take_back(start, count, amount)
        held = []
        for rule, c in counting:
            hold = feed_decline(rule, windows[c.name], c, self.facts)
            if hold is not None:
                ledger.hold(*hold, f"rule {rule.name}", ledger.now_us + int(rule.hold * 1_000_000))
                held.append((rule.name, windows[c.name].total(c.since)[0]))
        ledger.save(windows.values())
        return tuple(held)

    def log_holds(self, held: Held) -> None:
        for name, count in held:
            log.warning("risk_hold", rule=name, declines=count, masked_pan=self.facts.masked)


class RiskStage:
    def __init__(self, clock: IReactorTime, journal: Journal, rules: RiskRules, registry: CollectorRegistry) -> None:
        self.clock = clock
        self.journal = journal
        self._load(self._keyed(rules))
        self.metrics = RiskMetrics.on(registry)
        self._evaluated: dict[str, Any] = {}  # by action: the one metric every payment counts, bound once
        self._cards: Remembered[bytes, Derived] = Remembered(tag, NAMES_REMEMBERED)  # by the card's keyed hash

    def replace(self, rules: RiskRules) -> None:
        """Take new rules for the payments evaluated from now on."""
        self._load(self._keyed(rules))
        log.info("risk_rules_loaded", rules=[r.name for r in rules.rules])

    def _load(self, rules: RiskRules) -> None:
        """Take ``rules`` and hand them to the journal's writer once, under a key of their own (``rules_key``),
        which the units name instead of carrying them (`Judging`, `Closing`).  A new key for each version:
        a unit submitted before a reload still finds the rules it was built for."""
        self.rules = rules
        self.rules_key: Hashable = ("risk-rules", next(_VERSIONS))
        self.journal.share(self.rules_key, rules)

    def _keyed(self, rules: RiskRules) -> RiskRules:
        """The rules with the config file's card numbers and emails replaced by their keyed hashes."""
        def keyed(rule: Rule) -> Rule:
            clear = {e for e in rule.entries if e[0] in ("card-pan", "email-clear")}
            if not clear:
                return rule
            hashed = {("card", self.card_key(v)) if k == "card-pan" else ("email", self.email_key(v)) for k, v in clear}
            return replace(rule, entries=(rule.entries - clear) | hashed)

        return RiskRules(tuple(keyed(r) for r in rules.rules), rules.bins)

    def card_key(self, pan: str) -> str:
        """A card (or account number) as the rules and the blocklist know it: its keyed hash."""
        return tag(self.journal.vault.pan_hash(pan))

    def email_key(self, email: str) -> str:
        """An email as the rules and the blocklist know it: keyed, so the journal holds no guessable hash."""
        return tag(self.journal.vault.pan_hash("email:" + email.strip().lower()))

    def facts(self, req: AuthorizeRequest, pan_hash: bytes | None = None) -> Facts:
        """What the rules see of ``req``: the card only as its keyed hash (``pan_hash``, when the caller has
        it already), BIN and country."""
        instrument = req.instrument
        pan = instrument.pan if isinstance(instrument, CardInstrument) else None
        if pan_hash is None:
            pan_hash = self.journal.vault.pan_hash(pan or sealed_instrument(instrument).pan)
        card = self._cards[pan_hash]
        bins = self.rules.bins
        c = req.customer
        if c is None:
            customer = ip = device = email = None
        else:
            customer, ip, device = c.id, c.ip, c.device_id
            email = self.email_key(c.email) if c.email else None
        return Facts(  # by position, in `Facts`' order: one is built for every authorization
            req.merchant_id, req.amount, req.currency.alpha, instrument.kind, card, instrument.masked_pan,
            pan[:6] if pan else None, pan[:8] if pan and len(pan) >= 16 else None,
            bins.country(pan) if pan and bins is not None else None, customer, ip, device, email,
            req.idempotency_key, pan_hash)

    def screening(self, txn_id: str, req: AuthorizeRequest, can_step_up: bool,
                  pan_hash: bytes | None = None) -> Screening:
        """Payment ``txn_id``'s screening (see `Screening`); ``can_step_up``: its connector can ask the
        customer to confirm, so a step_up rule steps up instead of acting as its ``otherwise``."""
        return Screening(self, txn_id, self.facts(req, pan_hash), can_step_up)

    async def evaluate(self, txn_id: str, facts: Facts, step_up: bool = False) -> Verdict:
        """Evaluate, count and journal the decision for payment ``txn_id`` in a commit of its own (what
        `Screening` does inside the payment's commit); ``step_up`` as in `screening`."""
        now = self.clock.seconds()
        verdict: Verdict = await self.journal.risk_unit(Judging(self.rules_key, facts, txn_id, step_up), now)
        self.decided(txn_id, verdict)
        return verdict

    def decided(self, txn_id: str, verdict: Verdict) -> None:
        metrics = self.metrics
        evaluated = self._evaluated.get(verdict.action)
        if evaluated is None:
            evaluated = self._evaluated[verdict.action] = metrics.child(metrics.evaluations, verdict.action)
        evaluated.inc()
        for match in verdict.matches:  # rule names are bounded: they come from the config
            metrics.child(metrics.matches, match["rule"], match["action"], match["mode"]).inc()
        if verdict.matches:
            log.info("risk_decision", txn_id=txn_id, action=verdict.action, rule=verdict.rule,
                     matched=[f"{m['rule']}({m['mode']})" for m in verdict.matches])

    async def explain(self, facts: Facts) -> Verdict:
        """What the rules would decide for ``facts`` now, counting it as one more payment, changing nothing
        (a step_up as such: which connector the payment would go to is not known here)."""
        now = self.clock.seconds()
        rules = self.rules  # a reader's unit, run in this process: it takes the rules (and plan) as they are
        plan = rules.plan(facts)
        verdict: Verdict = await self.journal.risk_dry_run(
            lambda ledger: judge(ledger, plan, plan.explain, rules.horizon_us, facts, "explain", True, False), now)
        return verdict

    def outcome_closing(self, req: AuthorizeRequest, verdict: Verdict | None, status: str) -> Closing | None:
        """The stage's part of the outcome ``status`` (an API status) of a payment sent with ``verdict`` (None:
        it was never decided), None when it has none, as most have.

        Why from the request: a payment waits at its bank with its verdict only.  Its facts (their tuple, the
        unit that carried them, the card's keyed hash, the BIN and masked PAN strings) were a quarter of its
        memory there (`bench/hold.sh`); the rare outcome that needs them (counts to give back, a decline to
        count) builds them again, one keyed hash more, under the rules of that moment."""
        if verdict is None or (not verdict.reserved and status != "declined"):
            return None
        return self.closing(self.facts(req), verdict, status)

    def closing(self, facts: Facts, verdict: Verdict, status: str) -> Closing | None:
        """The stage's part of a payment's outcome ``status`` (see `Closing`), None when it has none."""
        release = verdict.reserved if status not in ("approved", "pending_customer_action") else ()
        declined = status == "declined" and bool(self.rules.plan(facts).card_testing)
        return Closing(self.rules_key, facts, declined, release) if declined or release else None

    async def answered(self, facts: Facts, verdict: Verdict, status: str) -> None:
        """`closing` in a commit of its own."""
        closing = self.closing(facts, verdict, status)
        if closing is not None:
            closing.log_holds(await self.journal.risk_unit(closing, self.clock.seconds()))
