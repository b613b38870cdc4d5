"""The workflow contract: what triggers a workflow, exactly which data it reads, which model it runs, what it
drafts and who reviews it, as data.

Each workflow ships one YAML document (``workflows/<name>/contract.yaml``); an organization enables it in the
organization file under ``workflows.<name>`` and may override any field there (mappings are merged key by key,
everything else is replaced). ``Contract`` is the schema both are validated against; a workflow with
parameters of its own subclasses it. ``make docs`` writes the JSON Schema into
``docs/contracts/``. See README "Workflow contracts".
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

CODE = r"^[^|\s]+\|[^|\s]+$"
"""A coded value as ``system|code`` (FHIR token search syntax)."""
FHIR_TYPE = r"^[A-Z][A-Za-z]{1,63}$"
NAME = r"^[a-z0-9][a-z0-9-]{0,62}$"
SEARCH_PARAM = re.compile(r"^[a-z_][a-z0-9_:.-]*$")

OutputType = Literal["RiskAssessment", "Observation", "DocumentReference", "Flag", "Task", "Communication"]
OUTPUT_TYPES: tuple[str, ...] = OutputType.__args__  # type: ignore[attr-defined]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Trigger(_Strict):
    """Which notification events start an evaluation."""

    resource_type: str = Field(pattern=FHIR_TYPE, description="The focus resource type, e.g. `Observation`.")
    codes: tuple[str, ...] = Field(
        default=(),
        description="The focus must carry one of these codes (`system|code`) in `code`; empty: any resource of the "
        "type.",
    )
    subscription: str | None = Field(
        default=None,
        pattern=NAME,
        description="Only events that arrived through this declared subscription (`ingest.subscriptions[].name`); "
        "absent: any route.",
    )
    debounce_s: float = Field(
        default=0,
        ge=0,
        le=120,
        description="Wait this long after an event was received before evaluating it, so that a burst of one "
        "patient's data gives one evaluation (the events before the last are then superseded).",
    )
    staleness: Literal["skip-superseded", "evaluate"] = Field(
        default="skip-superseded",
        description="`skip-superseded`: never draft on data a newer trigger for the same patient has replaced "
        "(outcome `superseded`).",
    )

    @field_validator("codes")
    @classmethod
    def _codes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _checked_codes(value)


class Query(_Strict):
    """One named FHIR search the workflow needs, always restricted to the event's patient."""

    resource_type: str = Field(pattern=FHIR_TYPE)
    codes: tuple[str, ...] = Field(default=(), description="Sent as `code=<system|code>,…`; empty: no code filter.")
    params: dict[str, str] = Field(
        default_factory=dict, description="Further search parameters, e.g. `{category: vital-signs}`."
    )
    patient_param: str = Field(
        default="patient",
        description="The search parameter that names the patient (`Patient/id`); `_id` on a Patient search (the id).",
    )
    lookback_hours: float | None = Field(
        default=None, gt=0, description="Only resources up to this old at the trigger's time (the workflow filters)."
    )
    count: int = Field(default=100, ge=1, le=1000, description="Page size (`_count`).")
    sort: str | None = Field(default=None, description="`_sort`, e.g. `-date`.")
    elements: tuple[str, ...] = Field(default=(), description="`_elements`: only these top-level elements.")
    required: bool = Field(default=True, description="No match at all is the outcome `insufficient-data`.")

    @field_validator("codes")
    @classmethod
    def _codes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _checked_codes(value)

    @field_validator("params")
    @classmethod
    def _params(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not SEARCH_PARAM.match(name) or name in ("_count", "_elements", "_sort", "code"):
                raise ValueError(f"'{name}' is not a search parameter this field may set")
        return value

    def search(self, patient: str) -> list[tuple[str, str]]:
        """The search parameters of this query for ``patient`` (``Patient/id``)."""
        value = patient.removeprefix("Patient/") if self.patient_param == "_id" else patient
        found = [(self.patient_param, value), *self.params.items()]
        if self.codes:
            found.append(("code", ",".join(self.codes)))
        if self.sort:
            found.append(("_sort", self.sort))
        if self.elements:
            found.append(("_elements", ",".join(self.elements)))
        found.append(("_count", str(self.count)))
        return found


class Budget(_Strict):
    """How much one evaluation may read from the EHR, over all its inputs."""

    max_resources: int = Field(default=1000, ge=1)
    max_bytes: int = Field(default=4_000_000, ge=1_000, description="Resource JSON bytes over all inputs.")
    max_pages: int = Field(default=5, ge=1, le=50, description="Pages followed per query (`next` links).")


class CodeMapping(_Strict):
    """One row of a ConceptMap: this organization's local code means the standard one."""

    source: str = Field(pattern=CODE, description="The local code, `system|code`.")
    target: str = Field(pattern=CODE, description="The standard code (LOINC, SNOMED CT), `system|code`.")


class Mapping(_Strict):
    """Per-organization semantics: local codes translated before the workflow reads a resource, and the EHR's
    unit strings that are not UCUM mapped to UCUM codes (values are then converted with a UCUM library)."""

    codes: tuple[CodeMapping, ...] = ()
    units: dict[str, str] = Field(
        default_factory=dict,
        description="The EHR's unit string → its UCUM code, e.g. `{degF: '[degF]', mmHg: 'mm[Hg]'}`.",
    )

    @field_validator("units")
    @classmethod
    def _ucum(cls, value: dict[str, str]) -> dict[str, str]:
        from ehrflow_inference.units import is_ucum  # the UCUM registry loads only where units are mapped

        for local, code in value.items():
            if not is_ucum(code):
                raise ValueError(f"'{code}' (for '{local}') is not a UCUM unit")
        return value


class Model(_Strict):
    """The model the workflow runs, and how to reach it."""

    kind: Literal["builtin", "kserve-v2", "openai-chat"]
    name: str = Field(min_length=1, description="Recorded in every draft and in the Provenance written with it.")
    version: str = Field(min_length=1)
    entry_point: str | None = Field(
        default=None, pattern=r"^[\w.]+:\w+$", description="`builtin`: the Python callable, `module:function`."
    )
    outputs: tuple[str, ...] = Field(
        default=(),
        description="`kserve-v2`: the output tensors to ask for (e.g. `predict_proba`); empty: the server's.",
    )
    endpoint: str | None = Field(default=None, description="`kserve-v2`, `openai-chat`: the server's base URL.")
    timeout_s: float = Field(default=10, gt=0, le=600)
    retries: int = Field(default=2, ge=0, le=10, description="Further attempts after a 429, 5xx or timeout.")
    concurrency: int = Field(default=8, ge=1, le=1024, description="Calls in flight at once, per endpoint.")
    breaker_failures: int = Field(default=5, ge=1, description="Failed attempts in a row that open the circuit.")
    breaker_open_s: float = Field(
        default=30, gt=0, description="How long an open circuit fails calls at once before one trial call."
    )
    credentials_file: Path | None = Field(default=None, description="Bearer credential for the endpoint (a file).")
    input_schema: dict[str, Any] | None = Field(
        default=None, description="JSON Schema of what the workflow sends the model; checked before each call."
    )
    output_schema: dict[str, Any] | None = Field(
        default=None, description="JSON Schema the model's answer must satisfy; an answer that does not is an outcome."
    )

    @model_validator(mode="after")
    def _reachable(self) -> Model:
        if self.kind == "builtin" and self.entry_point is None:
            raise ValueError("entry_point|a builtin model names its Python callable")
        if self.kind != "builtin" and not (self.endpoint or "").startswith(("http://", "https://")):
            raise ValueError(f"endpoint|a {self.kind} model needs the http(s) URL of its server")
        return self


class Output(_Strict):
    """What the workflow drafts: one FHIR resource, always labelled AI-assisted, written with a Provenance."""

    resource_type: OutputType
    profile: str | None = Field(default=None, description="A profile canonical the resource claims in `meta`.")


class Condition(_Strict):
    """A test on one figure of the draft's summary (e.g. `{field: score, le: 2}`); every bound given must hold."""

    field: str = Field(pattern=r"^[a-z_][a-z0-9_]*$")
    equals: str | float | bool | None = None
    one_of: tuple[str | float, ...] | None = None
    lt: float | None = None
    le: float | None = None
    gt: float | None = None
    ge: float | None = None

    @model_validator(mode="after")
    def _some_test(self) -> Condition:
        if all(getattr(self, k) is None for k in ("equals", "one_of", "lt", "le", "gt", "ge")):
            raise ValueError("a condition needs one of equals, one_of, lt, le, gt, ge")
        return self

    def holds(self, summary: dict[str, Any]) -> bool:
        value = summary.get(self.field)
        if value is None:
            return False
        if self.equals is not None and value != self.equals:
            return False
        if self.one_of is not None and value not in self.one_of:
            return False
        bounds = [(self.lt, "lt"), (self.le, "le"), (self.gt, "gt"), (self.ge, "ge")]
        if any(b is not None for b, _ in bounds) and not isinstance(value, int | float):
            return False
        return all(
            bound is None
            or {"lt": value < bound, "le": value <= bound, "gt": value > bound, "ge": value >= bound}[name]
            for bound, name in bounds
        )


class Review(_Strict):
    """Who sees a draft before it reaches the chart."""

    mode: Literal["required", "auto-approve", "shadow"] = Field(
        default="required",
        description="`required`: a clinician decides. `auto-approve`: written without review when `when` holds, "
        "reviewed otherwise. `shadow`: run and recorded on the shadow topic, never shown or written.",
    )
    when: Condition | None = Field(default=None, description="`auto-approve` only: the condition on the result.")
    ttl_hours: float = Field(default=72, gt=0, description="A draft not decided by then expires.")
    approver_role: str | None = Field(
        default=None,
        pattern=NAME,
        description="The role (from the organization's launch `roles` mapping) a clinician needs to approve or "
        "edit this workflow's drafts; others get 403, audited. Unset: any clinician of the organization.",
    )

    @model_validator(mode="after")
    def _condition_with_auto_approve(self) -> Review:
        if self.mode == "auto-approve" and self.when is None:
            raise ValueError("when|auto-approve needs an explicit condition on the result")
        if self.mode != "auto-approve" and self.when is not None:
            raise ValueError("when|a condition applies to auto-approve only")
        return self


class Contract(_Strict):
    """A workflow's contract. A workflow with parameters of its own subclasses this and types ``parameters``."""

    workflow: str = Field(pattern=NAME, description="The shipped workflow that runs this contract.")
    description: str = ""
    enabled: bool = Field(default=True, description="An organization lists a workflow and switches it off here.")
    feature: str = Field(
        pattern=NAME,
        description="The organization feature whose SMART scopes every FHIR read and write of this workflow uses.",
    )
    trigger: Trigger
    inputs: dict[str, Query] = Field(default_factory=dict, description="Named FHIR searches, by name.")
    budget: Budget = Budget()
    mapping: Mapping = Mapping()
    model: Model
    output: Output
    review: Review = Review()
    parameters: Any = Field(default=None, description="What the workflow itself reads (its own schema).")
    capability_exceptions: tuple[str, ...] = Field(
        default=(),
        description="What the EHR's CapabilityStatement leaves out but an operator has verified works, accepted by "
        "the contract check: `Type.interaction` (`RiskAssessment.create`) or `Type?param`.",
    )

    @field_validator("capability_exceptions")
    @classmethod
    def _exceptions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            if not re.fullmatch(r"[A-Z][A-Za-z]{1,63}(\.(read|search-type|create)|\?[a-z_][a-z0-9_:.-]*)", item):
                raise ValueError(f"'{item}' is neither Type.read|search-type|create nor Type?param")
        return value

    @field_validator("inputs")
    @classmethod
    def _input_names(cls, value: dict[str, Query]) -> dict[str, Query]:
        for name in value:
            if not re.fullmatch(r"[a-z][a-z0-9_]{0,62}", name):
                raise ValueError(f"input name '{name}' must match [a-z][a-z0-9_]*")
        return value

    def translate(self, system: str, code: str) -> tuple[str, str]:
        """The standard code for an organization's local one (itself when the mapping has no row)."""
        wanted = f"{system}|{code}"
        for row in self.mapping.codes:
            if row.source == wanted:
                target_system, _, target_code = row.target.rpartition("|")
                return target_system, target_code
        return system, code


def _checked_codes(value: tuple[str, ...]) -> tuple[str, ...]:
    for code in value:
        if not re.match(CODE, code):
            raise ValueError(f"'{code}' is not a code as system|code")
    return value


def parse_code(token: str) -> tuple[str, str]:
    system, _, code = token.rpartition("|")
    return system, code


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` laid over ``base``: mappings merge key by key, anything else (lists included) replaces."""
    result = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result
