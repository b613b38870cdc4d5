"""The Subscription resources the manager asks an EHR for, and when it finds one out of date.

The manager's conversation with a real EHR (create, notice ``error``, re-activate, backfill) is tested
against SEKMET in tests/integration/test_ingest_self_healing.py.
"""

from __future__ import annotations

from ehrflow_ingest.manager import TAG_SYSTEM, desired, differs, endpoint_of
from ehrflow_runtime.organizations import DeclaredSubscription

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"


def test_endpoint_is_the_per_subscription_route() -> None:
    assert endpoint_of("https://x.org/ingest/", "org1", "vitals") == "https://x.org/ingest/v1/notify/org1/sub/vitals"


def test_a_topic_subscription_uses_the_backport_profile_filter_content_and_heartbeat() -> None:
    decl = DeclaredSubscription(
        name="vitals", criteria="Observation?code=a|b", topic="https://t/vitals", content="id-only", heartbeat_s=60
    )
    sub = desired(decl, endpoint="https://x/e", header="X-Secret", secret="s3")
    assert sub["criteria"] == "https://t/vitals"
    assert sub["_criteria"]["extension"] == [
        {"url": f"{BACKPORT}/backport-filter-criteria", "valueString": "Observation?code=a|b"}
    ]
    assert sub["meta"]["tag"] == [{"system": TAG_SYSTEM, "code": "vitals"}]
    assert sub["meta"]["profile"] == [f"{BACKPORT}/backport-subscription"]
    channel = sub["channel"]
    assert (channel["endpoint"], channel["header"], channel["payload"]) == (
        "https://x/e",
        ["X-Secret: s3"],
        "application/fhir+json",
    )
    assert channel["_payload"]["extension"][0]["valueCode"] == "id-only"
    assert channel["extension"][0] == {"url": f"{BACKPORT}/backport-heartbeat-period", "valueUnsignedInt": 60}
    assert sub["status"] == "requested"


def test_a_classic_subscription_sends_the_resource_or_an_empty_ping() -> None:
    full = desired(DeclaredSubscription(name="a", criteria="Observation?code=x"), endpoint="e", header="H", secret="s")
    assert (full["criteria"], full["channel"]["payload"]) == ("Observation?code=x", "application/fhir+json")
    assert "_criteria" not in full and "profile" not in full["meta"]
    empty = desired(
        DeclaredSubscription(name="a", criteria="Observation?code=x", content="empty"),
        endpoint="e",
        header="H",
        secret="s",
    )
    assert "payload" not in empty["channel"]


def test_an_ehr_copy_differs_when_a_managed_field_changed_not_when_the_ehr_added_its_own() -> None:
    decl = DeclaredSubscription(name="a", criteria="Observation?code=x", topic="https://t")
    wanted = desired(decl, endpoint="e", header="H", secret="new")
    on_ehr = {
        **wanted,
        "id": "1",
        "status": "active",
        "meta": {"versionId": "3", "lastUpdated": "2026-01-01T00:00:00Z"},
    }
    assert not differs(on_ehr, wanted)
    rotated = desired(decl, endpoint="e", header="H", secret="newer")
    assert differs(on_ehr, rotated)
    moved = desired(decl, endpoint="f", header="H", secret="new")
    assert differs(on_ehr, moved)
