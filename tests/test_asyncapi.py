"""The committed AsyncAPI documents are what the code declares (``make asyncapi`` regenerates them)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ehrflow_contracts import topics
from ehrflow_devstack.asyncapi import render

DOCS = Path(__file__).resolve().parents[1] / "docs" / "asyncapi"


@pytest.mark.parametrize("service", ["auth", "ingest", "inference", "writeback"])
def test_committed_document_matches_the_code(service: str) -> None:
    committed = (DOCS / f"{service}.yaml").read_text(encoding="utf-8")
    assert committed == render()[service], f"docs/asyncapi/{service}.yaml is stale: run `make asyncapi`"


def test_every_topic_is_documented() -> None:
    addresses = {
        channel["address"] for text in render().values() for channel in yaml.safe_load(text)["channels"].values()
    }
    assert addresses == set(topics.ALL)
