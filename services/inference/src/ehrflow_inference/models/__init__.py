"""Model adapters: one way to call a model, whatever serves it.

``ModelClient.predict(inputs)`` returns the model's answer as a JSON object, already checked against the
contract's ``output_schema``. Every adapter gets the same guard (``Guarded``): a timeout per attempt, a bound
on calls in flight, retries with back-off on 429/5xx/timeouts, and a circuit breaker per endpoint. What goes
wrong ends as one of two errors the pipeline turns into outcomes or retries:

- ``ModelUnavailable`` (retryable): timeout, refused connection, 429/5xx after the retries, circuit open;
- ``InvalidModelOutput`` (permanent for this input): an answer that is not what the contract says.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import httpx
import httpx2
import jsonschema_rs
import openai

from ehrflow_inference.contract import Model
from ehrflow_inference.models.errors import InvalidModelOutput, ModelUnavailable, RetryableCall
from ehrflow_inference.models.kserve import kserve_v2
from ehrflow_inference.models.openai_chat import client_for, openai_chat
from ehrflow_runtime.errors import PermanentError

__all__ = ["Breaker", "Guarded", "InvalidModelOutput", "ModelClient", "ModelUnavailable", "Models", "RetryableCall"]

log = logging.getLogger("ehrflow.inference.models")


class ModelClient(Protocol):
    spec: Model

    async def predict(self, inputs: dict[str, Any]) -> dict[str, Any]: ...


class Breaker:
    """A circuit breaker: ``threshold`` failures in a row open it for ``open_s``; then one trial call is let
    through (half-open), and its result closes or re-opens it."""

    def __init__(self, threshold: int = 5, open_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold, self.open_s, self._clock = threshold, open_s, clock
        self.failures = 0
        self.opened_at: float | None = None
        self._trial = False

    def allow(self) -> bool:
        if self.opened_at is None:
            return True
        if self._clock() - self.opened_at >= self.open_s and not self._trial:
            self._trial = True
            return True
        return False

    def succeeded(self) -> None:
        self.failures, self.opened_at, self._trial = 0, None, False

    def failed(self) -> None:
        self.failures += 1
        self._trial = False
        if self.failures >= self.threshold:
            self.opened_at = self._clock()

    @property
    def state(self) -> str:
        return "closed" if self.opened_at is None else "open"


Attempt = Callable[[dict[str, Any]], Awaitable[Any]]


class Guarded:
    """One model endpoint behind a timeout, a concurrency bound, retries and a circuit breaker, its answers
    validated against the contract's output schema."""

    def __init__(
        self, spec: Model, attempt: Attempt, *, breaker: Breaker | None = None, backoff_s: float = 0.2
    ) -> None:
        self.spec = spec
        self._attempt = attempt
        self._slots = asyncio.Semaphore(spec.concurrency)
        self.breaker = breaker or Breaker(spec.breaker_failures, spec.breaker_open_s)
        self._backoff_s = backoff_s
        self._schema = jsonschema_rs.validator_for(spec.output_schema) if spec.output_schema else None
        self._inputs = jsonschema_rs.validator_for(spec.input_schema) if spec.input_schema else None

    async def predict(self, inputs: dict[str, Any]) -> dict[str, Any]:
        if self._inputs is not None:
            wrong = [f"/{'/'.join(map(str, e.instance_path))}" for e in self._inputs.iter_errors(inputs)]
            if wrong:  # the workflow and its contract disagree: the same input fails the same way
                raise PermanentError(f"the input to model {self.spec.name} breaks its input schema at {wrong[0]}")
        answer = await self._call(inputs)
        if not isinstance(answer, dict):
            raise InvalidModelOutput(f"model {self.spec.name} answered {type(answer).__name__}, not an object")
        if self._schema is not None:
            errors = [f"/{'/'.join(map(str, e.instance_path))}" for e in self._schema.iter_errors(answer)]
            if errors:  # where, never what: an answer may repeat patient data
                raise InvalidModelOutput(f"model {self.spec.name}'s answer breaks its output schema at {errors[0]}")
        return answer

    async def _call(self, inputs: dict[str, Any]) -> Any:
        last = "no attempt made"
        for attempt in range(self.spec.retries + 1):
            if not self.breaker.allow():
                raise ModelUnavailable(f"model {self.spec.name}: circuit open after repeated failures")
            wait: float | None = None
            try:
                async with self._slots:
                    answer = await asyncio.wait_for(self._attempt(inputs), self.spec.timeout_s)
            except TimeoutError:
                last = f"no answer within {self.spec.timeout_s:g} s"
            except RetryableCall as exc:
                last, wait = str(exc), exc.retry_after_s
            except InvalidModelOutput:
                self.breaker.succeeded()  # it answered: the endpoint is up
                raise
            else:
                self.breaker.succeeded()
                return answer
            self.breaker.failed()
            if attempt < self.spec.retries:
                jitter = random.uniform(1, 1.5)  # noqa: S311 (spreads retries; not a secret)
                await asyncio.sleep(wait if wait is not None else self._backoff_s * 2**attempt * jitter)
        raise ModelUnavailable(f"model {self.spec.name}: {last} ({self.spec.retries + 1} attempts)")


def builtin(spec: Model) -> Attempt:
    """A Python callable named ``module:function`` (sync or async) taking and returning a JSON object."""
    assert spec.entry_point is not None
    module, _, name = spec.entry_point.partition(":")
    function = getattr(importlib.import_module(module), name)
    if inspect.iscoroutinefunction(function):
        return function  # type: ignore[no-any-return]

    async def call(inputs: dict[str, Any]) -> Any:
        return function(inputs)

    return call


def resolve_entry_point(entry_point: str) -> str | None:
    """Why ``entry_point`` cannot be loaded, or None (checked when contracts load, not on the first event)."""
    module, _, name = entry_point.partition(":")
    try:
        found = getattr(importlib.import_module(module), name, None)
    except ImportError as exc:
        return f"cannot import '{module}' ({exc})"
    return None if callable(found) else f"'{module}' has no callable '{name}'"


class Models:
    """The model clients of the running configuration, one per endpoint, so each endpoint has one concurrency
    bound and one circuit breaker whichever organizations share it."""

    def __init__(self, http: httpx.AsyncClient | None = None, openai_http: httpx2.AsyncClient | None = None) -> None:
        """``http`` carries KServe calls; ``openai_http`` the openai client's (its own HTTP stack, ``httpx2``):
        by default each OpenAI-compatible endpoint gets a pool of its own."""
        self._http = http or httpx.AsyncClient()
        self._openai_http = openai_http
        self._clients: dict[tuple[str, ...], Guarded] = {}
        self._openai: list[openai.AsyncOpenAI] = []

    async def aclose(self) -> None:
        await self._http.aclose()
        for client in self._openai:
            await client.close()

    def client(self, spec: Model) -> Guarded:
        key = (spec.kind, spec.entry_point or spec.endpoint or "", spec.name, spec.version)
        found = self._clients.get(key)
        if found is None or found.spec != spec:
            found = self._clients[key] = Guarded(spec, self._attempt(spec))
        return found

    def _attempt(self, spec: Model) -> Attempt:
        if spec.kind == "builtin":
            return builtin(spec)
        if spec.kind == "kserve-v2":
            return kserve_v2(spec, self._http)
        client = client_for(spec, self._openai_http)
        self._openai.append(client)
        return openai_chat(spec, client)
