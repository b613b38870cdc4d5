"""Pure parts of clinician launches: how iss is compared and which fhirUser values belong to an EHR."""

from __future__ import annotations

import pytest

from ehrflow_auth.launch import LaunchError, Launches, canonical, state_cookie_name


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
