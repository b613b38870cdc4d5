"""Normalizing the many ways senders write a reference to ``Type/id``."""

from __future__ import annotations

import re
from functools import lru_cache

_TYPE_ID = re.compile(
    r"(?:^|/)([A-Z][A-Za-z]+)/((?!\.{1,2}(?:/|$))[A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?/?$"
)
"""``Type/id`` at the end of a reference; ids ``.`` and ``..`` are not ids (they climb a path)."""


def normalize(reference: object) -> str | None:
    """``Encounter/1``, ``https://h/fhir/Encounter/1`` and ``…/Encounter/1/_history/2`` → ``Encounter/1``.

    ``urn:uuid:…`` and identifier-only references have no ``Type/id``: None (the original is kept), and so
    has anything that is not a string (a sender's object, number or list where a reference belongs).
    """
    return _normalize(reference) if isinstance(reference, str) else None


@lru_cache(maxsize=8192)
def _normalize(reference: str) -> str | None:
    """Cached: a notification names its subscription and patient again and again."""
    if not reference or reference.startswith(("urn:", "#")):
        return None
    match = _TYPE_ID.search(reference.split("?", 1)[0])
    return f"{match.group(1)}/{match.group(2)}" if match else None


def patient_of(resource: dict | None) -> str | None:  # type: ignore[type-arg]
    """The patient a resource is about: itself, or its ``subject``/``patient`` reference."""
    if not resource:
        return None
    if resource.get("resourceType") == "Patient" and isinstance(resource.get("id"), str) and resource["id"]:
        return f"Patient/{resource['id']}"
    for field in ("subject", "patient", "beneficiary"):
        ref = normalize((resource.get(field) or {}).get("reference")) if isinstance(resource.get(field), dict) else None
        if ref and ref.startswith("Patient/"):
            return ref
    return None
