"""Pure parts of clinician launches: how iss is compared and which fhirUser values belong to an EHR."""

from __future__ import annotations

import pytest

from ehrflow_auth.launch import LaunchError, Launches, canonical, session_patient, state_cookie_name
from ehrflow_runtime.organizations import Launch


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://EHR.example.org/fhir/", "https://ehr.example.org/fhir"),
        ("https://ehr.example.org:443/fhir", "https://ehr.example.org/fhir"),
        ("http://127.0.0.1:8080/fhir", "http://127.0.0.1:8080/fhir"),
        (" https://ehr.example.org/FHIR/R4 ", "https://ehr.example.org/FHIR/R4"),  # paths keep their case
    ],
)
def test_canonical_iss(given: str, expected: str) -> None:
    assert canonical(given) == expected


def test_lookalike_issuers_stay_different() -> None:
    assert canonical("https://ehr.example.org/fhir") != canonical("https://ehr.example.org.evil.net/fhir")
    assert canonical("https://ehr.example.org/fhir") != canonical("https://ehr.example.org/fhir2")


@pytest.mark.parametrize(
    "fhir_user",
    [
        "https://ehr.example.org/fhir/Practitioner/7",
        "https://EHR.example.org:443/fhir/Practitioner/7",
        "Practitioner/7",
    ],
)
def test_fhir_user_inside_the_base(fhir_user: str) -> None:
    assert Launches._fhir_user("https://ehr.example.org/fhir", fhir_user) == "Practitioner/7"


@pytest.mark.parametrize(
    "fhir_user",
    [
        "https://elsewhere.example.net/fhir/Practitioner/7",
        "https://ehr.example.org/fhir2/Practitioner/7",
        "https://ehr.example.org/fhir/Observation/7",
        "Practitioner/7/_history/1",
        "",
        None,
    ],
)
def test_fhir_user_outside_the_base_is_refused(fhir_user: str | None) -> None:
    with pytest.raises(LaunchError):
        Launches._fhir_user("https://ehr.example.org/fhir", fhir_user)


def test_each_launch_has_its_own_cookie() -> None:
    assert state_cookie_name("a") != state_cookie_name("b")
    assert state_cookie_name("a").startswith("ehrflow_launch_")


def _launch(**kw: object) -> Launch:
    return Launch.model_validate(
        {
            "client_id": "c",
            "redirect_uri": "https://auth.example.org/launch/org1/callback",
            "issuers": ["https://ehr.example.org/fhir"],
            "return_url": "https://review.example.org/",
            **kw,
        }
    )


def test_a_launch_names_its_patient() -> None:
    assert session_patient("p-1", "launch openid fhirUser patient/*.read", _launch()) == "Patient/p-1"


@pytest.mark.parametrize("scope", ["openid fhirUser user/*.read", "openid fhirUser"])
def test_a_launch_without_a_patient_is_refused_unless_the_organization_allows_it(scope: str) -> None:
    """A patient-less session saw and approved every draft of the organization."""
    with pytest.raises(LaunchError, match="allows only patient-bound sessions"):
        session_patient(None, scope, _launch())
    assert session_patient(None, scope, _launch(allow_patientless_sessions=True)) is None


@pytest.mark.parametrize("scope", ["launch openid", "launch/patient openid", "openid patient/*.read"])
def test_a_patient_scope_without_a_patient_is_refused_even_where_patientless_sessions_are_allowed(scope: str) -> None:
    with pytest.raises(LaunchError, match="a patient scope was granted"):
        session_patient("", scope, _launch(allow_patientless_sessions=True))


@pytest.mark.parametrize("patient", ["..", "a/b", 7, ["p"], "x" * 65])
def test_a_patient_that_is_not_a_fhir_id_is_refused(patient: object) -> None:
    with pytest.raises(LaunchError, match="not a FHIR id"):
        session_patient(patient, "launch openid", _launch())
