"""Suite-wide set-up: every structlog line the suite produces is also written to one file,
and the session fails if any of them holds a full PAN, a CVV or track data. Every journal writer unit
is sent through pickle, as a writer process receives it (`switch.journal.writer.CHECK_PICKLABLE`)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

from switch.journal import writer
from switch.observe import logs
from tests.cardscan import scan

LOG_FILE = Path(os.environ.get("KSWITCH_TEST_LOG", Path(tempfile.gettempdir()) / f"kswitch-test-logs-{os.getpid()}.jsonl"))


class _Tee:
    """Writes to the suite log file and to whatever sys.stdout is now (pytest's capture). The file is closed
    once the session's scan has read it; what is logged after that (the reactor's shutdown, at exit) goes to
    sys.stdout alone, instead of failing on the closed file."""

    def __init__(self, path: Path) -> None:
        self.file = path.open("w", encoding="utf-8")

    def write(self, text: str) -> int:
        if not self.file.closed:
            self.file.write(text)
        return sys.stdout.write(text)

    def flush(self) -> None:
        if not self.file.closed:
            self.file.flush()
        sys.stdout.flush()

    def isatty(self) -> bool:
        return False


def pytest_configure(config: pytest.Config) -> None:
    writer.CHECK_PICKLABLE = True  # every unit and its outcome crosses a pickle, as to a writer process
    config._kswitch_tee = _Tee(LOG_FILE)  # type: ignore[attr-defined]
    logs.configure("json", stream=config._kswitch_tee, level="debug")  # type: ignore[attr-defined]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    tee = getattr(session.config, "_kswitch_tee", None)
    if tee is None:
        return
    tee.file.close()
    with LOG_FILE.open(encoding="utf-8") as f:
        leaks = list(scan(f))
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if leaks:
        if reporter is not None:
            reporter.write_line(f"CARD DATA IN LOGS: {len(leaks)} line(s) of {LOG_FILE} hold card data:", red=True)
            for number, kinds in leaks[:20]:
                reporter.write_line(f"  line {number}: {', '.join(kinds)}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    elif reporter is not None:
        reporter.write_line(f"card-data scan: no full PAN, CVV or track data in {LOG_FILE}")
