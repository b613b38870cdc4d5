"""KServe v2 (Open Inference Protocol) over REST: MLServer, KServe's ModelServer, Triton.

The workflow gives ``{tensor name: values}`` (a list of numbers, or of rows of numbers); each becomes an
FP64 input tensor of the request to ``POST {endpoint}/v2/models/{name}/versions/{version}/infer``, asking
for the contract's ``model.outputs``. The answer is ``{output name: data}``, the data flattened in row-major
order as the protocol sends it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from ehrflow_inference.contract import Model
from ehrflow_inference.models.errors import InvalidModelOutput, RetryableCall, retry_after, secret_header


def tensor(name: str, values: Any) -> dict[str, Any]:
    """One FP64 input tensor: a list of numbers is one row (shape ``[1, n]``), a list of rows a batch."""
    rows = values if values and isinstance(values[0], list) else [values]
    width = len(rows[0]) if rows else 0
    if any(len(r) != width for r in rows):
        raise InvalidModelOutput(f"input '{name}' has rows of different lengths")
    return {"name": name, "shape": [len(rows), width], "datatype": "FP64", "data": [float(v) for r in rows for v in r]}


def kserve_v2(spec: Model, http: httpx.AsyncClient) -> Callable[[dict[str, Any]], Awaitable[Any]]:
    assert spec.endpoint is not None
    url = f"{spec.endpoint.rstrip('/')}/v2/models/{spec.name}/versions/{spec.version}/infer"

    async def call(inputs: dict[str, Any]) -> Any:
        body: dict[str, Any] = {"inputs": [tensor(n, v) for n, v in inputs.items()]}
        if spec.outputs:
            body["outputs"] = [{"name": n} for n in spec.outputs]
        try:
            response = await http.post(url, json=body, headers=secret_header(spec), timeout=spec.timeout_s)
        except httpx.TimeoutException as exc:
            raise RetryableCall(f"no answer ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise RetryableCall(f"cannot reach the model server ({type(exc).__name__})") from None
        if response.status_code == 429 or response.status_code >= 500:
            raise RetryableCall(f"the model server answered {response.status_code}", retry_after(response))
        if response.status_code >= 400:
            raise InvalidModelOutput(f"the model server refused the request ({response.status_code})")
        try:
            outputs = response.json()["outputs"]
            return {o["name"]: o["data"] for o in outputs}
        except (ValueError, KeyError, TypeError):
            raise InvalidModelOutput("the model server's answer is not a v2 inference response") from None

    return call
