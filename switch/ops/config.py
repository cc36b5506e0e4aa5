"""The switch's TOML configuration: read once at start-up, validated completely.

Everything is checked before anything starts (dialect files loaded, framings known,
routes pointing at configured connectors, merchants' stores present), so a mistake
stops the switch with one line naming the file, the key and what was expected,
instead of failing at the first payment.  Relative paths are relative to the
directory of the config file.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from connectors import UnknownPlugin, plugin_class
from switch.bank.connector import ConnectorOptions, LinkOptions, TlsClientOptions
from switch.bank.pool import STRATEGIES
from switch.domain.merchant import MerchantConfig, StoreConfig
from switch.engine.confirmation import DEFAULT_TIMEOUT
from switch.engine.notify import NotifyOptions
from switch.engine.router import Router
from switch.engine.saf import SafOptions
from switch.gateway.config import ApiConfig, ApiLimits, ClientConfig
from switch.iso.dialect import DialectError, load_dialect
from switch.iso.framing import FRAMING_NAMES, TPDU_LENGTH, Framing
from switch.iso.responses import APPROVED, DECLINED, FAILED, Outcome, ResponseTable
from switch.iso.translate import AcquirerProfile
from switch.journal.config import JournalConfig, SecretSource
from switch.ops.routes import parse_rules
from switch.ops.settings import ConfigError, Table

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "config" / "kswitch.toml"
LOOPBACK = ("127.0.0.1", "::1", "localhost")
DEMO_TOKEN = "demo-token-not-for-production"


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


@dataclass(frozen=True)
class SimulatorSettings:
    """A banksim the switch starts itself, speaking its connector's dialect on the first link's address."""

    connector: str
    accounts: Path
    extra_args: tuple[str, ...] = ()


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
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

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
    base = file.resolve().parent
    top = Table(doc, file)

    sw = top.table("switch")
    state_dir = sw.path("state_dir", base, base / "var")
    log_format = sw.str("log_format", "auto", ("auto", "json", "console"))
    log_level = sw.str("log_level", "info", ("debug", "info", "warning", "error"))
    shutdown_grace = sw.float("shutdown_grace", 10.0)
    node = sw.int("node", None, lo=0, hi=9)
    sw.done()

    api_t = top.table("api")
    listen = tuple(api_t.str_list("listen", ["tcp:7583:interface=127.0.0.1"]))
    if not listen:
        raise api_t.error("listen", "expected at least one endpoint description such as tcp:7583:interface=127.0.0.1")
    limits = ApiLimits(
        max_line_bytes=api_t.int("max_line_bytes", 65536, lo=1024, hi=16 * 1024 * 1024),
        max_in_flight=api_t.int("max_in_flight", 256, lo=1),
        max_connections=api_t.int("max_connections", 1024, lo=1),
        hello_timeout=api_t.float("hello_timeout", 30.0),
        line_timeout=api_t.float("line_timeout", 30.0),
        idle_timeout=api_t.float("idle_timeout", 300.0),
    )
    api_t.done()

    admin_t = top.table("admin")
    admin_listen = admin_t.str("listen", "tcp:9583:interface=127.0.0.1")
    admin_t.done()

    journal, dev_keys = _journal(top.table("journal"), state_dir)

    notify_t = top.table("notifications")
    notify = NotifyOptions(
        poll_interval=notify_t.float("poll_interval", 0.2, lo=0.01),
        max_unacked=notify_t.int("max_unacked", 100, lo=1),
    )
    notify_t.done()

    merchants = [_merchant(t) for t in top.tables("merchants", required=True)]
    clients = [_client(t) for t in top.tables("clients", required=True)]
    try:
        api = ApiConfig.build(clients, merchants, limits)
    except ValueError as e:
        raise top.error("clients", str(e)) from None
    _refuse_demo_token_off_loopback(top, clients, listen)

    banks: dict[str, BankSettings] = {}
    for t in top.tables("connectors", required=True):
        bank = _bank(t, base, state_dir)
        if bank.options.name in banks:
            raise t.error("name", f"connector {bank.options.name!r} is configured twice")
        banks[bank.options.name] = bank

    simulators = tuple(_simulator(t, base, banks) for t in top.tables("simulators"))
    router = parse_rules(top.tables("routes"), banks)
    top.done()
    return SwitchConfig(
        file=file, state_dir=state_dir, log_format=log_format, log_level=log_level,
        shutdown_grace=shutdown_grace, api_listen=listen, api=api, admin_listen=admin_listen,
        journal=journal, dev_keys=dev_keys, banks=banks, simulators=simulators, router=router,
        node=node, notify=notify, raw=doc,
    )


def _refuse_demo_token_off_loopback(top: Table, clients: list[ClientConfig], listen: tuple[str, ...]) -> None:
    """The demo token is public (it is in this repository): never accept it from a network."""
    if not any(c.token == DEMO_TOKEN for c in clients):
        return
    for endpoint in listen:
        kind = endpoint.split(":", 1)[0]
        interface = next((p.split("=", 1)[1] for p in endpoint.split(":") if p.startswith("interface=")), "")
        if kind in ("tcp", "ssl", "tcp6") and interface.strip("[]") not in LOOPBACK:
            raise top.error(
                "clients",
                f"the demo token {DEMO_TOKEN!r} is configured while the API listens on {endpoint!r}, "
                "which is not a loopback address; set a secret token for every client first",
            )


def _secret(t: Table, key: str, state_dir: Path, dev_file: str, dev: bool) -> SecretSource:
    if t.has(f"{key}_file"):
        return SecretSource(file=t.path(f"{key}_file", state_dir))
    if t.has(f"{key}_env"):
        return SecretSource(env=t.str(f"{key}_env"))
    if dev:
        return SecretSource(file=state_dir / "keys" / dev_file)
    raise t.error(f"{key}_file", f"missing; expected {key}_file (a path) or {key}_env (an environment variable name), "
                                 "or dev_keys = true for a development set-up")


def _journal(t: Table, state_dir: Path) -> tuple[JournalConfig, bool]:
    dev = t.bool("dev_keys", False)
    backend = t.str("backend", "sqlite", ("sqlite", "postgresql"))
    cfg = JournalConfig(
        backend=backend,
        sqlite_path=t.path("sqlite_path", state_dir, state_dir / "journal.sqlite3"),
        pg_dsn=t.str("postgres_dsn", "postgresql://postgres@127.0.0.1:5432/kswitch"),
        pg_schema=t.str("postgres_schema", "kswitch"),
        pan_keys=_secret(t, "pan_keys", state_dir, "pan-keys", dev),
        pan_current_key_id=t.str("pan_current_key_id", None),
        pan_hash_secret=_secret(t, "pan_hash_secret", state_dir, "pan-hash-secret", dev),
        max_batch=t.int("max_batch", 256, lo=1),
    )
    t.done()
    return cfg, dev


def _merchant(t: Table) -> MerchantConfig:
    stores = []
    for st in t.tables("stores", required=True):
        stores.append(StoreConfig(id=st.str("id"), terminal_id=st.str("terminal_id")))
        st.done()
    mcc = t.str("mcc")
    if not (len(mcc) == 4 and mcc.isdigit()):
        raise t.error("mcc", f"got {mcc!r}; expected a 4-digit merchant category code")
    try:
        m = MerchantConfig.with_stores(
            stores, id=t.str("id"), name=t.str("name"), mcc=mcc, city=t.str("city"),
            country=t.str("country"), acquirer_merchant_id=t.str("acquirer_merchant_id"),
        )
    except ValueError as e:
        raise t.error("stores", str(e)) from None
    t.done()
    return m


def _client(t: Table) -> ClientConfig:
    token = t.str("token")
    if len(token) < 16:
        raise t.error("token", "expected at least 16 characters")
    c = ClientConfig(
        name=t.str("name"), token=token, merchant_ids=frozenset(t.str_list("merchants")),
        certificate_cn=t.str("certificate_cn", None),
    )
    t.done()
    return c


def _tls(t: Table, base: Path, state_dir: Path) -> tuple[TlsClientOptions | None, bool]:
    raw = t.raw("tls")
    if raw is None:
        raise t.error("tls", "missing; expected a table { ca, cert, key, server_name }, \"dev\", "
                             "or false for plain TCP (must be explicit)")
    if raw is False:
        return None, False
    if raw == "dev":
        pki = state_dir / "pki"
        return TlsClientOptions(pki / "ca.pem", pki / "client.pem", pki / "client.key", "localhost"), True
    if not isinstance(raw, dict):
        raise t.error("tls", f"got {raw!r}; expected a table, \"dev\" or false")
    tt = t.table("tls")
    opts = TlsClientOptions(
        ca=tt.path("ca", base), cert=tt.path("cert", base, None), key=tt.path("key", base, None),
        server_name=tt.str("server_name", None),
    )
    tt.done()
    return opts, False


def _responses(t: Table, version: int) -> ResponseTable:
    overrides: dict[str, Outcome] = {}
    rt = t.table("response_codes")
    for code in list(rt.data):
        entry = rt.table(code)
        overrides[code] = Outcome(
            entry.str("status", None, (APPROVED, DECLINED, FAILED)) or DECLINED,
            entry.str("reason"),
            entry.bool("retryable", False),
        )
        entry.done()
    rt.done()
    return ResponseTable.for_version(version, overrides, partial_approvals=t.bool("partial_approvals", False))


def _bank(t: Table, base: Path, state_dir: Path) -> BankSettings:
    name = t.str("name")
    try:
        dialect = load_dialect(t.str("dialect"), base)
    except DialectError as e:
        raise t.error("dialect", str(e)) from None
    framing_name = t.str("framing", None, FRAMING_NAMES)
    if framing_name is None:
        raise t.error("framing", f"missing; expected one of {', '.join(FRAMING_NAMES)}")
    tpdu_hex = t.str("tpdu", None)
    tpdu = None
    if tpdu_hex is not None:
        try:
            tpdu = bytes.fromhex(tpdu_hex)
        except ValueError:
            tpdu = b""
        if len(tpdu) != TPDU_LENGTH:
            raise t.error("tpdu", f"got {tpdu_hex!r}; expected {TPDU_LENGTH * 2} hex digits (ID, destination, source)")
    framing = Framing(
        framing_name, tpdu=tpdu is not None, includes_header=t.bool("length_includes_header", False),
        max_frame=t.int("max_frame", 8192, lo=64, hi=65535),
    )
    tls, dev_tls = _tls(t, base, state_dir)
    link_defaults = dict(
        connect_timeout=t.float("connect_timeout", 10.0),
        reconnect_initial=t.float("reconnect_initial", 0.5),
        reconnect_max=t.float("reconnect_max", 30.0),
        reconnect_factor=t.float("reconnect_factor", 2.0, lo=1.0),
        reconnect_jitter=t.float("reconnect_jitter", 0.2),
        sign_off_on_stop=t.bool("sign_off_on_stop", True),
        sign_on=t.bool("sign_on", False),
        sign_on_code=t.str("sign_on_code", None),
        echo_interval=t.float("echo_interval", 30.0),
        echo_timeout=t.float("echo_timeout", 10.0),
        echo_max_failures=t.int("echo_max_failures", 3, lo=1),
    )
    links = []
    for i, lt in enumerate(t.tables("links", required=True)):
        links.append(_link(lt, f"{name}-{i + 1}", tls, link_defaults))
    if not links:
        raise t.error("links", "expected at least one { host, port }")
    match_raw = t.table("match_keys")
    match_keys = {k: tuple(match_raw.str_list(k)) for k in list(match_raw.data)}
    match_raw.done()
    try:
        options = ConnectorOptions(
            name=name, dialect=dialect, framing=framing, tpdu=tpdu, links=tuple(links),
            pool_strategy=t.str("pool_strategy", "primary-secondary", tuple(STRATEGIES)),
            request_timeout=t.float("request_timeout", 30.0),
            max_in_flight=t.int("max_in_flight", 1000, lo=1),
            late_response_window=t.float("late_response_window", 120.0, lo=0.0),
            **({"match_keys": match_keys} if match_keys else {}),
        )
    except ValueError as e:
        raise t.error(None, str(e)) from None
    acquirer_id = t.str("acquirer_id")
    if not (acquirer_id.isdigit() and len(acquirer_id) <= 11):
        raise t.error("acquirer_id", f"got {acquirer_id!r}; expected 1 to 11 digits (field 32)")
    profile = AcquirerProfile(
        dialect=dialect, acquirer_id=acquirer_id, responses=_responses(t, dialect.version),
        forwarding_id=t.str("forwarding_id", ""),
        pos_entry_mode=t.str("pos_entry_mode", None),
        pos_condition_code=t.str("pos_condition_code", "59"),
        reversal=t.str("reversal", "reversal", ("reversal", "reversal_advice")),
    )
    saf_t = t.table("saf")
    saf = SafOptions(
        retry_interval=saf_t.float("retry_interval", 30.0, lo=0.01),
        backoff=saf_t.float("backoff", 2.0, lo=1.0),
        max_interval=saf_t.float("max_interval", 600.0, lo=0.01),
        max_attempts=saf_t.int("max_attempts", 10, lo=1),
        response_timeout=saf_t.float("response_timeout", None, lo=0.01),
        max_in_flight=saf_t.int("max_in_flight", 4, lo=1),
    )
    saf_t.done()
    plugin = t.str("plugin", None)
    if plugin is not None:
        try:
            plugin_class(plugin)
        except UnknownPlugin as e:
            raise t.error("plugin", str(e)) from None
    void_after_capture = t.bool("void_after_capture", False)
    confirmation_timeout = t.float("confirmation_timeout", DEFAULT_TIMEOUT, lo=1.0)
    t.done()
    return BankSettings(options=options, profile=profile, saf=saf, plugin=plugin, dev_tls=dev_tls,
                        void_after_capture=void_after_capture, confirmation_timeout=confirmation_timeout)


def _link(t: Table, default_name: str, tls: TlsClientOptions | None, defaults: dict[str, Any]) -> LinkOptions:
    try:
        opts = LinkOptions(
            name=t.str("name", default_name), host=t.str("host"), port=t.int("port", lo=1, hi=65535), tls=tls,
            **defaults,
        )
    except ValueError as e:
        raise t.error(None, str(e)) from None
    t.done()
    return opts


def _simulator(t: Table, base: Path, banks: Mapping[str, BankSettings]) -> SimulatorSettings:
    connector = t.str("connector")
    if connector not in banks:
        raise t.error("connector", f"unknown connector {connector!r}; configured: {', '.join(sorted(banks))}")
    sim = SimulatorSettings(
        connector=connector, accounts=t.path("accounts", base), extra_args=tuple(t.str_list("args", [])),
    )
    t.done()
    return sim
