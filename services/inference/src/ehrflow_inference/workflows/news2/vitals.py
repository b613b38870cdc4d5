"""Reading NEWS2's inputs out of FHIR vital-signs Observations.

Codes (LOINC unless noted; an organization's EHR must record vitals with these codes):

| parameter        | codes                                                         | value                              |
|------------------|---------------------------------------------------------------|------------------------------------|
| respiration rate | 9279-1                                                        | valueQuantity /min                 |
| SpO2             | 59408-5, 2708-6                                               | valueQuantity %                    |
| systolic BP      | 8480-6 (alone, or a component of 85354-9 / 55284-4)           | valueQuantity mm[Hg]               |
| pulse            | 8867-4                                                        | valueQuantity /min                 |
| temperature      | 8310-5                                                        | valueQuantity Cel                  |
| consciousness    | 67775-7 (level of responsiveness)                             | valueCodeableConcept, ACVPU code   |
| air or oxygen    | 3151-8 (inhaled O2 flow rate: > 0 = oxygen), or               | valueQuantity L/min                |
|                  | ehrflow `supplemental-oxygen`                                 | valueBoolean                       |

Quantities in another UCUM unit are converted (``[degF]``, ``kPa``; ``ehrflow_inference.units``). ACVPU codes:
system ``https://ehrflow.dev/fhir/CodeSystem/acvpu`` with codes ``A C V P U``. An organization whose
EHR records vitals under local codes maps them to these in its contract (``mapping.codes``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ehrflow_inference.contract import Contract
from ehrflow_inference.fhir_values import instant, versioned
from ehrflow_inference.units import normalize
from ehrflow_inference.workflows.base import codes_of
from ehrflow_inference.workflows.news2.score import Consciousness

LOINC = "http://loinc.org"
SYSTEM_ACVPU = "https://ehrflow.dev/fhir/CodeSystem/acvpu"
SYSTEM_NEWS2 = "https://ehrflow.dev/fhir/CodeSystem/news2"

CODES: dict[str, set[tuple[str, str]]] = {
    "respiration_rate": {(LOINC, "9279-1")},
    "spo2": {(LOINC, "59408-5"), (LOINC, "2708-6")},
    "systolic_bp": {(LOINC, "8480-6")},
    "pulse": {(LOINC, "8867-4")},
    "temperature": {(LOINC, "8310-5")},
    "consciousness": {(LOINC, "67775-7")},
    "air_or_oxygen": {(LOINC, "3151-8"), (SYSTEM_NEWS2, "supplemental-oxygen")},
}
BP_PANELS = {(LOINC, "85354-9"), (LOINC, "55284-4")}
UNITS = {
    "respiration_rate": "/min",
    "spo2": "%",
    "systolic_bp": "mm[Hg]",
    "pulse": "/min",
    "temperature": "Cel",
    "air_or_oxygen": "L/min",
}
"""The UCUM unit NEWS2 scores each parameter in; readings in other UCUM units are converted."""


@dataclass(frozen=True)
class Reading:
    parameter: str
    value: Any
    effective: datetime
    basis: str
    """Versioned reference of the Observation it came from: ``Observation/id/_history/v``."""


def effective_time(obs: dict[str, Any]) -> datetime | None:
    return instant(obs.get("effectiveDateTime") or (obs.get("effectivePeriod") or {}).get("end") or obs.get("issued"))


def _quantity(node: dict[str, Any], parameter: str, contract: Contract) -> float | None:
    """A ``valueQuantity`` in the parameter's UCUM unit (``UNITS``): its ``code`` (else ``unit``), mapped by
    the contract's ``mapping.units`` where the EHR writes a non-UCUM string, converted with ``units``. None
    when there is no number, or a unit that cannot be converted (such a reading does not count)."""
    q = node.get("valueQuantity")
    if not isinstance(q, dict) or not isinstance(q.get("value"), int | float) or isinstance(q.get("value"), bool):
        return None
    unit = str(q.get("code") or q.get("unit") or "")
    if not unit:
        return float(q["value"])  # no unit written: the parameter's own, as EHRs chart it
    return normalize(float(q["value"]), contract.mapping.units.get(unit, unit), UNITS[parameter])


def _consciousness(obs: dict[str, Any], contract: Contract) -> Consciousness | None:
    for system, code in codes_of(obs.get("valueCodeableConcept"), contract):
        if system == SYSTEM_ACVPU and code.upper() in ("A", "C", "V", "P", "U"):
            return code.upper()  # type: ignore[return-value]
    return None


def readings(obs: dict[str, Any], contract: Contract) -> list[Reading]:
    """The NEWS2 readings one Observation provides (a BP panel provides its systolic component), its codes
    translated by the contract's mapping."""
    if obs.get("status") not in ("final", "amended", "corrected", "preliminary"):
        return []
    when = effective_time(obs)
    if when is None or not obs.get("id"):
        return []
    basis = versioned(obs)
    codes = codes_of(obs.get("code"), contract)
    found: list[Reading] = []
    if codes & BP_PANELS:
        for component in obs.get("component") or []:
            systolic = codes_of(component.get("code"), contract) & CODES["systolic_bp"]
            if systolic and (value := _quantity(component, "systolic_bp", contract)) is not None:
                found.append(Reading("systolic_bp", value, when, basis))
    for parameter, known in CODES.items():
        if not codes & known:
            continue
        if parameter == "consciousness":
            level = _consciousness(obs, contract)
            if level:
                found.append(Reading(parameter, level, when, basis))
        elif parameter == "air_or_oxygen":
            if isinstance(obs.get("valueBoolean"), bool):
                found.append(Reading(parameter, obs["valueBoolean"], when, basis))
            elif (flow := _quantity(obs, parameter, contract)) is not None:
                found.append(Reading(parameter, flow > 0, when, basis))
        elif (value := _quantity(obs, parameter, contract)) is not None:
            found.append(Reading(parameter, value, when, basis))
    return found


def latest(
    observations: list[dict[str, Any]], contract: Contract, *, not_before: datetime, not_after: datetime
) -> dict[str, Reading]:
    """The most recent reading of each parameter within ``[not_before, not_after]``."""
    best: dict[str, Reading] = {}
    for obs in observations:
        for reading in readings(obs, contract):
            if not (not_before <= reading.effective <= not_after):
                continue
            current = best.get(reading.parameter)
            if current is None or (reading.effective, reading.basis) > (current.effective, current.basis):
                best[reading.parameter] = reading
    return best
