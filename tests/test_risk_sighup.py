"""SIGHUP reloads the demo switch's risk rules without a restart; a bad file keeps the rules in force."""

from __future__ import annotations

import signal

import pytest
import pytest_twisted

from tests.crash.harness import SwitchProcess, remove_dir, short_run_dir
from tests.e2e.harness import eventually
from tests.test_run_stop import demo_config, events


@pytest.mark.timeout(100)
@pytest_twisted.ensureDeferred
async def test_sighup_reloads_risk_rules_and_a_bad_file_keeps_them(tmp_path):
    run_dir = short_run_dir()
    cfg_file = demo_config(tmp_path, run_dir)
    switch = SwitchProcess(cfg_file, tmp_path, run_dir / "admin.sock")
    try:
        switch.start()
        await switch.wait_ready(30.0)
        assert switch.proc is not None

        def logged(name: str) -> list[dict]:
            return [e for e in events(switch.logs[-1]) if e["event"] == name]

        text = cfg_file.read_text()
        cfg_file.write_text(text.replace('name = "card-velocity"', 'name = "card-velocity-2"'))
        switch.proc.send_signal(signal.SIGHUP)
        loaded = await eventually(lambda: logged("risk_rules_loaded"), timeout=20)
        assert "card-velocity-2" in loaded[-1]["rules"]

        cfg_file.write_text(text.replace("max_count = 10", "max_count = 0"))
        switch.proc.send_signal(signal.SIGHUP)
        refused = await eventually(lambda: logged("risk_reload_refused"), timeout=20)
        assert "risk.rules[3].max_count" in refused[0]["error"]
        assert len(logged("risk_rules_loaded")) == 1 and switch.proc.poll() is None
    finally:
        switch.abort()
        remove_dir(run_dir)
