"""Inference benchmark: events per second of one replica, with the builtin model and with a remote model that
answers in 50 ms, next to a bare relay on the same broker; and webhook-to-draft latency at 200 notifications/s.

    .venv/bin/python bench/inference/bench_inference.py [--events 2000] [--write docs/benchmarks.md]

Starts its own broker (Tansu), Redis and a fast stand-in EHR, token API and model server
(``ehrflow_devstack.fast_ehr``: the sandbox EHR answers ~50 requests/s and would be what is measured).

1. Backlog throughput. N notification events (full-resource NEWS2 triggers, each for a new patient) are
   published to a replica that has settled (it drained a warm-up batch first, so its consumers have joined
   their group: a joining consumer stops the whole group for a rebalance), and it drains them; the rate is
   (N - 1) / (time between the first and the last draft's Kafka timestamps). Baseline, same run: a bare FastStream consumer that
   republishes each record of the same backlog to another topic (the bus's own consume-and-publish rate).
2. The same with the readmission workflow, whose KServe v2 model answers after 50 ms, at 1, 4 and 6
   workers (consumers of the partitions, ``EHRFLOW_WORKERS``). Baseline: workers / 50 ms, the rate the
   model's latency allows.
3. Latency at a set load: ingest and inference running, notifications posted at 200/s for 15 s (open loop);
   webhook-to-draft = the draft's ``received_at`` minus its event's ``received_at`` at ingest, plus nothing
   else (the same clock). Baseline, same run: the webhook's own answer time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from faststream import FastStream
from faststream.kafka import KafkaBroker

from ehrflow_contracts import NotificationReceived, topics
from ehrflow_devstack import samples
from ehrflow_devstack.config import WEBHOOK_HEADER, generate, write_registry
from ehrflow_devstack.loadgen import COUNTER, open_loop, publish_report
from ehrflow_devstack.mock_fhir import event_about
from ehrflow_devstack.parts import Part, start_redis, start_tansu
from ehrflow_devstack.processes import Process, free_port, tcp_open
from ehrflow_devstack.stack import launch_service

RELAYED = "bench.relay.v1"


async def read_timed(bootstrap: str, topic: str) -> list[tuple[dict[str, Any], int]]:
    """Every record on the topic with its Kafka timestamp (ms)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()  # noqa: SLF001 - a topic made moments ago
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        if not partitions:
            return []
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        found: list[tuple[dict[str, Any], int]] = []
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                found += [(json.loads(r.value), r.timestamp) for r in records]
        return found
    finally:
        await consumer.stop()


async def publish(bootstrap: str, topic: str, events: list[NotificationReceived]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        sent = [
            await producer.send(topic, e.model_dump_json().encode(), key=f"{e.organization_id}|{e.patient}".encode())
            for e in events
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def wait_for(bootstrap: str, topic: str, prefix: str, count: int, timeout: float = 600) -> list[int]:
    """Kafka timestamps of the records whose patient starts with ``prefix``, once ``count`` are there."""
    deadline = time.monotonic() + timeout
    while True:
        found = [
            ts for value, ts in await read_timed(bootstrap, topic) if str(value.get("patient", "")).startswith(prefix)
        ]
        if len(found) >= count:
            return sorted(found)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{topic}: {len(found)} of {count} after {timeout:.0f}s")
        await asyncio.sleep(1)


def rate(stamps: list[int]) -> float:
    return (len(stamps) - 1) / max((stamps[-1] - stamps[0]) / 1000, 1e-9)


def news2_events(prefix: str, n: int) -> list[NotificationReceived]:
    return [
        event_about(samples.observation(f"{prefix}{i}", patient=f"Patient/{prefix}{i}"), patient=f"Patient/{prefix}{i}")
        for i in range(n)
    ]


def stay_events(prefix: str, n: int) -> list[NotificationReceived]:
    def stay(i: int) -> dict[str, Any]:
        return {
            "resourceType": "Encounter",
            "id": f"{prefix}{i}",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
            "subject": {"reference": f"Patient/{prefix}{i}"},
            "period": {"start": "2026-11-15T08:00:00+00:00", "end": "2026-11-20T08:00:00+00:00"},
        }

    return [event_about(stay(i), patient=f"Patient/{prefix}{i}") for i in range(n)]


async def relay_rate(bootstrap: str, n: int) -> float:
    """The bus's own consume-and-publish rate: a bare FastStream consumer republishing each record."""
    broker = KafkaBroker(bootstrap, acks="all", linger_ms=0, max_batch_size=256 * 1024, logger=None)
    out = broker.publisher(RELAYED)

    @broker.subscriber("bench.backlog.v1", group_id="bench-relay", auto_offset_reset="earliest")
    async def relay(event: dict[str, Any]) -> None:
        await out.publish(event, key=str(event.get("patient", "")).encode())

    await publish(bootstrap, "bench.backlog.v1", news2_events("relay-", n))
    app = FastStream(broker)
    task = asyncio.create_task(app.run())
    try:
        return rate(await wait_for(bootstrap, RELAYED, "Patient/relay-", n))
    finally:
        app.exit()
        await task


class Bench:
    def __init__(self, state: Path) -> None:
        self.state = state
        self.started: list[Part | Process] = []

    def __enter__(self) -> Bench:
        self.broker = self._keep(start_tansu(self.state))
        self.redis = self._keep(start_redis(self.state))
        port = free_port()
        self.ehr_url = f"http://127.0.0.1:{port}"
        argv = [sys.executable, "-m", "ehrflow_devstack.fast_ehr", "--port", str(port), "--model-delay-ms", "50"]
        fast = Process(
            "fast-ehr", argv, self.state / "logs" / "fast-ehr.log", ready=lambda: tcp_open("127.0.0.1", port)
        )
        fast.start()
        self._keep(fast)
        self.config = generate(self.state / "config")
        return self

    def __exit__(self, *_: object) -> None:
        for item in reversed(self.started):
            item.stop()

    def _keep(self, item: Any) -> Any:
        self.started.append(item)
        return item

    def registry(self, name: str, workflow: str) -> Path:
        path = write_registry(
            self.config, {"org1": f"{self.ehr_url}/fhir", "org2": f"{self.ehr_url}/fhir"}, {"readmission": self.ehr_url}
        )
        data = yaml.safe_load(path.read_text())
        for org in data["organizations"].values():
            org["workflows"] = {workflow: org["workflows"][workflow]}
        out = path.with_name(f"organizations-{name}.yaml")
        out.write_text(yaml.safe_dump(data))
        return out

    def env(self, service: str, registry: Path, **extra: str) -> dict[str, str]:
        return {
            "EHRFLOW_ORGANIZATIONS_FILE": str(registry),
            "EHRFLOW_KAFKA__BOOTSTRAP_SERVERS": self.broker.url,
            "EHRFLOW_KAFKA__ENABLE_IDEMPOTENCE": "false",
            "EHRFLOW_REDIS_URL": self.redis.url,
            "EHRFLOW_AUTH__URL": self.ehr_url,
            "EHRFLOW_AUTH__SERVICE_NAME": service,
            "EHRFLOW_AUTH__CREDENTIAL_FILE": str(self.config.credentials_dir / service),
            "EHRFLOW_CONTRACT_CHECK": "off",
            "EHRFLOW_LOG_LEVEL": "WARNING",
            "OTEL_TRACES_EXPORTER": "none",
            **extra,
        }

    def service(self, service: str, registry: Path, **extra: str) -> tuple[Process, str]:
        url = f"http://127.0.0.1:{free_port()}"
        env = self.env(service, registry, EHRFLOW_PORT=url.rsplit(":", 1)[1], **extra)
        return launch_service(service, url, self.state / "logs" / f"{service}.log", env), url

    async def settle(self, like: NotificationReceived, workers: int) -> None:
        """Drain a warm-up batch first, so every consumer of the replica has joined its group and holds its
        partitions (each joining consumer makes the group rebalance, which stops every consumer) before the
        measured backlog is published."""
        await publish(self.broker.url, topics.NOTIFICATION_RECEIVED, warm_up_events(like, WARM_UP))
        await wait_for(self.broker.url, topics.DRAFT_PROPOSED, "Patient/warm-", WARM_UP)
        await asyncio.sleep(2)

    async def drain(self, registry: Path, events: list[NotificationReceived], prefix: str, workers: int) -> float:
        """One replica draining a backlog, on a broker of its own: a consumer group whose last members have just
        left makes the next joiner wait out their rebalance timeout on some brokers (Tansu among them)."""
        shared, self.broker = self.broker, start_tansu(self.state / prefix)
        try:
            process, _ = self.service("inference", registry, EHRFLOW_WORKERS=str(workers))
            try:
                await self.settle(events[0], workers)
                await publish(self.broker.url, topics.NOTIFICATION_RECEIVED, events)
                return rate(await wait_for(self.broker.url, topics.DRAFT_PROPOSED, f"Patient/{prefix}", len(events)))
            finally:
                process.stop()
        finally:
            self.broker.stop()
            self.broker = shared


WARM_UP = 60


def warm_up_events(like: NotificationReceived, n: int) -> list[NotificationReceived]:
    """``n`` events like ``like`` for patients ``warm-…``, spread over every partition."""
    out = []
    for i in range(n):
        patient = f"Patient/warm-{i}"
        resource = {**(like.resource or {}), "id": f"warm-{i}", "subject": {"reference": patient}}
        out.append(event_about(resource, patient=patient))
    return out


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def latency(bench: Bench, seconds: float, per_s: float) -> dict[str, float]:
    registry = bench.registry("latency", "news2")
    ingest, ingest_url = bench.service("ingest", registry, EHRFLOW_BACKGROUND="false")
    inference, _ = bench.service("inference", registry, EHRFLOW_WORKERS="4")
    try:
        await bench.settle(news2_events("settle-", 1)[0], 4)
        body = samples.r4_backport(
            events=[(COUNTER, samples.observation(f"lat-{COUNTER}", patient=f"Patient/lat-{COUNTER}"))],
            subscription="bench",
        )
        headers = {"Content-Type": "application/fhir+json", WEBHOOK_HEADER: bench.config.webhook_secret("org1")}
        webhook = await open_loop(
            f"{ingest_url}/v1/notify/org1", json.dumps(body), headers, rate=per_s, seconds=seconds
        )
        total = webhook.requests
        drafts = await wait_for(bench.broker.url, topics.DRAFT_PROPOSED, "Patient/lat-", total)
        assert len(drafts) >= total
        events = {v["correlation_id"]: v for v, _ in await read_timed(bench.broker.url, topics.NOTIFICATION_RECEIVED)}
        gaps = [
            (
                datetime.fromisoformat(d["received_at"])
                - datetime.fromisoformat(events[d["correlation_id"]]["received_at"])
            ).total_seconds()
            * 1000
            for d, _ in await read_timed(bench.broker.url, topics.DRAFT_PROPOSED)
            if str(d.get("patient", "")).startswith("Patient/lat-") and d["correlation_id"] in events
        ]
        return {
            "rate": webhook.rps,
            "webhook_p50": webhook.p50_ms,
            "webhook_p99": webhook.p99_ms,
            "draft_p50": statistics.median(gaps),
            "draft_p99": _percentile(gaps, 99),
            "drafts": len(gaps),
            "errors": webhook.errors,
        }
    finally:
        inference.stop()
        ingest.stop()


async def run(events: int, write: Path | None) -> None:
    with tempfile.TemporaryDirectory(prefix="ehrflow-bench-inference-") as tmp, Bench(Path(tmp)) as bench:
        relay = await relay_rate(bench.broker.url, events)
        news2 = bench.registry("news2", "news2")
        builtin = {w: await bench.drain(news2, news2_events(f"b{w}-", events), f"b{w}-", w) for w in (1, 4)}
        remote_registry = bench.registry("remote", "readmission")
        remote_n = 300
        remote = {
            w: await bench.drain(remote_registry, stay_events(f"r{w}-", remote_n), f"r{w}-", w) for w in (1, 4, 6)
        }
        lat = await latency(bench, seconds=15, per_s=200)
    lines = [
        "",
        f"## Inference — {datetime.now(UTC):%Y-%m-%d} ({platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()})",
        "",
        f"Backlog of {events:,} events drained by one replica (`bench/inference/bench_inference.py`):",
        "",
        "| what | events/s | baseline (same run) | ratio |",
        "|---|---:|---|---:|",
        *[
            f"| NEWS2, builtin model, {w} worker(s) | {r:,.0f} | bare relay {relay:,.0f}/s | {r / relay:.2f} |"
            for w, r in builtin.items()
        ],
        *[
            f"| readmission, KServe v2 model answering in 50 ms, {w} worker(s) | {r:,.1f} | "
            f"{w} / 50 ms = {w / 0.05:,.0f}/s | {r / (w / 0.05):.2f} |"
            for w, r in remote.items()
        ],
        "",
        f"Webhook to draft at {lat['rate']:.0f} notifications/s for 15 s (ingest and inference with 4 workers, "
        f"{lat['drafts']:,.0f} drafts, {lat['errors']:.0f} webhook errors):",
        "",
        "| what | p50 ms | p99 ms |",
        "|---|---:|---:|",
        f"| webhook answered (baseline) | {lat['webhook_p50']:.1f} | {lat['webhook_p99']:.1f} |",
        f"| event recorded by ingest → draft published | {lat['draft_p50']:.1f} | {lat['draft_p99']:.1f} |",
    ]
    publish_report("\n".join(lines), write)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    asyncio.run(run(args.events, args.write))


if __name__ == "__main__":
    main()
