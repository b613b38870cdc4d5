"""The committed contract JSON Schemas are what the code declares (``make docs`` regenerates them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ehrflow_inference.cli import contract_schemas

DOCS = Path(__file__).resolve().parents[1] / "docs" / "contracts"


@pytest.mark.parametrize("workflow", sorted(contract_schemas()))
def test_committed_schema_is_current(workflow: str) -> None:
    committed = (DOCS / f"{workflow}.schema.json").read_text(encoding="utf-8")
    assert committed == contract_schemas()[workflow], f"docs/contracts/{workflow}.schema.json is stale: run `make docs`"


def test_no_schema_of_a_workflow_that_is_gone() -> None:
    assert sorted(p.name for p in DOCS.glob("*.schema.json")) == [
        f"{w}.schema.json" for w in sorted(contract_schemas())
    ]
