"""The patient's record as the model reads it: one line per resource, each led by the reference the model
must cite, and the text of clinical notes (plain text or HTML attachments, inline or fetched from the
organization's FHIR base).
"""

from __future__ import annotations

import base64
import binascii
from html.parser import HTMLParser
from typing import Any

from ehrflow_inference.evaluation import FhirReader
from ehrflow_inference.evidence import concept
from ehrflow_runtime.errors import PermanentError, RetryableError

TEXT_TYPES = ("text/plain", "text/html", "text/markdown")


def reference(resource: dict[str, Any]) -> str:
    return f"{resource['resourceType']}/{resource['id']}"


def _when(resource: dict[str, Any]) -> str:
    for key in ("effectiveDateTime", "performedDateTime", "onsetDateTime", "authoredOn", "date", "issued"):
        if isinstance(resource.get(key), str):
            return str(resource[key])[:10]
    period = resource.get("effectivePeriod") or resource.get("performedPeriod") or {}
    return str(period.get("start", ""))[:10] if isinstance(period, dict) else ""


def _value(resource: dict[str, Any]) -> str:
    quantity = resource.get("valueQuantity")
    if isinstance(quantity, dict) and "value" in quantity:
        return f"{quantity['value']} {quantity.get('unit') or quantity.get('code') or ''}".strip()
    if isinstance(resource.get("valueString"), str):
        return str(resource["valueString"])
    return concept(resource.get("valueCodeableConcept"))


def line(resource: dict[str, Any]) -> str:
    """``[Type/id] Type: what (status, date): value or conclusion``."""
    kind = resource["resourceType"]
    what = (
        concept(resource.get("code"))
        or concept(resource.get("medicationCodeableConcept"))
        or concept(resource.get("type"))
    )
    status = resource.get("status") or concept(resource.get("clinicalStatus"))
    facts = ", ".join(str(x) for x in (status, _when(resource)) if x)
    detail = _value(resource) or str(resource.get("conclusion") or "")
    text = f"[{reference(resource)}] {kind}: {what or 'unnamed'}" + (f" ({facts})" if facts else "")
    return text + (f": {detail}" if detail else "")


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def text_of(content_type: str, data: bytes) -> str:
    """Readable text of a note attachment; HTML loses its markup, scripts and styles."""
    text = data.decode("utf-8", errors="replace")
    if content_type.startswith("text/html"):
        parser = _Text()
        parser.feed(text)
        text = " ".join(parser.parts)
    return " ".join(text.split())


async def note_text(document: dict[str, Any], fhir: FhirReader) -> str | None:
    """The text of a DocumentReference's first text attachment: inline ``data``, or a ``url`` under the
    organization's FHIR base (a Binary; the client refuses any other URL). None when it has none."""
    for content in document.get("content") or []:
        attachment = content.get("attachment") if isinstance(content, dict) else None
        if not isinstance(attachment, dict):
            continue
        content_type = str(attachment.get("contentType") or "").lower()
        if not content_type.startswith(TEXT_TYPES):
            continue
        data = attachment.get("data")
        if data is None and isinstance(attachment.get("url"), str):
            try:
                binary = await fhir.read(attachment["url"])
            except RetryableError:
                raise
            except PermanentError:
                continue  # not under the organization's base, or gone: the note is left out
            data = binary.get("data")
        if isinstance(data, str):
            try:
                return text_of(content_type, base64.b64decode(data, validate=True))
            except (binascii.Error, ValueError):
                continue
    return None
