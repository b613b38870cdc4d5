"""Ingest's HTTP interface as an OpenAPI 3.0 document, served at ``GET /openapi.json``.

Written by hand (the routes are plain Starlette) and checked against the running app by schemathesis
(services/ingest/tests/test_openapi.py), so it cannot drift from what ingest answers.
"""

from __future__ import annotations

from typing import Any

FHIR = "application/fhir+json"

OUTCOME = {
    "type": "object",
    "required": ["resourceType", "issue"],
    "properties": {
        "resourceType": {"type": "string", "enum": ["OperationOutcome"]},
        "issue": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["severity", "code"],
                "properties": {
                    "severity": {"type": "string"},
                    "code": {"type": "string"},
                    "diagnostics": {"type": "string"},
                },
            },
        },
    },
}


def _answer(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {FHIR: {"schema": {"$ref": "#/components/schemas/OperationOutcome"}}},
    }


ANSWERS = {
    "200": _answer("Every event of the notification is on Kafka (acks=all), or was already (a re-delivery)."),
    "400": _answer("Not a notification ingest can accept; the raw bytes are kept on the quarantine topic."),
    "401": _answer("Sender authentication failed (webhook secret or HMAC signature)."),
    "404": _answer("Unknown organization, or no subscription of this name is declared."),
    "408": _answer("The body did not arrive within the configured time."),
    "413": _answer(
        "The body exceeds the configured limit, or the notification lists more events, or would copy more "
        "resource bytes onto the bus, than one notification may (the message says which)."
    ),
    "415": _answer("XML; send application/fhir+json."),
    "503": _answer("The broker did not acknowledge in time, or the same event is being recorded now: retry."),
}

NOTIFICATION_BODY = {
    "required": False,
    "description": "A notification Bundle (R4 backport, R4B, R5), a bare resource, or nothing (a classic ping).",
    "content": {media: {"schema": {"type": "object"}} for media in (FHIR, "application/json", "application/json+fhir")},
}

ORG = {"name": "org", "in": "path", "required": True, "schema": {"type": "string"}, "description": "Organization id."}
NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "A declared subscription's name.",
}
TYPE = {"name": "type", "in": "path", "required": True, "schema": {"type": "string"}, "description": "FHIR type."}
ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}, "description": "Resource id."}


def _operation(summary: str, parameters: list[dict[str, Any]], *, body: bool) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "parameters": parameters, "responses": ANSWERS}
    if body:
        operation["requestBody"] = NOTIFICATION_BODY
    return operation


def document() -> dict[str, Any]:
    classic = "R4 classic delivery of one resource (PUT with the resource or empty; DELETE: HAPI)."
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "ehrflow ingest",
            "version": "1",
            "description": "Receives FHIR Subscription notifications that EHRs push. Every route authenticates "
            "the sender with the organization's webhook secret header or HMAC signature.",
        },
        "paths": {
            "/v1/notify/{org}": {
                "post": _operation("A notification, a bare resource, or an empty ping.", [ORG], body=True)
            },
            "/v1/notify/{org}/{type}/{id}": {
                "put": _operation(classic, [ORG, TYPE, ID], body=True),
                "delete": _operation(classic, [ORG, TYPE, ID], body=False),
            },
            "/v1/notify/{org}/sub/{name}": {
                "post": _operation("As above, for a declared subscription.", [ORG, NAME], body=True)
            },
            "/v1/notify/{org}/sub/{name}/{type}/{id}": {
                "put": _operation(classic, [ORG, NAME, TYPE, ID], body=True),
                "delete": _operation(classic, [ORG, NAME, TYPE, ID], body=False),
            },
        },
        "components": {"schemas": {"OperationOutcome": OUTCOME}},
    }
