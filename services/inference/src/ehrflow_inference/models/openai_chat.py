"""OpenAI-compatible chat completions with JSON-schema structured output, through the official ``openai``
client: OpenAI, Azure OpenAI, vLLM, llama.cpp's server, Ollama.

The workflow gives ``{"system": …, "user": …}`` and, optionally, ``"schema"`` (the contract's schema narrowed
for this request); the request asks for a JSON answer that satisfies it, else the contract's ``model.output_schema`` (``response_format`` of type ``json_schema``), and the answer is that JSON
object. The client's own retries are off: the guard (``Guarded``) retries, so a contract's ``retries`` is the
only count. The client brings its own HTTP stack (``httpx2``), one connection pool per endpoint.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx2
import openai

from ehrflow_inference.contract import Model
from ehrflow_inference.models.errors import InvalidModelOutput, RetryableCall


def client_for(spec: Model, http: httpx2.AsyncClient | None = None) -> openai.AsyncOpenAI:
    """The endpoint's client (on ``http`` when given); the key is read from ``credentials_file`` at each call
    (a rotated file takes effect at once). Local servers take any key, and the client insists on one."""

    async def api_key() -> str:
        return "none" if spec.credentials_file is None else spec.credentials_file.read_text(encoding="utf-8").strip()

    return openai.AsyncOpenAI(
        base_url=spec.endpoint, api_key=api_key, max_retries=0, timeout=spec.timeout_s, http_client=http
    )


def openai_chat(spec: Model, client: openai.AsyncOpenAI) -> Callable[[dict[str, Any]], Awaitable[Any]]:
    async def call(inputs: dict[str, Any]) -> Any:
        schema = inputs.get("schema") or spec.output_schema or {"type": "object"}
        messages: list[Any] = [
            {"role": "system", "content": str(inputs.get("system", ""))},
            {"role": "user", "content": str(inputs.get("user", ""))},
        ]
        try:
            completion = await client.chat.completions.create(
                model=spec.name,
                messages=messages,
                temperature=0,
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": "answer", "schema": schema, "strict": True},
                },
            )
        except openai.APITimeoutError:
            raise RetryableCall("no answer (timeout)") from None
        except openai.APIConnectionError:
            raise RetryableCall("cannot reach the model server") from None
        except openai.APIStatusError as exc:
            if exc.status_code == 429 or exc.status_code >= 500:
                after = exc.response.headers.get("retry-after")
                raise RetryableCall(
                    f"the model server answered {exc.status_code}", float(after) if after and after.isdigit() else None
                ) from None
            raise InvalidModelOutput(f"the model server refused the request ({exc.status_code})") from None
        choice = completion.choices[0] if completion.choices else None
        content = choice.message.content if choice is not None else None
        if not content:
            raise InvalidModelOutput("the model's answer is empty")
        try:
            return json.loads(content)
        except ValueError:
            raise InvalidModelOutput("the model's answer is not JSON") from None

    return call
