"""The switch's TOML configuration: read once at start-up, validated completely.

The keys, their types, defaults and constraints are defined once, in `switch.ops.schema`.
Here a file is read, checked against that schema, and turned into the runtime options
the rest of the switch uses; what one key cannot say alone is checked here too (dialect
files load, framings and TPDUs agree, routes and simulators name configured connectors,
clients name configured merchants, endpoint strings parse), so a mistake stops the switch
with one line naming the file, the key and what was expected, instead of failing at the
first payment or when the switch is half started.  Relative paths are relative to the
directory of the config file.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from pydantic import ValidationError
from twisted.internet.endpoints import serverFromString

from connectors import UnknownPlugin, plugin_class
from switch.bank.connector import ConnectorOptions, LinkOptions, TlsClientOptions
from switch.domain.businessday import parse_hhmm, zone
from switch.domain.merchant import MerchantConfig, StoreConfig
from switch.engine.confirmation import DEFAULT_TIMEOUT
from switch.engine.dayend import GRACE, DayEndOptions
from switch.engine.notify import NotifyOptions
from switch.engine.risk import RiskRules
from switch.engine.router import Router
from switch.engine.saf import SafOptions
from switch.gateway.config import ApiConfig, ApiLimits, ClientConfig
from switch.gateway.listen import server_endpoint, split_description
from switch.iso.dialect import DialectError, load_dialect
from switch.iso.framing import Framing
from switch.iso.responses import Outcome, ResponseTable
from switch.iso.translate import AcquirerProfile
from switch.journal.config import JournalConfig, SecretSource
from switch.ops import schema
from switch.ops.feeplans import build_fee_schedule
from switch.ops.risk import build_risk, name_the_rule
from switch.ops.routes import build_router
from switch.ops.settings import ConfigError, at, describe

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "config" / "kswitch.toml"
LOOPBACK = ("127.0.0.1", "::1", "localhost")
DEMO_TOKEN = "demo-token-not-for-production"
LINK_WIDE = tuple(f.name for f in dataclasses.fields(LinkOptions) if f.name not in ("name", "host", "port", "tls"))
"""Link options set once per connector (the schema's `Connector` has a key of the same name for each)."""


@dataclass(frozen=True)
class BankSettings:
    """A connector as configured: the transport options plus what the gateway needs to speak for us."""

    options: ConnectorOptions
    profile: AcquirerProfile
    saf: SafOptions
    plugin: str | None
    dev_tls: bool
    void_after_capture: bool = False
    confirmation_timeout: float = DEFAULT_TIMEOUT
    """Seconds a payment may wait for the customer to confirm at the bank before it expires."""
    day_end: DayEndOptions = field(default_factory=DayEndOptions)


@dataclass(frozen=True)
class SimulatorSettings:
    """A banksim the switch starts itself, speaking its connector's dialect on the first link's address."""

    connector: str
    accounts: Path
    extra_args: tuple[str, ...] = ()
    ledger: bool = False


@dataclass(frozen=True)
class SwitchConfig:
    file: Path
    state_dir: Path
    log_format: str
    log_level: str
    shutdown_grace: float
    api_listen: tuple[str, ...]
    api: ApiConfig
    admin_listen: str
    journal: JournalConfig
    dev_keys: bool
    banks: Mapping[str, BankSettings]
    simulators: tuple[SimulatorSettings, ...]
    router: Router
    node: int | None = None
    notify: NotifyOptions = field(default_factory=NotifyOptions)
    risk: RiskRules = field(default_factory=RiskRules)

    @property
    def pki_dir(self) -> Path:
        return self.state_dir / "pki"


def load_config(path: Path | str | None = None) -> SwitchConfig:
    """Read and validate a config file; raises `ConfigError` with file, key and expectation."""
    file = Path(path) if path is not None else DEFAULT_CONFIG
    try:
        with file.open("rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{file}: config file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{file}: not valid TOML: {e}") from None
    return from_document(file, doc)


def from_document(file: Path, doc: Mapping[str, Any]) -> SwitchConfig:
    """Validate a parsed config document as if read from ``file`` (which names it in errors and anchors paths)."""
    try:
        model = schema.KswitchConfig.model_validate(doc)
    except ValidationError as e:
        raise name_the_rule(describe(file, schema.KswitchConfig, e), doc) from None
    base = file.resolve().parent
    state_dir = _path(model.switch.state_dir, base)
    for i, description in enumerate(model.api.listen):
        _check_endpoint(file, ("api", "listen", i), description, server_endpoint)
    _check_endpoint(file, ("admin", "listen"), model.admin.listen, serverFromString)
    _refuse_twice(file, "connectors", "name", [c.name for c in model.connectors], "connector")
    banks = {c.name: _bank(file, i, c, base, state_dir) for i, c in enumerate(model.connectors)}
    sw = model.switch
    return SwitchConfig(
        file=file, state_dir=state_dir, log_format=sw.log_format, log_level=sw.log_level,
        shutdown_grace=sw.shutdown_grace, api_listen=tuple(model.api.listen), api=_api(file, model),
        admin_listen=model.admin.listen,
        journal=dataclasses.replace(_journal(file, model.journal, state_dir), fees=build_fee_schedule(
            file, model.fees, banks, [m.id for m in model.merchants]), log_format=sw.log_format,
            log_level=sw.log_level),
        dev_keys=model.journal.dev_keys, banks=banks,
        simulators=tuple(_simulator(file, i, s, base, banks) for i, s in enumerate(model.simulators)),
        router=build_router(file, model.routes, banks), node=sw.node,
        notify=NotifyOptions(**model.notifications.model_dump()), risk=build_risk(file, model.risk),
    )


def _api(file: Path, model: schema.KswitchConfig) -> ApiConfig:
    """Clients and merchants, each client allowed only configured merchants; the demo token only on loopback."""
    _refuse_twice(file, "merchants", "id", [m.id for m in model.merchants], "merchant")
    _refuse_twice(file, "clients", "name", [c.name for c in model.clients], "client")
    known = [m.id for m in model.merchants]
    for i, client in enumerate(model.clients):
        for merchant_id in client.merchants:
            if merchant_id not in known:
                raise at(file, ("clients", i, "merchants"),
                         f"unknown merchant {merchant_id!r}; configured: {', '.join(known)}")
    clients = [
        ClientConfig(name=c.name, token=c.token, merchant_ids=frozenset(c.merchants), certificate_cn=c.certificate_cn)
        for c in model.clients
    ]
    _refuse_demo_token_off_loopback(file, clients, tuple(model.api.listen))
    merchants = [_merchant(file, i, m) for i, m in enumerate(model.merchants)]
    limits = ApiLimits(**model.api.model_dump(exclude={"listen"}))
    try:
        return ApiConfig.build(clients, merchants, limits)
    except ValueError as e:
        raise at(file, ("clients",), str(e)) from None


def _refuse_twice(file: Path, section: str, key: str, values: list[str], kind: str) -> None:
    for i, value in enumerate(values):
        if value in values[:i]:
            raise at(file, (section, i, key), f"{kind} {value!r} is configured twice")


def _path(value: str, base: Path) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


_NO_REACTOR = object()
"""Endpoints are built only to check their descriptions; nothing listens, so no reactor is needed."""


def _check_endpoint(file: Path, loc: Sequence[str | int], description: str,
                    build: Callable[[Any, str], object]) -> None:
    """Parse an endpoint description as start-up will (certificate files included), without listening."""
    parts = split_description(description)
    kind = parts[0]
    if kind == "systemd" and "LISTEN_FDS" not in os.environ:
        return  # systemd hands the sockets over at start; outside it there is nothing to check against
    try:
        build(_NO_REACTOR, description)
    except Exception as e:  # Twisted's parsers raise whatever the option's conversion raises
        raise at(file, loc, f"got {description!r}; expected an endpoint description Twisted can parse "
                            f"({type(e).__name__}: {e})") from None
    port = next((p[5:] for p in parts[1:] if p.startswith("port=")), parts[1] if len(parts) > 1 else "")
    if kind in ("tcp", "tcp6", "ssl", "tls") and port.isdigit() and int(port) > 65535:
        raise at(file, loc, f"got {description!r}; expected a port from 0 to 65535")


def _refuse_demo_token_off_loopback(file: Path, clients: list[ClientConfig], listen: tuple[str, ...]) -> None:
    """The demo token is public (it is in this repository): never accept it from a network."""
    if not any(c.token == DEMO_TOKEN for c in clients):
        return
    for endpoint in listen:
        kind = endpoint.split(":", 1)[0]
        interface = next((p.split("=", 1)[1] for p in endpoint.split(":") if p.startswith("interface=")), "")
        if kind in ("tcp", "ssl", "tcp6") and interface.strip("[]") not in LOOPBACK:
            raise at(
                file, ("clients",),
                f"the demo token {DEMO_TOKEN!r} is configured while the API listens on {endpoint!r}, "
                "which is not a loopback address; set a secret token for every client first",
            )


def _secret(file: Path, j: schema.JournalSection, key: str, state_dir: Path, dev_file: str) -> SecretSource:
    path, env = getattr(j, f"{key}_file"), getattr(j, f"{key}_env")
    if path is not None and env is not None:
        raise at(file, ("journal", f"{key}_env"), f"expected {key}_file or {key}_env, not both")
    if path is not None:
        return SecretSource(file=_path(path, state_dir))
    if env is not None:
        return SecretSource(env=env)
    if j.dev_keys:
        return SecretSource(file=state_dir / "keys" / dev_file)
    raise at(file, ("journal", f"{key}_file"),
             f"missing; expected {key}_file (a path) or {key}_env (an environment variable name), "
             "or dev_keys = true for a development set-up")


def _journal(file: Path, j: schema.JournalSection, state_dir: Path) -> JournalConfig:
    return JournalConfig(
        backend=j.backend,
        sqlite_path=_path(j.sqlite_path, state_dir),
        pg_dsn=j.postgres_dsn,
        pg_schema=j.postgres_schema,
        pg_batch_deadline=j.postgres_batch_deadline,
        pan_keys=_secret(file, j, "pan_keys", state_dir, "pan-keys"),
        pan_current_key_id=j.pan_current_key_id,
        pan_hash_secret=_secret(file, j, "pan_hash_secret", state_dir, "pan-hash-secret"),
        max_batch=j.max_batch,
        writer=j.writer,
        writer_nice=j.writer_nice,
    )


def _merchant(file: Path, i: int, m: schema.Merchant) -> MerchantConfig:
    try:
        return MerchantConfig.with_stores(
            [StoreConfig(id=s.id, terminal_id=s.terminal_id) for s in m.stores],
            id=m.id, name=m.name, mcc=m.mcc, city=m.city, country=m.country,
            acquirer_merchant_id=m.acquirer_merchant_id,
        )
    except ValueError as e:
        raise at(file, ("merchants", i, "stores"), str(e)) from None


def _tls(c: schema.Connector, base: Path, state_dir: Path) -> TlsClientOptions | None:
    """The connector's client TLS: its files, the development PKI (``"dev"``), or none (``false``: plain TCP)."""
    if isinstance(c.tls, schema.TlsFiles):
        t = c.tls
        return TlsClientOptions(
            ca=_path(t.ca, base), cert=_path(t.cert, base) if t.cert else None,
            key=_path(t.key, base) if t.key else None, server_name=t.server_name,
        )
    if c.tls == "dev":
        pki = state_dir / "pki"
        return TlsClientOptions(pki / "ca.pem", pki / "client.pem", pki / "client.key", "localhost")
    return None


def _bank(file: Path, i: int, c: schema.Connector, base: Path, state_dir: Path) -> BankSettings:
    where = ("connectors", i)
    try:
        dialect = load_dialect(c.dialect, base)
    except DialectError as e:
        raise at(file, (*where, "dialect"), str(e)) from None
    tpdu = bytes.fromhex(c.tpdu) if c.tpdu is not None else None
    framing = Framing(c.framing, tpdu=tpdu is not None, includes_header=c.length_includes_header,
                      max_frame=c.max_frame)
    tls = _tls(c, base, state_dir)
    if c.reconnect_max < c.reconnect_initial:
        raise at(file, (*where, "reconnect_max"),
                 f"got {c.reconnect_max!r}; expected at least reconnect_initial ({c.reconnect_initial!r})")
    link_wide = {name: getattr(c, name) for name in LINK_WIDE}
    links = []
    for j, link in enumerate(c.links):
        try:
            links.append(LinkOptions(name=link.name or f"{c.name}-{j + 1}", host=link.host, port=link.port, tls=tls,
                                     **link_wide))
        except ValueError as e:
            raise at(file, (*where, "links", j), str(e)) from None
    match_keys = {mti: tuple(keys) for mti, keys in c.match_keys.items()} if c.match_keys is not None else None
    try:
        options = ConnectorOptions(
            name=c.name, dialect=dialect, framing=framing, tpdu=tpdu, links=tuple(links),
            pool_strategy=c.pool_strategy, request_timeout=c.request_timeout, max_in_flight=c.max_in_flight,
            late_response_window=c.late_response_window,
            **({"match_keys": match_keys} if match_keys is not None else {}),
        )
    except ValueError as e:
        raise at(file, where, str(e)) from None
    overrides = {code: Outcome(o.status, o.reason, o.retryable) for code, o in c.response_codes.items()}
    profile = AcquirerProfile(
        dialect=dialect, acquirer_id=c.acquirer_id,
        responses=ResponseTable.for_version(dialect.version, overrides, partial_approvals=c.partial_approvals),
        forwarding_id=c.forwarding_id, pos_entry_mode=c.pos_entry_mode, pos_condition_code=c.pos_condition_code,
        reversal=c.reversal,
    )
    if c.plugin is not None:
        try:
            plugin_class(c.plugin)
        except UnknownPlugin as e:
            raise at(file, (*where, "plugin"), str(e)) from None
    return BankSettings(options=options, profile=profile, saf=SafOptions(**c.saf.model_dump()), plugin=c.plugin,
                        dev_tls=c.tls == "dev", void_after_capture=c.void_after_capture,
                        confirmation_timeout=c.confirmation_timeout, day_end=_day_end(file, i, c))


def _day_end(file: Path, i: int, c: schema.Connector) -> DayEndOptions:
    try:
        zone(c.business_day_timezone)
    except ValueError as e:
        raise at(file, ("connectors", i, "business_day_timezone"), str(e)) from None
    return DayEndOptions(cutover_time=parse_hhmm(c.cutover_time) if c.cutover_time is not None else None,
                         timezone=c.business_day_timezone, reconciliation=c.reconciliation,
                         in_flight_wait=c.request_timeout + GRACE)


def _simulator(file: Path, i: int, s: schema.Simulator, base: Path,
               banks: Mapping[str, BankSettings]) -> SimulatorSettings:
    if s.connector not in banks:
        raise at(file, ("simulators", i, "connector"),
                 f"unknown connector {s.connector!r}; configured: {', '.join(sorted(banks))}")
    return SimulatorSettings(connector=s.connector, accounts=_path(s.accounts, base), extra_args=tuple(s.args),
                             ledger=s.ledger)
