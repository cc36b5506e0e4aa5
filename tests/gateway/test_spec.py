"""The spec and its JSON Schema stay in step with the code they describe."""

from __future__ import annotations

import json
from pathlib import Path

from switch.domain.currency import CURRENCIES
from switch.gateway.answers import STATUSES, TRANSACTION_FIELDS
from switch.gateway.errors import ErrorCode
from switch.gateway.ops import default_operations
from switch.gateway.validate import MAX_AMOUNT

SPECS = Path(__file__).resolve().parents[2] / "specs"
SCHEMA = json.loads((SPECS / "socket-api.schema.json").read_text())
DEFS = SCHEMA["$defs"]
SPEC = (SPECS / "socket-api.md").read_text()


def test_schema_is_draft_2020_12_and_lists_what_the_code_accepts():
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert DEFS["currency"]["enum"] == sorted(CURRENCIES)
    assert sorted(DEFS["request"]["properties"]["op"]["enum"]) == list(default_operations())
    assert DEFS["authorizeRequest"]["properties"]["amount"]["maximum"] == MAX_AMOUNT


def test_schema_lists_what_the_code_answers():
    assert DEFS["errorAnswer"]["properties"]["error"]["properties"]["code"]["enum"] == [c.value for c in ErrorCode]
    assert DEFS["transactionAnswer"]["required"] == ["id", "ok", *TRANSACTION_FIELDS]
    assert DEFS["transactionAnswer"]["properties"]["status"]["enum"] == list(STATUSES)


def test_the_document_covers_every_op_error_code_and_status():
    for name in [*default_operations(), *(c.value for c in ErrorCode), *STATUSES]:
        assert f"`{name}`" in SPEC, name


def test_every_example_line_in_the_document_is_json():
    examples = [line[2:] for line in SPEC.splitlines() if line.startswith(("> {", "< {"))]
    assert len(examples) > 10
    for line in examples:
        assert isinstance(json.loads(line), dict)
