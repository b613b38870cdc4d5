"""A fast stand-in for an EHR, the auth service's token API and a KServe v2 model, for benchmarks only.

The sandbox EHR answers about 50 requests a second, so a benchmark of inference against it would measure
the sandbox. This server answers from memory, for any patient, what the NEWS2 and readmission workflows
read (a complete vital-signs set, a patient, two earlier stays), and answers model calls after a fixed
delay (``--model-delay-ms``), so inference's own cost and its concurrency are what a benchmark sees. Tests
never use it: they run against the sandbox EHR and real model servers.

    python -m ehrflow_devstack.fast_ehr --port 8080 [--model-delay-ms 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import uvloop
from aiohttp import web

from ehrflow_devstack.scenario import Vitals, vital_observations

WHEN = "2026-11-21T07:58:00+00:00"
HIGH = Vitals(26, 90, 4, 95, 125, "A", 38.6)


def _bundle(resources: list[dict[str, Any]]) -> web.Response:
    body = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}
    return web.Response(body=json.dumps(body), content_type="application/fhir+json")


def _vitals(patient: str) -> list[dict[str, Any]]:
    found = vital_observations(patient, HIGH, WHEN)
    for n, obs in enumerate(found):
        obs["id"], obs["meta"] = f"{patient.split('/')[-1]}-v{n}", {"versionId": "1"}
    return found


def _stays(patient: str) -> list[dict[str, Any]]:
    return [
        {
            "resourceType": "Encounter",
            "id": f"{patient.split('/')[-1]}-s{n}",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
            "subject": {"reference": patient},
            "period": {"start": start, "end": end},
        }
        for n, (start, end) in enumerate([("2026-08-01T00:00:00+00:00", "2026-08-04T00:00:00+00:00")])
    ]


async def search(request: web.Request) -> web.Response:
    kind, patient = request.match_info["type"], request.query.get("patient", "")
    if kind == "Observation":
        return _bundle(_vitals(patient))
    if kind == "Encounter":
        return _bundle(_stays(patient))
    if kind == "Patient":
        return _bundle([{"resourceType": "Patient", "id": request.query.get("_id", "p"), "birthDate": "1944-03-08"}])
    return _bundle([])


async def token(_: web.Request) -> web.Response:
    return web.json_response({"access_token": "bench", "token_type": "bearer", "expires_at": 4102444800, "scope": ""})


def app(model_delay_s: float) -> web.Application:
    async def infer(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(model_delay_s)
        outputs = [{"name": "predict_proba", "shape": [1, 2], "datatype": "FP64", "data": [0.8, 0.2]}]
        return web.json_response({"model_name": request.match_info["model"], "outputs": outputs})

    application = web.Application()
    application.router.add_post("/internal/v1/tokens", token)
    application.router.add_get("/fhir/{type}", search)
    application.router.add_post("/v2/models/{model}/versions/{version}/infer", infer)
    return application


def main() -> None:
    parser = argparse.ArgumentParser(prog="fast_ehr")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model-delay-ms", type=float, default=50.0)
    args = parser.parse_args()
    uvloop.install()
    web.run_app(app(args.model_delay_ms / 1000), host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
