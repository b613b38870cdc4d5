"""Contracts checked against each EHR before traffic: its CapabilityStatement and the SMART scopes granted.

Each enabled contract needs some interactions of the organization's FHIR API: ``read`` of the trigger type
(an id-only event is read back), ``search-type`` with given search parameters for each input, and
``create`` of the output type and of Provenance (writeback). The CapabilityStatement (``GET [base]/metadata``)
must list each, and the contract's feature must have the SMART scopes for them (SMART v1 ``.read``/``.write``/
``.*`` or v2 ``.cruds`` letters). What an operator has verified by hand and accepts anyway (an EHR that
accepts a write its statement leaves out) is listed in the contract's ``capability_exceptions``.

A mismatch is a readable report and a non-zero exit of ``ehrflow-inference check-contracts``, and at start-up
(``EHRFLOW_CONTRACT_CHECK=enforce``) a service that refuses to start, rather than a 403 on the first event.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ehrflow_inference.contract import Contract
from ehrflow_runtime.organizations import Organization

Interaction = str  # "read" | "search-type" | "create"

_LETTERS = {"read": "r", "search-type": "s", "create": "c"}
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
_SCOPE = re.compile(r"^(?:system|user|patient)/(\*|[A-Z][A-Za-z]+)\.([a-z*]+)(?:\?.*)?$")


@dataclass(frozen=True)
class Need:
    resource_type: str
    interaction: Interaction
    params: tuple[str, ...]
    why: str

    @property
    def key(self) -> str:
        """How ``capability_exceptions`` names it: ``Type.interaction`` or ``Type?param``."""
        return f"{self.resource_type}.{self.interaction}"


def needs(contract: Contract) -> list[Need]:
    """What the contract needs of the EHR, in the order a reader expects (trigger, inputs, output)."""
    found = [Need(contract.trigger.resource_type, "read", (), "the trigger (id-only events are read back)")]
    for name, query in contract.inputs.items():
        params = [query.patient_param, *query.params]
        if query.codes:
            params.append("code")
        if query.sort:
            params.append(query.sort.lstrip("-"))
        found.append(Need(query.resource_type, "search-type", tuple(dict.fromkeys(params)), f"input '{name}'"))
    found.append(Need(contract.output.resource_type, "create", (), "the output (writeback)"))
    found.append(Need("Provenance", "create", (), "the output's Provenance (writeback)"))
    return found


def statement_problems(statement: dict[str, Any], contract: Contract) -> list[str]:
    """What the contract needs that the CapabilityStatement does not offer, one sentence each."""
    if statement.get("resourceType") != "CapabilityStatement":
        return ["the EHR's metadata is not a CapabilityStatement"]
    servers = [r for r in statement.get("rest") or [] if isinstance(r, dict) and r.get("mode") == "server"]
    resources: dict[str, dict[str, Any]] = {}
    common: set[str] = set()
    for rest in servers:
        common |= {str(p.get("name")) for p in rest.get("searchParam") or [] if isinstance(p, dict)}
        for resource in rest.get("resource") or []:
            if isinstance(resource, dict) and isinstance(resource.get("type"), str):
                resources[resource["type"]] = resource
    accepted = set(contract.capability_exceptions)
    problems: list[str] = []
    for need in needs(contract):
        if need.key in accepted:
            continue
        what = f"{need.resource_type} {need.interaction} ({need.why})"
        resource = resources.get(need.resource_type)
        if resource is None:
            problems.append(f"{what}: the CapabilityStatement does not list {need.resource_type}")
            continue
        offered = {i.get("code") for i in resource.get("interaction") or [] if isinstance(i, dict)}
        if need.interaction not in offered:
            problems.append(f"{what}: {need.resource_type} does not offer '{need.interaction}'")
        params = common | {p.get("name") for p in resource.get("searchParam") or [] if isinstance(p, dict)}
        for param in need.params:
            if param not in params and f"{need.resource_type}?{param}" not in accepted:
                problems.append(f"{what}: {need.resource_type} has no search parameter '{param}'")
    return problems


def granted(scopes: tuple[str, ...]) -> dict[str, set[str]]:
    """``{resource type or '*': letters}`` from SMART scopes (v1 ``read``/``write``/``*``, v2 ``cruds``)."""
    grants: dict[str, set[str]] = {}
    for scope in scopes:
        match = _SCOPE.match(scope)
        if match is None:
            continue
        resource_type, permission = match.groups()
        letters = _V1.get(permission, permission if set(permission) <= set("cruds") else "")
        grants.setdefault(resource_type, set()).update(letters)
    return grants


def scope_problems(organization: Organization, contract: Contract) -> list[str]:
    """What the contract does that the scopes of its feature do not allow (SMART scope style only: an EHR
    that takes no scope, or Entra's ``.default``, decides by the app registration, which ehrflow cannot see)."""
    if organization.backend_auth.scope_style != "smart" or contract.feature not in organization.features:
        return []
    grants = granted(organization.features[contract.feature])
    problems = []
    for need in needs(contract):
        letter = _LETTERS[need.interaction]
        if letter not in grants.get(need.resource_type, set()) | grants.get("*", set()):
            access = "read" if letter in "rs" else "write"
            problems.append(
                f"{need.resource_type} {need.interaction} ({need.why}): feature '{contract.feature}' has no scope "
                f"for it (system/{need.resource_type}.{access} or system/{need.resource_type}.{letter})"
            )
    return list(dict.fromkeys(problems))
