"""Contracts checked against the real sandbox EHRs before traffic: the CLI's report and exit code, and a
service that refuses to start on a mismatch."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from ehrflow_devstack.processes import StartupError
from ehrflow_devstack.stack import Stack

pytestmark = pytest.mark.integration


def _check(registry: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 (our own command)
        [sys.executable, "-c", "from ehrflow_inference.main import main; main()", "check-contracts", *args],
        env={"EHRFLOW_ORGANIZATIONS_FILE": str(registry)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _variant(stack: Stack, name: str, change: Any) -> Path:
    assert stack.config
    data = yaml.safe_load(stack.config.organizations_file.read_text())
    change(data["organizations"])
    path = stack.config.organizations_file.with_name(f"organizations-{name}.yaml")
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_stack_contracts_match_their_ehrs(stack: Stack) -> None:
    assert stack.config
    result = _check(stack.config.organizations_file)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("news2: ok") == 2 and result.stdout.count("readmission: ok") == 2
    assert result.stdout.count("tumor-board: ok") == 2


def test_a_mismatch_is_a_readable_report_and_a_non_zero_exit(stack: Stack) -> None:
    def strip_org1(orgs: dict[str, Any]) -> None:
        orgs["org1"]["workflows"]["news2"]["capability_exceptions"] = []
        features = copy.deepcopy(orgs["org1"]["features"])  # the file shares one mapping between organizations
        features["tumor-board"].remove("system/DocumentReference.write")
        orgs["org1"]["features"] = features

    registry = _variant(stack, "mismatch", strip_org1)
    result = _check(registry)
    assert result.returncode == 1
    report = result.stdout
    assert "news2: 1 problem(s)" in report
    assert (
        "RiskAssessment create (the output (writeback)): the CapabilityStatement does not list RiskAssessment" in report
    )
    assert "feature 'tumor-board' has no scope for it (system/DocumentReference.write" in report
    assert "org2 (Riverside Health)" in report and report.count(": ok") == 4, report  # org2's three, org1's one
    only_org2 = _check(registry, "--org", "org2")
    assert only_org2.returncode == 0 and "org1" not in only_org2.stdout


def test_an_unreachable_ehr_is_reported_and_an_invalid_contract_exits_2(stack: Stack) -> None:
    def unreachable(orgs: dict[str, Any]) -> None:
        orgs["org2"]["fhir_base_url"] = "http://127.0.0.1:9/fhir"

    result = _check(_variant(stack, "unreachable", unreachable))
    assert result.returncode == 1 and "NOT CHECKED: cannot read http://127.0.0.1:9/fhir/metadata" in result.stdout

    def invalid(orgs: dict[str, Any]) -> None:
        orgs["org1"]["workflows"]["news2"]["review"] = {"mode": "auto-approve"}

    result = _check(_variant(stack, "invalid", invalid))
    assert result.returncode == 2
    assert "organization 'org1', field 'workflows.news2.review.when': auto-approve needs an explicit condition" in (
        result.stderr
    )


def test_inference_refuses_to_start_on_a_mismatch(stack: Stack, tmp_path: Path) -> None:
    def strip(orgs: dict[str, Any]) -> None:
        orgs["org2"]["workflows"]["readmission"]["capability_exceptions"] = []

    registry = _variant(stack, "refused", strip)
    log = tmp_path / "inference.log"
    with pytest.raises(StartupError, match="exited"):
        stack.start_service("inference", log, EHRFLOW_ORGANIZATIONS_FILE=str(registry))
    text = log.read_text()
    assert "workflow contracts do not match their EHRs" in text and "readmission: 1 problem(s)" in text
