from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted
import structlog
from prometheus_client import CollectorRegistry

from switch.ops.devcerts import DevPki, make_dev_pki
from tests.bank.support import Harness


@pytest.fixture(autouse=True)
def logs():
    with structlog.testing.capture_logs() as entries:
        yield entries


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def pki(tmp_path: Path) -> DevPki:
    return make_dev_pki(tmp_path / "pki")


@pytest_twisted.async_yield_fixture
async def harness(registry: CollectorRegistry):
    h = Harness(registry)
    yield h
    await h.close()
