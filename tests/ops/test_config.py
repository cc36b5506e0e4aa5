"""Config validation at start-up: every mistake names the file, the key and what was expected."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from switch.ops.config import DEFAULT_CONFIG, load_config
from switch.ops.settings import ConfigError

REPO = Path(__file__).resolve().parents[2]


def _variant(tmp_path: Path, old: str, new: str) -> Path:
    text = DEFAULT_CONFIG.read_text()
    assert old in text, old
    path = tmp_path / "kswitch.toml"
    path.write_text(text.replace(old, new, 1))
    (tmp_path / "banksim-accounts.toml").write_text((DEFAULT_CONFIG.parent / "banksim-accounts.toml").read_text())
    return path


def test_the_shipped_default_config_loads():
    cfg = load_config()
    assert sorted(cfg.banks) == ["bank_a", "bank_b"] and cfg.api_listen == ("tcp:7583:interface=127.0.0.1",)
    assert cfg.banks["bank_a"].options.framing.tpdu and cfg.banks["bank_b"].profile.dialect.version == 1993
    assert cfg.banks["bank_a"].profile.dialect.name == "angkor" and cfg.banks["bank_b"].plugin == "sakura"
    day = cfg.banks["bank_a"].day_end
    assert (day.cutover_time.isoformat(), day.timezone, day.reconciliation) == ("23:59:00", "Asia/Phnom_Penh", "message")
    assert day.in_flight_wait == cfg.banks["bank_a"].options.request_timeout + 5.0
    assert [(sim.connector, sim.ledger) for sim in cfg.simulators] == [("bank_a", True), ("bank_b", True)]


def test_the_writer_process_yields_the_cpu_to_the_reactor_unless_told_otherwise(tmp_path):
    assert load_config().journal.writer_nice == 5
    assert load_config(_variant(tmp_path, "dev_keys = true", "dev_keys = true\nwriter_nice = 0")).journal.writer_nice == 0


def test_connection_timeouts_come_from_the_api_table(tmp_path):
    limits = load_config(_variant(tmp_path, "line_timeout = 30.0", "line_timeout = 5\nhello_timeout = 7")).api.limits
    assert (limits.line_timeout, limits.hello_timeout, limits.idle_timeout) == (5.0, 7.0, 300.0)


@pytest.mark.parametrize(
    "old, new, expected",
    [
        ('framing = "2b"', 'framing = "3b"', "connectors[0].framing: got '3b'; expected one of 2b, 4b, 2a, 4a, 2bcd"),
        ('cutover_time = "23:59"', 'cutover_time = "24:00"',
         "connectors[0].cutover_time: got '24:00'; expected a 24-hour time HH:MM such as 23:59"),
        ('business_day_timezone = "Asia/Tokyo"', 'business_day_timezone = "Asia/Atlantis"',
         "connectors[1].business_day_timezone: unknown time zone 'Asia/Atlantis'"),
        ('reconciliation = "message"     #', 'reconciliation = "file" #',
         "connectors[0].reconciliation: got 'file'; expected one of message, none"),
        ('tpdu = "6000010000"', 'tpdu = "60"', "connectors[0].tpdu: got '60'; expected 10 hex digits"),
        ('acquirer_id = "400001"', 'acquirer_id = "ABC"', "connectors[0].acquirer_id"),
        ('tls = "dev"                   #', '#', "connectors[0].tls: missing; expected a table"),
        ('port = 9601', 'port = 70000', "connectors[0].links[0].port: got 70000; expected an integer from 1 to 65535"),
        ('dialect = "angkor"', 'dialect = "iso99ascii"', "connectors[0].dialect: unknown dialect 'iso99ascii'"),
        ('log_level = "info"', 'log_level = "loud"', "switch.log_level: got 'loud'"),
        ('shutdown_grace = 10.0', 'shutdown_grace = 10.0\nshutdown_grace_seconds = 3', "switch.shutdown_grace_seconds: unknown key"),
        ('connector = "bank_a"\naccounts', 'connector = "bank_z"\naccounts', "simulators[0].connector: unknown connector 'bank_z'"),
        ('connectors = ["bank_b"]', 'connectors = ["bank_q"]', "unknown connector 'bank_q'"),
        ('mcc = "5999"', 'mcc = "59"', "merchants[0].mcc: got '59'; expected a 4-digit merchant category code"),
        ('merchants = ["M100"]', 'merchants = ["M999"]', "clients[0].merchants: unknown merchant 'M999'; configured: M100"),
        ('name = "bank_b"', 'name = "bank_a"', "connectors[1].name: connector 'bank_a' is configured twice"),
        ('backend = "sqlite"', 'backend = "oracle"', "journal.backend: got 'oracle'; expected one of sqlite, postgresql"),
        ('dev_keys = true', 'dev_keys = true\nwriter_nice = 20',
         "journal.writer_nice: got 20; expected an integer from 0 to 19"),
        ('dev_keys = true', 'dev_keys = true\nwriter_nice = -5',
         "journal.writer_nice: got -5; expected an integer from 0 to 19"),
        ("idle_timeout = 300.0", "idle_timeout = -1", "api.idle_timeout: got -1; expected a number of seconds >= 0"),
        # a wrong type is refused, never converted
        ('request_timeout = 10.0', 'request_timeout = "10"',
         "connectors[0].request_timeout: got '10'; expected a number of seconds > 0"),
        ('sign_on = true', 'sign_on = 1', "connectors[0].sign_on: got 1; expected true or false"),
        # nested keys are named by their full path
        ('tls = "dev"                   #', 'saf = { max_attempts = 0 }\ntls = "dev" #',
         "connectors[0].saf.max_attempts: got 0; expected an integer >= 1"),
        ('tls = "dev"                   #', 'saf = { max_atempts = 3 }\ntls = "dev" #',
         "connectors[0].saf.max_atempts: unknown key; did you mean max_attempts? expected one of: retry_interval,"),
        ('tls = "dev"                   #', 'tls = { ca = "ca.pem", cert = "c.pem", keyfile = "k.pem" } #',
         "connectors[0].tls.keyfile: unknown key; did you mean key? expected one of: ca, cert, key, server_name"),
        ('tls = "dev"                   #', 'tls = "prod" #',
         "connectors[0].tls: got 'prod'; expected a table { ca, cert, key, server_name }, \"dev\", or false"),
        ('shutdown_grace = 10.0', 'shutdown_grace = 10.0\nnode = 10', "switch.node: got 10; expected an integer from 0 to 9"),
        ('links = [{ host = "127.0.0.1", port = 9601 }]', 'links = []',
         "connectors[0].links: got []; expected a non-empty list of tables"),
        ('postgres_dsn =', 'postgres_schema = "Kswitch"\npostgres_dsn =',
         "journal.postgres_schema: got 'Kswitch'; expected a lower-case SQL identifier"),
        ('sign_on = true', 'sign_on = true\nreconnect_max = 0.1',
         "connectors[0].reconnect_max: got 0.1; expected at least reconnect_initial (0.5)"),
        # endpoint strings are parsed at check-config time, not when the switch is half started
        ('listen = ["tcp:7583:interface=127.0.0.1"]', 'listen = ["tcp:7583:interfase=127.0.0.1"]',
         "api.listen[0]: got 'tcp:7583:interfase=127.0.0.1'; expected an endpoint description Twisted can parse"),
        ('listen = ["tcp:7583:interface=127.0.0.1"]', 'listen = ["tcp:7583:interface=127.0.0.1", "tls:7584:certKey=nope.pem"]',
         "api.listen[1]: got 'tls:7584:certKey=nope.pem'; expected an endpoint description Twisted can parse"),
        ('listen = "tcp:9583:interface=127.0.0.1"', 'listen = "htpp:9583"',
         "admin.listen: got 'htpp:9583'; expected an endpoint description Twisted can parse (ValueError: Unknown endpoint"),
        ('listen = "tcp:9583:interface=127.0.0.1"', 'listen = "tcp:95830:interface=127.0.0.1"',
         "admin.listen: got 'tcp:95830:interface=127.0.0.1'; expected a port from 0 to 65535"),
    ],
)
def test_mistakes_name_file_key_and_expectation(tmp_path, old, new, expected):
    path = _variant(tmp_path, old, new)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(path) in str(e.value) and expected in str(e.value)


def test_demo_token_is_refused_on_a_non_loopback_address(tmp_path):
    path = _variant(tmp_path, 'listen = ["tcp:7583:interface=127.0.0.1"]', 'listen = ["tcp:7583:interface=0.0.0.0"]')
    with pytest.raises(ConfigError, match="demo token .* not a loopback address"):
        load_config(path)


def test_kswitch_check_config_prints_one_line_without_traceback(tmp_path):
    path = _variant(tmp_path, 'framing = "4a"', 'framing = "4x"')
    run = subprocess.run([sys.executable, str(REPO / "bin" / "kswitch"), "check-config", "--config", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip() == f"kswitch: {path}: connectors[1].framing: got '4x'; expected one of 2b, 4b, 2a, 4a, 2bcd"


@pytest.mark.parametrize("command", ["check-config", "run"])
def test_a_bad_endpoint_stops_check_config_and_run_in_one_line(tmp_path, command):
    path = _variant(tmp_path, 'listen = "tcp:9583:interface=127.0.0.1"', 'listen = "tcp:port=http"')
    run = subprocess.run([sys.executable, str(REPO / "bin" / "kswitch"), command, "--config", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "Traceback" not in run.stderr and run.stderr.count("\n") == 1
    assert run.stderr.startswith(f"kswitch: {path}: admin.listen: got 'tcp:port=http'; expected an endpoint description")


def test_kswitch_route_explains_without_sending():
    run = subprocess.run([sys.executable, str(REPO / "bin" / "kswitch"), "route", "--pan", "5555555555554444",
                          "--amount", "1250", "--currency", "USD"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.startswith("rule 'mastercard'") and "bank_b" in run.stdout
