"""The configuration schema: every key of ``kswitch.toml`` with its type, default, constraints and meaning.

This module is the one place a configuration key is defined.  `switch.ops.config`
validates a file against these models and builds the runtime options from them;
`switch.ops.reference` prints the README's configuration reference from them; and
`switch.ops.settings` words validation errors from the same annotations, so the text an
operator reads in an error ("expected an integer from 1 to 65535") is the text the README
shows.  Defaults of options that a runtime dataclass also has (links, connectors,
store-and-forward, notifications, API limits, journal) are read from that dataclass, so
they are written once there.

What one key cannot say alone (a route naming a configured connector, a client allowed a
configured merchant, a dialect file that loads, endpoint strings Twisted can parse) is
checked by `switch.ops.config` after this schema has accepted the file.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from switch.bank.connector import ConnectorOptions, LinkOptions
from switch.bank.pool import STRATEGIES
from switch.engine.confirmation import DEFAULT_TIMEOUT
from switch.engine.notify import NotifyOptions
from switch.engine.risk import ACTIONS, KINDS, LIST_KINDS, MODES, SUBJECTS
from switch.engine.router import INSTRUMENTS
from switch.engine.saf import SafOptions
from switch.gateway.config import ApiLimits
from switch.iso.framing import DEFAULT_MAX_FRAME, FRAMING_NAMES, TPDU_LENGTH
from switch.iso.responses import APPROVED, DECLINED, FAILED
from switch.journal.config import JournalConfig
from switch.ops.settings import Expect, Shown, Unit

SECONDS = Unit("seconds")


def _default(cls: type, name: str) -> Any:
    """The default of a runtime dataclass field, so the schema does not write it a second time."""
    spec = next(f for f in dataclasses.fields(cls) if f.name == name)
    return spec.default_factory() if spec.default is dataclasses.MISSING else spec.default


class Section(BaseModel):
    """A TOML table: unknown keys are refused (they are almost always typos); types are not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def option(default: Any = ..., description: str = "", **constraints: Any) -> Any:
    """A configuration key: its default (``...`` = required), its meaning and its constraints."""
    return Field(default, description=description, **constraints)


Seconds = Annotated[float, SECONDS]
FilePath = Annotated[str, Expect("a path")]
LogFormat = Literal["auto", "json", "console"]
LogLevel = Literal["debug", "info", "warning", "error"]
FramingName = Literal[FRAMING_NAMES]  # type: ignore[valid-type]
PoolStrategy = Literal[STRATEGIES]  # type: ignore[valid-type]
Instrument = Literal[INSTRUMENTS]  # type: ignore[valid-type]
NonEmptyStrings = Annotated[list[str], Field(min_length=1), Expect("a non-empty list of strings; leave the key "
                                                                   "out to match everything")]


class SwitchSection(Section):
    """The process: where it keeps its state and how it logs."""

    state_dir: FilePath = option("var", "journal, development keys (`keys/`) and certificates (`pki/`); "
                                "relative to the config file's directory")
    log_format: LogFormat = option("auto", "`auto` is console on a terminal, JSON otherwise")
    log_level: LogLevel = option("info", "the least severe level logged")
    shutdown_grace: Seconds = option(10.0, "seconds SIGTERM waits for requests in flight before closing", ge=0)
    node: int | None = option(None, "a digit for this switch node when several nodes share banks (goes into RRNs)",
                           ge=0, le=9)


_LISTEN_MEANING = ("Twisted endpoint descriptions, checked by `check-config`: `tcp:`, `unix:`, `ssl:`, `systemd:`, "
                   "`tls:` (TLS 1.2+, client certificates with `caCerts=`)")


class ApiSection(Section):
    """The socket API the web tier connects to, and its per-connection limits (0 disables a timeout)."""

    listen: Annotated[list[str], Field(min_length=1), Expect("a non-empty list of endpoint descriptions such as "
                                                             "tcp:7583:interface=127.0.0.1")] = option(
        ["tcp:7583:interface=127.0.0.1"], _LISTEN_MEANING)
    max_line_bytes: int = option(_default(ApiLimits, "max_line_bytes"),
                              "longest request line; longer gets `too_large` and the connection closes",
                              ge=1024, le=16 * 1024 * 1024)
    max_in_flight: int = option(_default(ApiLimits, "max_in_flight"),
                             "requests in flight per connection; more are answered `busy`", ge=1)
    max_connections: int = option(_default(ApiLimits, "max_connections"), "connections per listener", ge=1)
    hello_timeout: Seconds = option(_default(ApiLimits, "hello_timeout"),
                                 "seconds a connection may stay unauthenticated", ge=0)
    line_timeout: Seconds = option(_default(ApiLimits, "line_timeout"),
                                "seconds a request line may take from its first byte to its newline "
                                "(slow senders)", ge=0)
    idle_timeout: Seconds = option(_default(ApiLimits, "idle_timeout"),
                                "seconds an authenticated connection may go without a line while nothing is "
                                "in flight", ge=0)


class AdminSection(Section):
    """The operators' HTTP server: `/metrics`, `/healthz`, `/readyz` for anyone who reaches it; the
    operator endpoints (`POST /cutover`, `GET /reports/settlement`) only for loopback and Unix-socket
    clients (see [The day's life](#the-days-life))."""

    listen: Annotated[str, Expect("an endpoint description such as tcp:9583:interface=127.0.0.1")] = option(
        "tcp:9583:interface=127.0.0.1", "a Twisted endpoint description, checked by `check-config`")


class JournalSection(Section):
    """The transaction journal. Each secret comes from a file (mode 0600) or an environment variable,
    or from `dev_keys`; see [PAN keys](#pan-keys)."""

    backend: Literal["sqlite", "postgresql"] = option(
        _default(JournalConfig, "backend"),
        "`sqlite` (embedded, one file) or `postgresql` (a schema on a server you already run)")
    sqlite_path: FilePath = option("journal.sqlite3", "the SQLite file; relative to `state_dir`")
    postgres_dsn: str = option(_default(JournalConfig, "pg_dsn"), "libpq connection string")
    postgres_schema: Annotated[str, Expect("a lower-case SQL identifier")] = option(
        _default(JournalConfig, "pg_schema"), "the schema the journal's tables live in (created if missing)",
        pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    postgres_batch_deadline: Seconds = option(
        _default(JournalConfig, "pg_batch_deadline"),
        "how long a writer batch may wait on a server that takes it but does not answer (a stopped backend, a stuck "
        "fsync) before it is given up: run again on a new connection, or its payments answered `busy`", gt=0)
    pan_keys_file: FilePath | None = option(None, "file holding the PAN encryption key ring (`key_id:base64key`, ...); "
                                          "relative to `state_dir`")
    pan_keys_env: str | None = option(None, "or: environment variable holding the key ring")
    pan_current_key_id: Annotated[str | None, Shown("the last key of the ring")] = option(
        None, "the key new ciphertexts use")
    pan_hash_secret_file: FilePath | None = option(None, "file holding the HMAC key of PAN look-up hashes (base64, "
                                                 "32+ bytes); relative to `state_dir`")
    pan_hash_secret_env: str | None = option(None, "or: environment variable holding it")
    dev_keys: bool = option(False, "generate both secrets into `state_dir/keys/` on first run: development only")
    writer: Literal["auto", "process", "thread"] = option(
        "auto", "where the group commit runs: `thread` (in the switch's process: the least latency for one "
        "payment at a time), `process` (a process of its own: the most throughput), `auto` (the thread, and the "
        "process while several writes wait at once; README: Performance)")
    writer_nice: int = option(_default(JournalConfig, "writer_nice"),
                              "how much lower the writer process's CPU priority is than the switch's (a nice "
                              "increment): the reactor, which every payment waits on, gets a busy machine's cores "
                              "first; 0 keeps them equal (README: The writer: thread or process)", ge=0, le=19)
    max_batch: int = option(_default(JournalConfig, "max_batch"),
                            "most writes in one group commit; the socket API stops reading requests while "
                            "max_batch writes wait (README: Flow control)", ge=1)


class NotificationsSection(Section):
    """Pushing payment events to subscribed clients (`subscribe` / `ack`)."""

    poll_interval: Seconds = option(_default(NotifyOptions, "poll_interval"),
                                 "seconds between journal reads while anyone is subscribed (the latency of a "
                                 "notification)", ge=0.01)
    max_unacked: int = option(_default(NotifyOptions, "max_unacked"),
                           "events one connection may hold unacknowledged before the switch stops pushing to it",
                           ge=1)


class Client(Section):
    """A web-tier client allowed to connect to the socket API."""

    name: str = option(..., "the client's name in `hello`", min_length=1)
    token: Annotated[str, Expect("at least 16 characters")] = option(
        ..., "its secret; the public demo token is refused unless the API listens on loopback only", min_length=16)
    merchants: list[str] = option(..., "ids of the merchants this client may act for")
    certificate_cn: str | None = option(None, "also require a TLS client certificate with this common name")


class Store(Section):
    """A store (web shop, channel) of a merchant."""

    id: str = option(..., "the store id in requests", min_length=1)
    terminal_id: str = option(..., "ISO 8583 field 41", min_length=1)


class Merchant(Section):
    """A merchant as the acquirer knows it."""

    id: str = option(..., "the merchant id in requests", min_length=1)
    name: str = option(..., "field 43 (with city and country)")
    city: str = option(..., "field 43")
    country: str = option(..., "field 43")
    mcc: Annotated[str, Expect("a 4-digit merchant category code")] = option(..., "field 18",
                                                                          pattern=r"^[0-9]{4}$")
    acquirer_merchant_id: str = option(..., "field 42")
    stores: list[Store] = option(..., "the merchant's stores, each `{ id, terminal_id }`")


class TlsFiles(Section):
    """The client side of mutual TLS to a bank."""

    ca: FilePath = option(..., "CA bundle for the bank's certificate")
    cert: FilePath | None = option(None, "our client certificate (none with key: no client certificate)")
    key: FilePath | None = option(None, "our client certificate's private key")
    server_name: Annotated[str | None, Shown("the link's host")] = option(None, "name checked in the bank's certificate")


def _tls_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        return "table"
    return "word" if value is False or value == "dev" else None


TlsSetting = Annotated[
    Union[Annotated[TlsFiles, Tag("table")], Annotated[Literal["dev", False], Tag("word")]],
    Discriminator(_tls_kind),
    Expect('a table { ca, cert, key, server_name }, "dev", or false for plain TCP (must be explicit)'),
]


class Link(Section):
    """One connection of a connector's pool."""

    name: Annotated[str | None, Shown("`<connector>-<n>`")] = option(None, "link name in logs and metrics")
    host: str = option(..., "bank host", min_length=1)
    port: int = option(..., "bank port", ge=1, le=65535)


class ResponseOverride(Section):
    """How one response code of this bank is read."""

    status: Literal[APPROVED, DECLINED, FAILED] = option(DECLINED, "the payment's final status")
    reason: str = option(..., "the reason the API reports")
    retryable: bool = option(False, "whether the web tier may try again")


class Saf(Section):
    """Store-and-forward of reversals and advices to this bank."""

    retry_interval: Seconds = option(_default(SafOptions, "retry_interval"), "seconds before the first repeat",
                                  ge=0.01)
    backoff: float = option(_default(SafOptions, "backoff"), "factor the interval grows by per attempt", ge=1.0)
    max_interval: Seconds = option(_default(SafOptions, "max_interval"), "cap on the interval", ge=0.01)
    max_attempts: int = option(_default(SafOptions, "max_attempts"),
                            "attempts without a final answer before the item is a dead letter", ge=1)
    response_timeout: Annotated[float | None, SECONDS, Shown("the connector's `request_timeout`")] = option(
        None, "seconds to wait for the bank's answer to a repeat", ge=0.01)
    max_in_flight: int = option(_default(SafOptions, "max_in_flight"),
                             "items of different payments sent at once", ge=1)


def _link(name: str) -> Any:
    return _default(LinkOptions, name)


class Connector(Section):
    """One bank: its dialect, framing, links and acquiring settings. The link options apply to every link."""

    name: str = option(..., "the connector's name in routes, logs, metrics and answers", min_length=1)
    dialect: str = option(..., "a shipped dialect name, a jPOS packager name, or a dialect file path")
    framing: FramingName = option(..., "the length header (see [Framing](#framing))")
    tpdu: Annotated[str | None, Expect(f"{TPDU_LENGTH * 2} hex digits (ID, destination, source)")] = option(
        None, "the TPDU sent after the length header", pattern=rf"^[0-9A-Fa-f]{{{TPDU_LENGTH * 2}}}$")
    length_includes_header: bool = option(False, "the length counts its own header")
    max_frame: int = option(DEFAULT_MAX_FRAME, "largest accepted message; a larger frame closes the link",
                         ge=64, le=65535)
    tls: TlsSetting = option(..., '`"dev"` is the development PKI in `state_dir/pki`; `false` is plain TCP '
                               "(logged as a warning); paths are relative to the config file")
    links: list[Link] = option(..., "one or more connections (a pool)", min_length=1)
    pool_strategy: PoolStrategy = option(_default(ConnectorOptions, "pool_strategy"), "how links share the traffic")
    acquirer_id: Annotated[str, Expect("1 to 11 digits (field 32)")] = option(
        ..., "field 32", pattern=r"^[0-9]{1,11}$")
    forwarding_id: str = option("", "forwarding institution in field 90")
    request_timeout: Seconds = option(_default(ConnectorOptions, "request_timeout"),
                                   "seconds to wait for an answer before the payment is uncertain (`timeout`, "
                                   "reversed)", gt=0)
    max_in_flight: int = option(_default(ConnectorOptions, "max_in_flight"),
                             "payments in flight on this connector; beyond it the API answers `busy` (or the "
                             "route falls back)", ge=1)
    late_response_window: Seconds = option(_default(ConnectorOptions, "late_response_window"),
                                        "seconds an answer to a request that gave up is still recognised as late",
                                        ge=0)
    match_keys: Annotated[dict[str, list[str]] | None, Expect("a table: MTI (or default) = list of fields"), Shown('`{ default = ["mti", "41", "11"] }`')] = option(
        None, "fields pairing answers with requests, per MTI")
    connect_timeout: Seconds = option(_link("connect_timeout"), "TCP connect plus TLS handshake", gt=0)
    reconnect_initial: Seconds = option(_link("reconnect_initial"), "first delay between connection attempts", gt=0)
    reconnect_max: Seconds = option(_link("reconnect_max"), "cap on that delay", ge=0)
    reconnect_factor: float = option(_link("reconnect_factor"), "growth of the delay per failed attempt", ge=1.0)
    reconnect_jitter: float = option(_link("reconnect_jitter"), "each delay shortened by up to this fraction",
                                  ge=0, lt=1)
    sign_on: bool = option(_link("sign_on"), "sign on after connecting; traffic only after an approved sign-on")
    sign_on_code: Annotated[str | None, Expect("3 digits"), Shown("`001` / `801`")] = option(
        None, "the sign-on code (field 70 / 24)", pattern=r"^[0-9]{3}$")
    sign_off_on_stop: bool = option(_link("sign_off_on_stop"), "sign off before closing on shutdown")
    echo_interval: Seconds = option(_link("echo_interval"), "echo test after this long without traffic; 0 = off", ge=0)
    echo_timeout: Seconds = option(_link("echo_timeout"), "wait for any network-management answer", gt=0)
    echo_max_failures: int = option(_link("echo_max_failures"), "consecutive failed echoes that drop the link", ge=1)
    pos_entry_mode: Annotated[str | None, Shown("`812` / `100010S00100`")] = option(None, "field 22 (e-commerce)")
    pos_condition_code: str = option("59", "field 25 (1987 dialects)")
    reversal: Literal["reversal", "reversal_advice"] = option(
        "reversal", "`reversal` (0400/0401) or `reversal_advice` (0420/0421)")
    void_after_capture: bool = option(False, "whether the bank accepts a void of a captured payment")
    partial_approvals: bool = option(
        False, "whether the bank may approve less than asked; then the payment is `approved` with reason "
               "`partial_approval` and the approved amount, otherwise such an answer is a `format_error` and "
               "reversed")
    response_codes: Annotated[dict[str, ResponseOverride], Shown("the shared table")] = option(
        {}, 'overrides per code, e.g. `"N7" = { status = "declined", reason = "cvv_mismatch" }`')
    saf: Saf = option(Saf(), "store-and-forward settings")
    plugin: str | None = option(None, "a connector plugin registered in `connectors/` (see [Connector "
                                   "plugins](#connector-plugins))")
    confirmation_timeout: Seconds = option(DEFAULT_TIMEOUT, "seconds a payment may wait for the customer's "
                                                         "confirmation at the bank before it is reversed", ge=1.0)
    business_day_timezone: Annotated[str, Expect("an IANA time zone such as Asia/Phnom_Penh")] = option(
        "UTC", "the time zone of this bank's business day: the date opened at first start, and `cutover_time`")
    cutover_time: Annotated[str | None, Expect("a 24-hour time HH:MM such as 23:59")] = option(
        None, "local time (in `business_day_timezone`) the switch cuts over this bank's business date itself and "
              "sends 0800/201 (1804/821); none: the bank or an operator does", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    reconciliation: Literal["message", "none"] = option(
        "none", "after a cutover, send the closed date's totals (0500/1500) and compare the bank's answer "
                "(`message`), or not (`none`)")


class Simulator(Section):
    """A banksim child process `kswitch run` starts, speaking its connector's dialect, framing and TPDU on the
    connector's first link address with the development PKI. For demos and development only."""

    connector: str = option(..., "the connector it simulates")
    accounts: FilePath = option(..., "its accounts file, relative to the config file")
    args: list[str] = option([], "more banksim arguments, e.g. `[\"--delay\", \"0.2\"]`")
    ledger: bool = option(False, "keep its ledger (balances, postings, business date) in "
                                 "`state_dir/<connector>.ledger`, so it survives restarts and `banksim settlement` "
                                 "can write the day's file from it")


class Route(Section):
    """A routing rule (see [Routing](#routing)); every criterion left out matches everything."""

    name: Annotated[str | None, Shown("`route-<n>`")] = option(None, "the rule's name in logs and `kswitch route`")
    connectors: Annotated[list[str] | None, Field(min_length=1)] = option(
        None, "an ordered fallback list of connector names (or `connector`)")
    connector: str | None = option(None, "one connector name (or `connectors`)")
    instruments: Annotated[list[Instrument] | None, Field(min_length=1)] = option(None, "instruments it takes")
    bin_prefixes: list[Annotated[str, Field(pattern=r"^[0-9]{1,8}$"), Expect("1 to 8 digits")]] = option(
        [], "BIN/IIN prefixes; the longest matching prefix wins over rule order")
    schemes: NonEmptyStrings | None = option(None, "card schemes, e.g. `visa`")
    banks: NonEmptyStrings | None = option(None, "the customer's chosen bank codes (or wallet providers)")
    currencies: NonEmptyStrings | None = option(None, "ISO 4217 alphabetic codes")
    merchants: NonEmptyStrings | None = option(None, "merchant ids")
    min_amount: int | None = option(None, "smallest amount, in minor units", ge=0)
    max_amount: int | None = option(None, "largest amount, in minor units", ge=0)


MajorAmount = Annotated[str | None, Field(pattern=r"^[0-9]+(\.[0-9]+)?$"),
                        Expect('a decimal string in major units such as "0.10"')]


class CurrencyAmounts(Section):
    """A fee rule's amounts in one currency, in major units (at most the currency's decimals)."""

    currency: Annotated[str, Expect("an ISO 4217 alphabetic code such as USD")] = option(
        ..., "the currency these amounts are in", pattern=r"^[A-Z]{3}$")
    fixed: MajorAmount = option(None, "fixed amount added per payment")
    minimum: MajorAmount = option(None, "least fee per payment")
    maximum: MajorAmount = option(None, "largest fee per payment")


class FeeRule(Section):
    """One fee rule (see [Fee plans](#fee-plans)); the first rule of a bank or merchant that matches a payment
    applies. Filters left out match everything."""

    basis_points: int = option(0, "percentage of the amount in 1/100 %, e.g. `50` = 0.50 %", ge=0, le=10_000)
    per_currency: list[CurrencyAmounts] = option(
        [], 'fixed amount, minimum and maximum per currency, e.g. `[{ currency = "USD", minimum = "0.10" }]`')
    on_refund: Literal["reverse", "keep"] = option(
        "reverse", "what a refund or void does to the fee: `reverse` it in proportion, or `keep` it")
    schemes: NonEmptyStrings | None = option(None, "card schemes it applies to, e.g. `visa`")
    instruments: Annotated[list[Instrument] | None, Field(min_length=1)] = option(
        None, "instruments it applies to")
    currencies: NonEmptyStrings | None = option(None, "ISO 4217 alphabetic codes it applies to")


class BankFeeRule(FeeRule):
    """The settlement fee a bank earns per successful payment it carries."""

    bank: str = option(..., "the connector's name", min_length=1)


class MerchantFeeRule(FeeRule):
    """The merchant discount rate a merchant pays per successful payment."""

    merchant: str = option(..., "the merchant id", min_length=1)


class FeesSection(Section):
    """Fee plans: rules per bank and per merchant, computed when money moves and journalled with it."""

    banks: list[BankFeeRule] = option([], "bank settlement fee rules, in order")
    merchants: list[MerchantFeeRule] = option([], "merchant discount rate rules, in order")


RiskKind = Literal[KINDS]  # type: ignore[valid-type]
RiskAction = Literal[ACTIONS]  # type: ignore[valid-type]
RiskMode = Literal[MODES]  # type: ignore[valid-type]
RiskSubject = Literal[SUBJECTS]  # type: ignore[valid-type]
ListKind = Literal[LIST_KINDS]  # type: ignore[valid-type]
Country = Annotated[str, Field(pattern=r"^[A-Z]{2}$"), Expect("an ISO 3166-1 alpha-2 code such as KH")]


class RiskRule(Section):
    """A risk rule (see [Risk management](#risk-management)); which keys a kind takes is checked after this
    schema, naming the rule."""

    name: str = option(..., "the rule's name in answers, logs, metrics and `kswitch risk explain`",
                       pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    kind: RiskKind = option(..., "what it checks")
    action: RiskAction = option(..., "what a match does")
    mode: RiskMode = option("enforce", "`shadow`: evaluated, counted, logged and journalled, without effect")
    otherwise: Literal["allow", "block", "review"] = option("block", "what `step_up` does where the bank "
                                                                     "cannot ask the customer to confirm")
    merchants: NonEmptyStrings | None = option(None, "merchant ids it looks at")
    currencies: NonEmptyStrings | None = option(None, "ISO 4217 codes it looks at")
    instruments: Annotated[list[Instrument] | None, Field(min_length=1)] = option(None, "instruments it looks at")
    lists: Annotated[list[ListKind] | None, Field(min_length=1)] = option(
        None, "blocklist: which lists it checks (all when left out)")
    cards: list[str] = option([], "blocklist: card numbers (kept only as keyed hashes in memory and the journal)")
    bins: list[Annotated[str, Field(pattern=r"^([0-9]{6}|[0-9]{8})$"), Expect("6 or 8 digits")]] = option(
        [], "blocklist: BINs/IINs")
    ips: list[str] = option([], "blocklist: IP addresses or CIDR networks")
    devices: list[str] = option([], "blocklist: device ids")
    emails: list[str] = option([], "blocklist: email addresses")
    customers: list[str] = option([], "blocklist: customer ids")
    min_amount: int | None = option(None, "amount_limit: smallest amount, in minor units", ge=1)
    max_amount: int | None = option(None, "amount_limit: largest amount; cumulative: largest total, in minor units",
                                    ge=1)
    per: RiskSubject = option("card", "cumulative, velocity, card_testing: what is counted")
    max_count: int | None = option(None, "cumulative, velocity: most payments in a window", ge=1)
    window: Seconds = option(60.0, "cumulative, velocity, card_testing, duplicate: window length", ge=1.0)
    period: Literal["day"] | None = option(None, "cumulative: `day` counts per calendar day in `timezone` "
                                                 "instead of `window`")
    timezone: str = option("UTC", "cumulative: the IANA time zone of `period = \"day\"`")
    declines: int = option(3, "card_testing: bank declines in a window that put a hold", ge=1)
    hold: Seconds = option(1800.0, "card_testing: how long a hold blocks", ge=1.0)
    allow_countries: Annotated[list[Country] | None, Field(min_length=1)] = option(
        None, "country: issuing countries let through (others match)")
    deny_countries: list[Country] = option([], "country: issuing countries that match")
    unknown_country: Literal["allow", "match"] = option("allow", "country: a card the BIN table does not know")


class RiskSection(Section):
    """Risk management (see [Risk management](#risk-management)): reloaded on SIGHUP."""

    bin_table: FilePath | None = option(None, "the BIN country table for `country` rules, relative to the "
                                              "config file")
    rules: list[RiskRule] = option([], "risk rules, evaluated in order")


class KswitchConfig(Section):
    """The whole file."""

    switch: SwitchSection = option(SwitchSection(), "the process")
    api: ApiSection = option(ApiSection(), "the socket API")
    admin: AdminSection = option(AdminSection(), "the admin HTTP server")
    journal: JournalSection = option(JournalSection(), "the transaction journal")
    notifications: NotificationsSection = option(NotificationsSection(), "event notifications")
    clients: list[Client] = option(..., "web-tier clients")
    merchants: list[Merchant] = option(..., "merchants")
    connectors: list[Connector] = option(..., "banks")
    simulators: list[Simulator] = option([], "simulated banks")
    routes: list[Route] = option([], "routing rules")
    fees: FeesSection = option(FeesSection(), "fee plans")
    risk: RiskSection = option(RiskSection(), "risk management")
