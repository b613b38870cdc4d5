"""Reading values out of FHIR resources the way every workflow needs them."""

from __future__ import annotations

from datetime import datetime
from typing import Any


def instant(text: Any) -> datetime | None:
    """A FHIR dateTime with a time zone, or None (a date alone, or no zone, is not an instant)."""
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else None


def versioned(resource: dict[str, Any]) -> str:
    """``Type/id/_history/version`` (``Type/id`` when the server gave no version): what a draft's basis names."""
    version = (resource.get("meta") or {}).get("versionId")
    ref = f"{resource['resourceType']}/{resource['id']}"
    return f"{ref}/_history/{version}" if version else ref
