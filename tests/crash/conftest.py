"""The crash test's marker: ``pytest -m crash`` runs it alone, ``-m 'not crash'`` skips it.

It is registered here rather than in pyproject.toml so that the crash suite is
self-contained; it runs in the default suite like every other test.
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "crash: kills a real kswitch process with SIGKILL under load and checks money invariants (tests/crash)",
    )
