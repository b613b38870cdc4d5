"""Workflow contracts: the shipped ones validate, every field is checked, and every error names the file, the
organization and the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ehrflow_devstack.config import generate, write_registry
from ehrflow_inference.contract import Condition, Contract, merged
from ehrflow_inference.enabled import check_shipped, contract_for, enabled_contracts
from ehrflow_inference.workflows import SHIPPED
from ehrflow_inference.workflows.news2 import News2
from ehrflow_runtime.errors import ConfigurationError
from ehrflow_runtime.organizations import Registry, load_registry

NEWS2 = News2()


def _registry(tmp_path: Path, workflows: dict[str, Any], **org1: Any) -> Registry:
    """The local stack's registry with org1's ``workflows`` (and any other field) replaced."""
    config = generate(tmp_path)
    path = write_registry(config, {"org1": "https://ehr.example.org/fhir", "org2": "https://ehr2.example.org/fhir"})
    data = yaml.safe_load(path.read_text())
    data["organizations"]["org1"].update(workflows=workflows, **org1)
    path.write_text(yaml.safe_dump(data))
    return load_registry(path)


def _error(tmp_path: Path, override: dict[str, Any], **org1: Any) -> str:
    registry = _registry(tmp_path, {"news2": override}, **org1)
    with pytest.raises(ConfigurationError) as caught:
        enabled_contracts(registry)
    message = str(caught.value)
    assert message.startswith(f"{registry.source}: organization 'org1', field 'workflows.news2"), message
    return message


def test_every_shipped_contract_is_valid() -> None:
    check_shipped()
    assert set(SHIPPED) == {"news2", "readmission", "tumor-board"}


def test_an_organization_takes_the_shipped_contract_and_overrides_fields(tmp_path: Path) -> None:
    registry = _registry(
        tmp_path,
        {
            "news2": {
                "review": {"mode": "auto-approve", "when": {"field": "score", "le": 2}},
                "trigger": {"debounce_s": 5},
            }
        },
    )
    enabled = enabled_contracts(registry)
    [org1] = enabled["org1"]
    [org2] = enabled["org2"]
    assert org1.contract.review.mode == "auto-approve" and org1.contract.trigger.debounce_s == 5
    assert org1.contract.trigger.codes == ("http://loinc.org|85353-1",)  # kept from the shipped contract
    assert org2.contract.review.mode == "required" and org2.contract.trigger.debounce_s == 0


def test_a_disabled_workflow_is_not_run(tmp_path: Path) -> None:
    assert enabled_contracts(_registry(tmp_path, {"news2": {"enabled": False}}))["org1"] == ()


@pytest.mark.parametrize(
    ("override", "field", "message"),
    [
        ({"trigger": {"codes": ["85353-1"]}}, "trigger.codes", "is not a code as system|code"),
        ({"trigger": {"resource_type": "observation"}}, "trigger.resource_type", "should match pattern"),
        ({"trigger": {"debounce_s": 600}}, "trigger.debounce_s", "less than or equal to 120"),
        ({"trigger": {"staleness": "sometimes"}}, "trigger.staleness", "'skip-superseded' or 'evaluate'"),
        ({"trigger": {"subscription": "nowhere"}}, "trigger.subscription", "no declared subscription"),
        ({"inputs": {"Vitals": {"resource_type": "Observation"}}}, "inputs", "input name 'Vitals'"),
        ({"inputs": {"vitals": {"params": {"_count": "5"}}}}, "inputs.vitals.params", "'_count' is not"),
        ({"inputs": {"vitals": {"count": 5000}}}, "inputs.vitals.count", "less than or equal to 1000"),
        ({"inputs": {"vitals": {"lookback_hours": None}}}, "inputs", "needs lookback_hours"),
        ({"inputs": {"labs": {"resource_type": "Observation"}, "vitals": None}}, "inputs.vitals", "valid"),
        ({"budget": {"max_bytes": 10}}, "budget.max_bytes", "greater than or equal to 1000"),
        (
            {"mapping": {"codes": [{"source": "x", "target": "http://loinc.org|1"}]}},
            "mapping.codes.0.source",
            "pattern",
        ),
        ({"mapping": {"units": {"F": "degF"}}}, "mapping.units", "'degF' (for 'F') is not a UCUM unit"),
        ({"model": {"kind": "tensorflow"}}, "model.kind", "'builtin', 'kserve-v2' or 'openai-chat'"),
        ({"model": {"entry_point": None}}, "model.entry_point", "names its Python callable"),
        ({"model": {"kind": "kserve-v2"}}, "model.endpoint", "needs the http(s) URL"),
        ({"model": {"entry_point": "nowhere.at_all:f"}}, "model.entry_point", "cannot import 'nowhere.at_all'"),
        ({"model": {"entry_point": "json:nothing"}}, "model.entry_point", "has no callable 'nothing'"),
        ({"model": {"credentials_file": "secrets/none"}}, "model.credentials_file", "file not found"),
        ({"model": {"timeout_s": 0}}, "model.timeout_s", "greater than 0"),
        ({"output": {"resource_type": "Patient"}}, "output.resource_type", "'RiskAssessment'"),
        ({"review": {"mode": "auto-approve"}}, "review.when", "needs an explicit condition"),
        ({"review": {"when": {"field": "score", "le": 1}}}, "review.when", "applies to auto-approve only"),
        ({"review": {"mode": "auto-approve", "when": {"field": "score"}}}, "review.when", "needs one of equals"),
        ({"review": {"mode": "always"}}, "review.mode", "'required', 'auto-approve' or 'shadow'"),
        ({"review": {"ttl_hours": -1}}, "review.ttl_hours", "greater than 0"),
        ({"parameters": {"spo2_scale2_conditions": ["J96"]}}, "parameters.spo2_scale2_conditions", "system|code"),
        ({"parameters": {"unknown": 1}}, "parameters.unknown", "Extra inputs are not permitted"),
        ({"feature": "billing"}, "feature", "has no feature 'billing'"),
        ({"workflow": "sepsis"}, "workflow", "names 'sepsis', not 'news2'"),
        ({"colour": "blue"}, "colour", "Extra inputs are not permitted"),
    ],
)
def test_every_field_is_checked_and_named(tmp_path: Path, override: dict[str, Any], field: str, message: str) -> None:
    error = _error(tmp_path, override)
    assert f"field 'workflows.news2.{field}'" in error and message in error, error


def test_an_unknown_workflow_lists_the_shipped_ones(tmp_path: Path) -> None:
    registry = _registry(tmp_path, {"sepsis": {}})
    with pytest.raises(ConfigurationError, match=r"field 'workflows.sepsis': no such workflow \(ehrflow ships: news2"):
        enabled_contracts(registry)


def test_a_broken_shipped_contract_names_its_own_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = tmp_path / "contract.yaml"
    broken.write_text(yaml.safe_dump({**yaml.safe_load(NEWS2.contract_file.read_text()), "feature": "Not A Name"}))
    monkeypatch.setattr(News2, "contract_file", broken)
    with pytest.raises(ConfigurationError, match=rf"^{broken}: field 'feature': String should match pattern"):
        check_shipped()


def test_merging_replaces_lists_and_merges_mappings() -> None:
    base = {"trigger": {"codes": ["a|1", "a|2"], "debounce_s": 0}, "inputs": {"x": {"count": 5}}}
    over = {"trigger": {"codes": ["b|1"]}, "inputs": {"x": {"required": False}}}
    assert merged(base, over) == {
        "trigger": {"codes": ["b|1"], "debounce_s": 0},
        "inputs": {"x": {"count": 5, "required": False}},
    }


@pytest.mark.parametrize(
    ("condition", "summary", "holds"),
    [
        ({"field": "score", "le": 2}, {"score": 2}, True),
        ({"field": "score", "le": 2}, {"score": 3}, False),
        ({"field": "score", "lt": 2, "ge": 0}, {"score": 0}, True),
        ({"field": "score", "gt": 4}, {"score": "5"}, False),  # a bound never holds for a non-number
        ({"field": "band", "one_of": ["low"]}, {"band": "low"}, True),
        ({"field": "band", "one_of": ["low"]}, {"band": "high"}, False),
        ({"field": "band", "equals": "low"}, {}, False),  # a figure the summary lacks never holds
    ],
)
def test_auto_approval_conditions(condition: dict[str, Any], summary: dict[str, Any], holds: bool) -> None:
    assert Condition.model_validate(condition).holds(summary) is holds


def test_local_codes_are_translated_by_the_mapping() -> None:
    contract = contract_for(
        NEWS2,
        {"mapping": {"codes": [{"source": "urn:local|RR", "target": "http://loinc.org|9279-1"}]}},
        source=NEWS2.contract_file,
        org=None,
    )
    assert isinstance(contract, Contract)
    assert contract.translate("urn:local", "RR") == ("http://loinc.org", "9279-1")
    assert contract.translate("urn:local", "HR") == ("urn:local", "HR")
