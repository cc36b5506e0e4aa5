"""The chaos test's marker: ``pytest -m chaos`` runs it alone, ``-m 'not chaos'`` skips it."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "chaos: whole payment lifecycles under bank faults, bank restarts and SIGKILLs of kswitch (tests/chaos)",
    )
