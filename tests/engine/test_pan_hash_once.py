"""A payment's card is hashed once (HMAC-SHA-256 under the journal's secret), whichever of the request
hash (an idempotency key), the risk stage and the journal's row needs it first."""

from __future__ import annotations

import pytest
import pytest_twisted
from prometheus_client import CollectorRegistry
from twisted.internet import reactor

from switch.domain.currency import by_alpha
from switch.domain.model import AuthorizeRequest, CardInstrument
from switch.ops.config import DEFAULT_CONFIG, load_config
from switch.tools.bench.risk import BANK, instant_services
from tests.journal.conftest import clock, config, journal, key_files, pg_schema, registry  # noqa: F401


@pytest.fixture
def backend() -> str:
    """SQLite only: how often a card is hashed does not depend on the journal's backend."""
    return "sqlite"


@pytest.mark.parametrize("with_stage", [True, False])
@pytest.mark.parametrize("key", ["order-1-attempt", None])
@pytest_twisted.ensureDeferred
async def test_a_payment_hashes_its_card_once(journal, monkeypatch, with_stage, key):
    services, _ = await instant_services(reactor, journal, load_config(DEFAULT_CONFIG), CollectorRegistry())
    hashed: list[str] = []
    real = journal.vault.pan_hash
    monkeypatch.setattr(journal.vault, "pan_hash", lambda pan: hashed.append(pan[-4:]) or real(pan))
    usd = by_alpha("USD")
    assert usd is not None
    request = AuthorizeRequest("M100", "web", "o-1", 1250, usd, True, CardInstrument("4111111111111111", "3012"),
                               bank=BANK, idempotency_key=key)
    answer = await services[with_stage].authorize(request, "test")
    assert answer["status"] == "approved"
    assert hashed == ["1111"]
    row = await journal.get_transaction(answer["txn_id"])
    assert row.pan_hash == real("4111111111111111")
