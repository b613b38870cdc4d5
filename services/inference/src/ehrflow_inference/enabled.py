"""Which workflows each organization runs, with their contracts, validated before any event is read.

An organization lists workflows under ``workflows`` in the organization file, each with overrides of the
workflow's shipped ``contract.yaml`` (``{}`` takes it as shipped). Each is merged and validated against the
workflow's contract model; an error names the file, the organization and the field, as the organization
file's own errors do. The organization must have the contract's feature (its SMART scopes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ehrflow_inference.contract import Contract, merged
from ehrflow_inference.models import resolve_entry_point
from ehrflow_inference.workflows import SHIPPED, Workflow
from ehrflow_runtime.errors import ConfigurationError
from ehrflow_runtime.organizations import Organization, Registry


@dataclass(frozen=True)
class Enabled:
    workflow: Workflow  # type: ignore[type-arg]
    contract: Contract


def shipped_contract(workflow: Workflow) -> dict[str, Any]:  # type: ignore[type-arg]
    """The workflow's ``contract.yaml`` as data (validated on its own by ``check_shipped``)."""
    path = workflow.contract_file
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"{path}: cannot read the workflow contract ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigurationError(f"{path}: a workflow contract is a mapping")
    return data


def _where(exc: ValidationError) -> tuple[str, str]:
    err = exc.errors()[0]
    loc = [str(x) for x in err["loc"]]
    message = str(err["msg"]).removeprefix("Value error, ")
    sub, bar, rest = message.partition("|")
    if bar and re.fullmatch(r"[a-z_][a-z0-9_]*", sub):  # a validator naming its sub-field: "field|message"
        loc.append(sub)
        message = rest
    return ".".join(loc) or "-", message


def contract_for(
    workflow: Workflow,  # type: ignore[type-arg]
    override: dict[str, Any],
    *,
    source: Path,
    org: Organization | None,
) -> Contract:
    """The workflow's shipped contract with ``override`` laid over it, validated. Errors name ``source`` (the
    organization file, or the contract file itself when there is no organization), the organization and the
    field (``workflows.<name>.<field>``)."""
    base = shipped_contract(workflow)
    prefix = f"workflows.{workflow.name}." if org is not None else ""
    where = f"{source}: organization '{org.id}', " if org is not None else f"{source}: "

    def fail(field: str, message: str) -> ConfigurationError:
        return ConfigurationError(f"{where}field '{prefix}{field}': {message}")

    if "workflow" in override and override["workflow"] != workflow.name:
        raise fail("workflow", f"names '{override['workflow']}', not '{workflow.name}'")
    try:
        contract = workflow.contract_model.model_validate(merged(base, override))
    except ValidationError as exc:
        raise fail(*_where(exc)) from None
    if contract.workflow != workflow.name:
        raise fail("workflow", f"names '{contract.workflow}', not '{workflow.name}'")
    entry_point = contract.model.entry_point if contract.model.kind == "builtin" else None
    if entry_point and (problem := resolve_entry_point(entry_point)):
        raise fail("model.entry_point", problem)
    if contract.model.credentials_file is not None and org is not None:
        path = contract.model.credentials_file
        resolved = path if path.is_absolute() else (source.parent / path).resolve()
        if not resolved.is_file():
            raise fail("model.credentials_file", f"file not found: {resolved}")
        contract = contract.model_copy(
            update={"model": contract.model.model_copy(update={"credentials_file": resolved})}
        )
    if org is not None:
        if contract.feature not in org.features:
            raise fail("feature", f"the organization has no feature '{contract.feature}' (its SMART scopes)")
        names = {s.name for s in org.ingest.subscriptions}
        if contract.trigger.subscription is not None and contract.trigger.subscription not in names:
            raise fail("trigger.subscription", f"no declared subscription is named '{contract.trigger.subscription}'")
    return contract


def enabled_contracts(registry: Registry) -> dict[str, tuple[Enabled, ...]]:
    """Every organization's enabled workflows and contracts, by organization id."""
    found: dict[str, tuple[Enabled, ...]] = {}
    for org in registry:
        chosen: list[Enabled] = []
        for name, override in org.workflows.items():
            workflow = SHIPPED.get(name)
            if workflow is None:
                known = ", ".join(sorted(SHIPPED))
                raise ConfigurationError(
                    f"{registry.source}: organization '{org.id}', field 'workflows.{name}': "
                    f"no such workflow (ehrflow ships: {known})"
                )
            contract = contract_for(workflow, override, source=registry.source, org=org)
            if contract.enabled:
                chosen.append(Enabled(workflow, contract))
        found[org.id] = tuple(chosen)
    return found


def check_shipped() -> None:
    """Every shipped contract is valid on its own (a test, and the first thing ``check-contracts`` does)."""
    for workflow in SHIPPED.values():
        contract_for(workflow, {}, source=workflow.contract_file, org=None)
