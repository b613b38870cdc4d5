"""The workflows ehrflow ships, by name. Adding one: a folder here with its ``Workflow`` subclass and its
``contract.yaml``, and one line below (README: "Adding a workflow")."""

from __future__ import annotations

from ehrflow_inference.workflows.base import Workflow
from ehrflow_inference.workflows.news2 import News2
from ehrflow_inference.workflows.readmission import Readmission
from ehrflow_inference.workflows.tumor_board import TumorBoard

SHIPPED: dict[str, Workflow] = {w.name: w for w in (News2(), Readmission(), TumorBoard())}  # type: ignore[type-arg]

__all__ = ["SHIPPED", "Workflow"]
