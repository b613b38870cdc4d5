"""Large notifications end to end (the stack's ingest, 8 MiB limit, and the real broker).

aiokafka refuses records over its 1 MiB default request size, so a valid notification above it used to get
503 for ever, and a bad body over ~780 KB (base64 in the quarantine record) 503 instead of 400. The limits
now agree: ingest's ``max_body_bytes`` (8 MiB), the producers' request size and the topics'
``max.message.bytes`` (``kafka.max_message_bytes``, 10 MiB), and a quarantine record keeps the body's size,
hash and first ``quarantine_max_bytes``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from typing import Any

import httpx
import pytest

from ehrflow_contracts import topics
from ehrflow_devstack import samples
from ehrflow_devstack.config import WEBHOOK_HEADER
from ehrflow_devstack.kafka_read import read_topic
from ehrflow_devstack.stack import Stack

pytestmark = pytest.mark.integration

LIMIT = 8 * 1024 * 1024  # the stack's ingest runs with the default max_body_bytes


def _notification_of(size: int, marker: str) -> bytes:
    """A valid R4 backport notification of exactly ``size`` bytes: one Observation with a long note."""
    observation = samples.observation(marker)
    observation["note"] = [{"text": ""}]
    body = samples.r4_backport(events=[(1, observation)], subscription=marker)
    empty = len(json.dumps(body).encode())
    observation["note"][0]["text"] = "x" * (size - empty)
    raw = json.dumps(body).encode()
    assert len(raw) == size
    return raw


def _post(stack: Stack, raw: bytes) -> httpx.Response:
    assert stack.config
    headers = {"Content-Type": "application/fhir+json", WEBHOOK_HEADER: stack.config.webhook_secret("org1")}
    return httpx.post(f"{stack.urls['ingest']}/v1/notify/org1", content=raw, headers=headers, timeout=60)


def _events_about(stack: Stack, marker: str) -> list[dict[str, Any]]:
    assert stack.broker
    return [
        e
        for e in read_topic(stack.broker.url, topics.NOTIFICATION_RECEIVED)
        if (e.get("focus") or {}).get("reference") == f"Observation/{marker}"
    ]


@pytest.mark.parametrize("size", [1_500_000, LIMIT], ids=["over-aiokafkas-1MiB-default", "at-the-limit"])
def test_a_valid_notification_up_to_the_limit_is_on_kafka(stack: Stack, size: int) -> None:
    marker = f"large-{uuid.uuid4().hex[:8]}"
    answer = _post(stack, _notification_of(size, marker))
    assert answer.status_code == 200, answer.text
    [event] = _events_about(stack, marker)
    assert len(event["resource"]["note"][0]["text"]) > size - 2048


def test_one_byte_over_the_limit_is_413_with_the_limit(stack: Stack) -> None:
    marker = f"over-{uuid.uuid4().hex[:8]}"
    answer = _post(stack, _notification_of(LIMIT + 1, marker))
    assert answer.status_code == 413
    assert answer.json()["issue"][0]["diagnostics"] == f"body exceeds the limit of {LIMIT} bytes"
    assert _events_about(stack, marker) == []


def test_a_large_bad_body_is_400_and_quarantined_by_size_hash_and_start(stack: Stack) -> None:
    assert stack.broker
    raw = b"{" + uuid.uuid4().hex.encode() + b"!" * (LIMIT - 33)  # not JSON, exactly at the limit
    assert len(raw) == LIMIT
    answer = _post(stack, raw)
    assert answer.status_code == 400, answer.text
    digest = hashlib.sha256(raw).hexdigest()
    [kept] = [q for q in read_topic(stack.broker.url, topics.NOTIFICATION_QUARANTINED) if q["body_sha256"] == digest]
    assert (kept["body_bytes"], kept["truncated"]) == (LIMIT, True)
    assert raw.startswith(base64.b64decode(kept["body_base64"]))
    assert len(base64.b64decode(kept["body_base64"])) == 256 * 1024
