"""Contracts against an EHR's CapabilityStatement and the scopes of their feature.

``data/sekmet-0.1.1-capabilitystatement.json`` is the sandbox EHR's own ``/metadata`` answer (SEKMET 0.1.1),
reduced to the elements the check reads (type, interactions, search parameter names and types).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from ehrflow_inference.capabilities import granted, needs, scope_problems, statement_problems
from ehrflow_inference.contract import Contract
from ehrflow_inference.enabled import contract_for
from ehrflow_inference.workflows.news2 import News2
from ehrflow_runtime.organizations import Organization

SEKMET: dict[str, Any] = json.loads(
    (Path(__file__).parent / "data" / "sekmet-0.1.1-capabilitystatement.json").read_text()
)
NEWS2 = News2()


def _news2(**override: Any) -> Contract:
    return contract_for(NEWS2, override, source=NEWS2.contract_file, org=None)


def test_what_news2_needs() -> None:
    assert [(n.resource_type, n.interaction, n.params) for n in needs(_news2())] == [
        ("Observation", "read", ()),
        ("Observation", "search-type", ("patient", "category", "date")),
        ("Condition", "search-type", ("patient", "clinical-status")),
        ("RiskAssessment", "create", ()),
        ("Provenance", "create", ()),
    ]


def test_sekmet_leaves_risk_assessment_out_of_its_statement() -> None:
    assert statement_problems(SEKMET, _news2()) == [
        "RiskAssessment create (the output (writeback)): the CapabilityStatement does not list RiskAssessment"
    ]
    assert statement_problems(SEKMET, _news2(capability_exceptions=["RiskAssessment.create"])) == []


def test_a_missing_search_parameter_is_named() -> None:
    statement = copy.deepcopy(SEKMET)
    [observation] = [r for r in statement["rest"][0]["resource"] if r["type"] == "Observation"]
    observation["searchParam"] = [p for p in observation["searchParam"] if p["name"] != "category"]
    observation["interaction"] = [i for i in observation["interaction"] if i["code"] != "read"]
    contract = _news2(capability_exceptions=["RiskAssessment.create"])
    assert statement_problems(statement, contract) == [
        "Observation read (the trigger (id-only events are read back)): Observation does not offer 'read'",
        "Observation search-type (input 'vitals'): Observation has no search parameter 'category'",
    ]
    accepted = _news2(capability_exceptions=["RiskAssessment.create", "Observation.read", "Observation?category"])
    assert statement_problems(statement, accepted) == []


def test_a_server_wide_search_parameter_counts_and_anything_else_is_refused() -> None:
    statement = copy.deepcopy(SEKMET)
    [observation] = [r for r in statement["rest"][0]["resource"] if r["type"] == "Observation"]
    observation["searchParam"] = [p for p in observation["searchParam"] if p["name"] != "date"]
    statement["rest"][0]["searchParam"] = [{"name": "date", "type": "date"}]
    assert statement_problems(statement, _news2(capability_exceptions=["RiskAssessment.create"])) == []
    assert statement_problems({"resourceType": "Bundle"}, _news2()) == [
        "the EHR's metadata is not a CapabilityStatement"
    ]


@pytest.mark.parametrize(
    ("scopes", "grants"),
    [
        (("system/*.read",), {"*": set("rs")}),
        (("system/Observation.rs", "system/RiskAssessment.c"), {"Observation": set("rs"), "RiskAssessment": {"c"}}),
        (("system/Provenance.write", "user/Patient.*"), {"Provenance": set("cud"), "Patient": set("cruds")}),
        (("openid", "system/Observation.rs?category=vital-signs", "launch"), {"Observation": set("rs")}),
    ],
)
def test_smart_scopes_v1_and_v2(scopes: tuple[str, ...], grants: dict[str, set[str]]) -> None:
    assert granted(scopes) == grants


def test_scopes_of_the_feature_must_cover_reads_and_writes(organization: Organization) -> None:
    reads_only = organization.model_copy(update={"features": {"news2": ("system/*.read",)}})
    assert scope_problems(reads_only, _news2()) == [
        "RiskAssessment create (the output (writeback)): feature 'news2' has no scope for it "
        "(system/RiskAssessment.write or system/RiskAssessment.c)",
        "Provenance create (the output's Provenance (writeback)): feature 'news2' has no scope for it "
        "(system/Provenance.write or system/Provenance.c)",
    ]
    enough = ("system/Observation.rs", "system/Condition.rs", "system/RiskAssessment.c", "system/Provenance.c")
    assert scope_problems(organization.model_copy(update={"features": {"news2": enough}}), _news2()) == []
