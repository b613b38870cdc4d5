"""The plain-ASGI helpers hot routes use: whole bodies within a limit, and compact JSON answers."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from ehrflow_runtime.asgi import BodyTooLarge, Disconnected, header, read_body, request_headers, send_json


def _scope(*headers: tuple[bytes, bytes]) -> dict[str, Any]:
    return {"type": "http", "headers": list(headers)}


def _receiving(*messages: dict[str, Any]) -> Any:
    pending = list(messages)

    async def receive() -> dict[str, Any]:
        return pending.pop(0)

    return receive


def _read(scope: dict[str, Any], receive: Any, limit: int = 10) -> bytes:
    return asyncio.run(read_body(receive, limit, declared_length=header(scope, b"content-length")))


def test_a_body_in_several_chunks_is_joined() -> None:
    receive = _receiving(
        {"type": "http.request", "body": b"abc", "more_body": True},
        {"type": "http.request", "body": b"", "more_body": True},
        {"type": "http.request", "body": b"def"},
    )
    assert _read(_scope(), receive) == b"abcdef"


def test_a_body_exactly_at_the_limit_is_read() -> None:
    assert _read(_scope(), _receiving({"type": "http.request", "body": b"x" * 10})) == b"x" * 10


def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    receive = _receiving()  # nothing to receive: reading would fail with IndexError
    with pytest.raises(BodyTooLarge):
        _read(_scope((b"content-length", b"11")), receive)


def test_a_streamed_body_over_the_limit_is_refused_without_a_declared_length() -> None:
    receive = _receiving(
        {"type": "http.request", "body": b"x" * 6, "more_body": True},
        {"type": "http.request", "body": b"x" * 5, "more_body": True},
    )
    with pytest.raises(BodyTooLarge):
        _read(_scope(), receive)


def test_a_client_that_leaves_midway_is_reported() -> None:
    receive = _receiving({"type": "http.request", "body": b"x", "more_body": True}, {"type": "http.disconnect"})
    with pytest.raises(Disconnected):
        _read(_scope(), receive)


def test_header_finds_the_first_value_by_lower_case_name() -> None:
    scope = _scope((b"x-a", b"1"), (b"x-b", b"caf\xe9"), (b"x-a", b"2"))
    assert (header(scope, b"x-a"), header(scope, b"x-b"), header(scope, b"x-c")) == ("1", "café", None)


def test_request_headers_keeps_the_first_value_of_each_name_in_lower_case() -> None:
    scope = _scope((b"x-a", b"1"), (b"X-B", b"caf\xe9"), (b"x-a", b"2"))
    assert request_headers(scope) == {"x-a": "1", "x-b": "café"}


def test_send_json_answers_compact_json_with_its_length_and_extra_headers() -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(send_json(send, 201, {"a": [1, "é"]}, [(b"cache-control", b"no-store")]))
    start, body = sent
    assert start["status"] == 201
    assert dict(start["headers"]) == {
        b"content-type": b"application/json",
        b"content-length": str(len(body["body"])).encode(),
        b"cache-control": b"no-store",
    }
    assert json.loads(body["body"]) == {"a": [1, "é"]} and b" " not in body["body"]
