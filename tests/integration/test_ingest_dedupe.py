"""Re-delivery of the same notification: 200 again, and one record on Kafka (docs/design/notifications.md items 9, 22);
the dedupe store's states against a real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from ehrflow_contracts import topics
from ehrflow_devstack import samples
from ehrflow_devstack.config import WEBHOOK_HEADER
from ehrflow_devstack.kafka_read import read_topic
from ehrflow_devstack.stack import Stack
from ehrflow_ingest.dedupe import Dedupe
from ehrflow_runtime.redis_client import make_redis

pytestmark = pytest.mark.integration


def test_the_same_event_twice_is_published_once(stack: Stack) -> None:
    assert stack.config and stack.broker
    marker = f"dedupe-{uuid.uuid4().hex[:8]}"
    headers = {"Content-Type": "application/fhir+json", WEBHOOK_HEADER: stack.config.webhook_secret("org1")}
    answers = []
    for _ in range(2):  # a sender retrying, with a new Bundle id and status fullUrl each time
        body = json.dumps(samples.r4_backport(events=[(41, samples.observation(marker))], subscription=marker))
        answers.append(httpx.post(f"{stack.urls['ingest']}/v1/notify/org1", content=body, headers=headers, timeout=10))
    assert [a.status_code for a in answers] == [200, 200]
    assert "1 duplicate" in answers[1].json()["issue"][0]["diagnostics"]
    events = [
        e
        for e in read_topic(stack.broker.url, topics.NOTIFICATION_RECEIVED)
        if (e.get("focus") or {}).get("reference") == f"Observation/{marker}"
    ]
    assert len(events) == 1


def test_one_event_listed_twice_in_one_notification_is_published_once(stack: Stack) -> None:
    """The second listing used to claim the key its first listing had just claimed pending: 503, forever."""
    assert stack.config and stack.broker
    marker = f"twice-{uuid.uuid4().hex[:8]}"
    headers = {"Content-Type": "application/fhir+json", WEBHOOK_HEADER: stack.config.webhook_secret("org1")}
    twice = [(5, samples.observation(marker)), (5, samples.observation(marker))]
    body = json.dumps(samples.r4_backport(events=twice, subscription=marker))
    answer = httpx.post(f"{stack.urls['ingest']}/v1/notify/org1", content=body, headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    events = [
        e
        for e in read_topic(stack.broker.url, topics.NOTIFICATION_RECEIVED)
        if (e.get("focus") or {}).get("reference") == f"Observation/{marker}"
    ]
    assert len(events) == 1


@pytest.fixture()
async def dedupe(stack: Stack) -> AsyncIterator[Dedupe]:
    assert stack.redis
    redis = make_redis(stack.redis.url)  # as the service makes it
    dedupe = Dedupe(redis)
    try:
        yield dedupe
    finally:
        await dedupe.aclose()
        await redis.aclose()


def fresh() -> str:
    return uuid.uuid4().hex


async def test_a_settled_key_is_a_duplicate_and_a_pending_one_in_flight(dedupe: Dedupe) -> None:
    settled, pending = fresh(), fresh()
    assert (await dedupe.claim([settled, pending])).new == [settled, pending]
    dedupe.settle([settled])
    await dedupe.flush()
    again = await dedupe.claim([settled, pending])
    assert (again.new, again.duplicates, again.in_flight) == ([], [settled], [pending])


async def test_a_confirmation_and_a_claim_in_one_call_are_taken_in_that_order(dedupe: Dedupe) -> None:
    key = fresh()
    assert (await dedupe.claim([key])).new == [key]
    dedupe.settle([key])  # not written yet: it travels with the next claim
    assert dedupe._sender is not None
    again = await dedupe.claim([key])
    assert again.duplicates == [key]


async def test_two_deliveries_in_one_call_are_new_and_in_flight(dedupe: Dedupe) -> None:
    key = fresh()
    first, second = await asyncio.gather(dedupe.claim([key]), dedupe.claim([key]))
    assert (first.new, second.in_flight) == ([key], [key])


async def test_a_key_whose_alias_is_done_is_a_duplicate_that_is_still_claimed(dedupe: Dedupe) -> None:
    key, alias = fresh(), fresh()
    await dedupe.claim([alias])
    dedupe.settle([alias])
    await dedupe.flush()
    claims = await dedupe.claim([key], {key: alias})
    assert (claims.new, claims.duplicates, claims.seen_as_alias) == ([], [key], [key])


async def test_a_released_claim_is_new_again(dedupe: Dedupe) -> None:
    key = fresh()
    await dedupe.claim([key])
    await dedupe.release([key])
    assert (await dedupe.claim([key])).new == [key]


async def test_without_redis_claims_fail_and_confirmations_are_given_up() -> None:
    redis = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    dedupe = Dedupe(redis)
    dedupe.settle([fresh()])
    with pytest.raises(RedisError):
        await dedupe.claim([fresh()])
    await dedupe.flush()  # returns: a confirmation that cannot be written leaves its claim to expire
    assert dedupe._sender is None
    await dedupe.aclose()
    await redis.aclose()


class Proxy:
    """TCP between Dedupe and the real Redis that can hold replies back or drop its connections."""

    def __init__(self, upstream: str) -> None:
        self.host, port = upstream.split("//")[1].split("/")[0].split(":")
        self.upstream_port = int(port)
        self.delay = 0.0
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"redis://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/0"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.host, self.upstream_port)
        self.writers += [writer, up_writer]

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, delayed: bool) -> None:
            while data := await src.read(65536):
                if delayed and self.delay:
                    await asyncio.sleep(self.delay)
                dst.write(data)
                await dst.drain()
            dst.close()

        with contextlib.suppress(OSError):
            await asyncio.gather(pump(reader, up_writer, False), pump(up_reader, writer, True))

    def drop_connections(self) -> None:
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()

    async def stop(self) -> None:
        self.drop_connections()
        self.server.close()


@pytest.fixture()
async def proxied(stack: Stack) -> AsyncIterator[tuple[Dedupe, Proxy]]:
    assert stack.redis
    proxy = Proxy(stack.redis.url)
    redis = make_redis(await proxy.start() + "?socket_timeout=0.2")
    dedupe = Dedupe(redis)
    try:
        yield dedupe, proxy
    finally:
        await dedupe.aclose()
        await redis.aclose()
        await proxy.stop()


async def test_a_late_reply_fails_its_call_and_is_never_read_as_the_next_ones(proxied: tuple[Dedupe, Proxy]) -> None:
    dedupe, proxy = proxied
    done = fresh()
    await dedupe.claim([done])
    dedupe.settle([done])
    await dedupe.flush()
    proxy.delay = 0.5  # longer than the socket timeout
    with pytest.raises(RedisError):
        await dedupe.claim([fresh()])  # its reply, [1] (new), arrives after the call gave up
    proxy.delay = 0.0
    await asyncio.sleep(0.6)
    assert (await dedupe.claim([done])).duplicates == [done]  # the late [1] read here would say new


async def test_a_dropped_connection_is_replaced_and_the_call_sent_again(proxied: tuple[Dedupe, Proxy]) -> None:
    dedupe, proxy = proxied
    await dedupe.claim([fresh()])
    proxy.drop_connections()
    key = fresh()
    assert (await dedupe.claim([key])).new == [key]


async def test_a_script_redis_lost_is_loaded_again(dedupe: Dedupe, stack: Stack) -> None:
    assert stack.redis
    await dedupe.claim([fresh()])
    redis = make_redis(stack.redis.url)
    await redis.script_flush()  # as after a Redis restart
    await redis.aclose()
    key = fresh()
    assert (await dedupe.claim([key])).new == [key]
