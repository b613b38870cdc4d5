"""The workflow seam: what every workflow provides, and what it gives back.

A workflow is a folder under ``ehrflow_inference/workflows/`` holding a ``Workflow`` subclass and its
``contract.yaml``. It decides whether an event concerns it (``triggered_by``) and turns one event into a
``Drafted`` resource or an ``Outcome`` (``draft``, types in ``ehrflow_inference.evaluation``). Everything around that is the pipeline's
(``ehrflow_inference.pipeline``): draft ids, the model reference, the review policy, metrics, publishing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from ehrflow_contracts import NotificationReceived
from ehrflow_inference.contract import Contract, parse_code
from ehrflow_inference.evaluation import Drafted, FhirReader, Outcome
from ehrflow_inference.models import ModelClient

C = TypeVar("C", bound=Contract)


class Workflow(ABC, Generic[C]):
    """One workflow ehrflow ships. Subclasses set ``name`` and ``contract_model`` and implement ``draft``."""

    name: ClassVar[str]
    contract_model: ClassVar[type[Contract]] = Contract
    contract_file: ClassVar[Path]
    """The shipped contract: ``Path(__file__).with_name("contract.yaml")`` in the workflow's module."""

    def triggered_by(self, event: NotificationReceived, contract: C) -> bool:
        """Whether ``event`` may start an evaluation, from the event alone (no I/O): an event notification
        about a resource of the trigger's type, through the trigger's subscription when it names one."""
        if event.notification_type != "event-notification" or event.interaction == "delete":
            return False
        focus = event.focus.reference if event.focus else None
        if not focus or focus.split("/", 1)[0] != contract.trigger.resource_type:
            return False
        return contract.trigger.subscription is None or event.declared_subscription == contract.trigger.subscription

    def is_trigger(self, resource: dict[str, Any], contract: C) -> bool:
        """Whether the focus resource itself matches the trigger (type, and a code when codes are given);
        local codes are translated by the organization's mapping first."""
        if resource.get("resourceType") != contract.trigger.resource_type:
            return False
        if not contract.trigger.codes:
            return True
        wanted = {parse_code(c) for c in contract.trigger.codes}
        return bool(codes_of(resource.get("code"), contract) & wanted)

    @abstractmethod
    async def draft(
        self, event: NotificationReceived, contract: C, fhir: FhirReader, model: ModelClient
    ) -> Drafted | Outcome | None:
        """One event to a draft or an outcome; None when, on a closer look, the event is not a trigger."""


def codes_of(concept: Any, contract: Contract) -> set[tuple[str, str]]:
    """The ``(system, code)`` pairs of a CodeableConcept, each translated by the contract's mapping."""
    if not isinstance(concept, dict) or not isinstance(concept.get("coding"), list):
        return set()
    return {
        contract.translate(str(c.get("system", "")), str(c.get("code", "")))
        for c in concept["coding"]
        if isinstance(c, dict)
    }
