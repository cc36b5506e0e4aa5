"""What a `kswitch` command imports before it does anything: every operator command and every start pays for it.
psycopg takes a tenth of a second or more to import, and a switch whose journal is SQLite never needs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
from switch.cli import main
from switch.journal.config import JournalConfig
from switch.journal.journal import backend_for
backend_for(JournalConfig(backend="sqlite", sqlite_path=sys.argv[1]))
before = "psycopg" in sys.modules
backend_for(JournalConfig(backend="postgresql", pg_dsn="postgresql://nobody@127.0.0.1:1/none"))
print(json.dumps([before, "psycopg" in sys.modules]))
"""


def test_a_sqlite_switch_never_imports_psycopg_and_a_postgresql_one_does(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "journal.sqlite3")], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [False, True]
