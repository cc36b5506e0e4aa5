from __future__ import annotations

import pytest_twisted

from tests.e2e.harness import start_env, stop_env


@pytest_twisted.async_yield_fixture
async def env(tmp_path):
    e = await start_env(tmp_path)
    yield e
    await stop_env(e)


@pytest_twisted.async_yield_fixture
async def fast(tmp_path):
    """A switch whose banks time out after half a second: the money-safety tests' uncertain outcomes, quickly."""
    e = await start_env(tmp_path, request_timeout=0.5)
    yield e
    await stop_env(e)
