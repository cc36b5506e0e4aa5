"""config/alerts.yml: valid Prometheus rules (promtool, where installed) naming metrics the switch exports."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "config" / "alerts.yml"


def _defined_metric_names() -> str:
    return "\n".join(p.read_text() for p in (ROOT / "switch").rglob("*.py"))


def test_every_metric_an_alert_reads_is_one_the_switch_defines():
    source = _defined_metric_names()
    used = set(re.findall(r"\bkswitch_[a-z_]+", ALERTS.read_text()))
    assert {"kswitch_reconciliation_in_balance", "kswitch_cutover_due_timestamp_seconds"} <= used
    missing = [name for name in sorted(used)
               if not any(f'"{base}"' in source for base in {re.sub(r"_(bucket|sum|count)$", "", name),
                                                               re.sub(r"_total$", "", name)})]
    assert missing == []


def test_every_alert_names_a_severity_and_a_summary():
    text = ALERTS.read_text()
    alerts = re.findall(r"- alert: (\w+)", text)
    assert "KswitchDayOutOfBalance" in alerts and "KswitchCutoverMissed" in alerts
    assert text.count("severity:") == len(alerts) and text.count("summary:") == len(alerts)


@pytest.mark.skipif(shutil.which("promtool") is None and not os.environ.get("KSWITCH_REQUIRE_PROMTOOL"),
                    reason="promtool not installed (CI installs it and sets KSWITCH_REQUIRE_PROMTOOL=1)")
def test_promtool_accepts_the_rules():
    done = subprocess.run(["promtool", "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.skipif(shutil.which("promtool") is None and not os.environ.get("KSWITCH_REQUIRE_PROMTOOL"),
                    reason="promtool not installed (CI installs it and sets KSWITCH_REQUIRE_PROMTOOL=1)")
def test_the_day_end_and_flow_control_alerts_fire_when_they_should_and_only_then():
    tests = ALERTS.with_name("alerts.test.yml")
    done = subprocess.run(["promtool", "test", "rules", str(tests)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
