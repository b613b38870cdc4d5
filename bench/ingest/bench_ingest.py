"""Ingest benchmark: the webhook next to a bare endpoint and next to the broker's own produce rate.

    .venv/bin/python bench/ingest/bench_ingest.py [--seconds 10] [--write docs/benchmarks.md]

Starts its own broker (Tansu), Redis, ingest and bare endpoint on loopback. Every request is a new,
realistic notification (R4 backport, full-resource, one vital-signs Observation: ~1.5 KB), so each one
is authenticated, parsed, claimed in Redis, published with acks=all, confirmed and tracked.

1. closed loops at several concurrency levels, ingest and the bare endpoint (same ASGI server, one worker
   each, same machine, same run);
2. the broker's produce rate (acks=all, records of the same size, 32 in flight) from this process;
3. an open loop at half of ingest's peak rate, for its latency at a sustainable load;
4. a cProfile of the request path in-process (ASGI transport, real broker and Redis): where the CPU goes.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import platform
import pstats
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from ehrflow_contracts import NotificationReceived, topics
from ehrflow_contracts.events import Reference
from ehrflow_devstack import samples
from ehrflow_devstack.config import WEBHOOK_HEADER, generate, write_registry
from ehrflow_devstack.loadgen import COUNTER, LOAD, SERVER_CPU, Result, drive, open_loop, publish_report, start_server
from ehrflow_devstack.parts import Part, start_redis, start_tansu
from ehrflow_devstack.processes import Process, free_port
from ehrflow_ingest.main import create_app
from ehrflow_ingest.settings import IngestSettings
from ehrflow_runtime.broker import ensure_topics, make_broker
from ehrflow_runtime.settings import KafkaSettings

LEVELS = (1, 8, 32, 64)
TARGET_LEVEL = 32
PROFILED_REQUESTS = 2_000
STAGES = {
    "read body": "read_body",
    "sender authentication": "authenticate",
    "parse (JSON + notification)": "_parse",
    "bus records (pydantic)": "bus_records",
    "dedupe claim (Redis)": "_claim",
    "publish, wait for acks=all": "publish",
    "tracking (hand-over; Redis written in the background)": "notification",
    "answer + log line": "_accepted",
}
"""Profiled stages and the function whose cumulative time each is."""


def notification_body() -> str:
    """A notification whose event number (and so its dedupe key) changes with every request."""
    body = samples.r4_backport(events=[(COUNTER, samples.observation(f"bench-{COUNTER}"))], subscription="bench")
    return json.dumps(body)


async def produce_rate(bootstrap: str, seconds: float, in_flight: int = 32) -> float:
    """Records/s the broker confirms with acks=all from one aiokafka producer, ``in_flight`` at a time."""
    kafka = KafkaSettings(bootstrap_servers=bootstrap, enable_idempotence=False)
    broker = make_broker(kafka, client_id="bench")
    publisher = broker.publisher(topics.NOTIFICATION_RECEIVED)
    await broker.start()
    try:
        record = NotificationReceived(
            organization_id="org1",
            correlation_id="c",
            flavour="r4-backport",
            notification_type="event-notification",
            content_level="full-resource",
            event_number=1,
            focus=Reference(reference="Observation/bench", original="http://ehr.example.org/fhir/Observation/bench"),
            resource=samples.observation("bench"),
            dedupe_key="k",
        )
        done = 0
        stop_at = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < stop_at:
                await publisher.publish(record, key=b"org1|Patient/p1")
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(in_flight)])
        return done / (time.perf_counter() - started)
    finally:
        await broker.stop()


async def profile(settings: IngestSettings, secret: str) -> list[tuple[str, float]]:
    """Share of the route handler's CPU time per stage (cProfile's cumulative time of each stage's function)."""
    app = create_app(settings)
    body = notification_body()
    headers = {"Content-Type": "application/fhir+json", WEBHOOK_HEADER: secret}
    profiler = cProfile.Profile()
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://i") as c:
        start = int(time.time()) * 1_000_000  # the load generators' numbering: one rising sequence
        for n in range(50):  # warm-up
            await c.post("/v1/notify/org1", content=body.replace(COUNTER, str(start + n)), headers=headers)
        profiler.enable()
        for n in range(50, 50 + PROFILED_REQUESTS):
            r = await c.post("/v1/notify/org1", content=body.replace(COUNTER, str(start + n)), headers=headers)
            assert r.status_code == 200, r.text
        profiler.disable()
    stats = pstats.Stats(profiler)
    total = 0.0
    by_name: dict[str, float] = {}
    for (_, _, name), (_, _, _, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        if name == "answer":  # Webhook.answer: everything the route does before sending its answer
            total = max(total, cumulative)
        by_name[name] = max(by_name.get(name, 0.0), cumulative)
    return [("whole request (Webhook.answer)", total)] + [(stage, by_name.get(fn, 0.0)) for stage, fn in STAGES.items()]


def _cpu(result: Result) -> str:
    return "" if result.server_cpu_us is None else f"{result.server_cpu_us:.0f}"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--write", type=Path, help="append the results to this Markdown file")
    args = parser.parse_args()

    state = Path(tempfile.mkdtemp(prefix="ehrflow-bench-ingest-"))
    started: list[Process | Part] = []
    try:
        broker = start_tansu(state)
        started.append(broker)
        redis = start_redis(state)
        started.append(redis)
        config = generate(state / "config")
        write_registry(config, {"org1": "http://127.0.0.1:9/fhir", "org2": "http://127.0.0.1:10/fhir"})
        ingest_port, bare_port = free_port(), free_port()
        env = {
            "EHRFLOW_ORGANIZATIONS_FILE": str(config.organizations_file),
            "EHRFLOW_KAFKA__BOOTSTRAP_SERVERS": broker.url,
            "EHRFLOW_KAFKA__ENABLE_IDEMPOTENCE": "false",
            "EHRFLOW_REDIS_URL": redis.url,
            "EHRFLOW_PORT": str(ingest_port),
            "OTEL_TRACES_EXPORTER": "none",
        }
        ingest_server = start_server(
            "ingest",
            [*SERVER_CPU, sys.executable, "-m", "ehrflow_ingest.main"],
            state / "ingest.log",
            env,
            f"http://127.0.0.1:{ingest_port}/readyz",
        )
        started.append(ingest_server)
        bare_server = start_server(
            "bare",
            [*SERVER_CPU, sys.executable, "-m", "ehrflow_devstack.bare_endpoint", str(bare_port)],
            state / "bare.log",
            {},
            f"http://127.0.0.1:{bare_port}/bare",
        )
        started.append(bare_server)
        body = notification_body()
        headers = {"Content-Type": "application/fhir+json", WEBHOOK_HEADER: config.webhook_secret("org1")}
        ingest_url = f"http://127.0.0.1:{ingest_port}/v1/notify/org1"
        bare_url = f"http://127.0.0.1:{bare_port}/bare"
        loop = {"seconds": args.seconds, "warmup": args.warmup}

        async def run() -> tuple[dict[int, tuple[Result, Result]], float, Result]:
            levels = {}
            for level in LEVELS:
                bare = await drive(bare_url, body, headers, concurrency=level, server_pid=bare_server.popen.pid, **loop)
                ingest = await drive(
                    ingest_url, body, headers, concurrency=level, server_pid=ingest_server.popen.pid, **loop
                )
                levels[level] = (bare, ingest)
            produced = await produce_rate(broker.url, args.seconds)
            peak = max(ingest.rps for _, ingest in levels.values())
            half = await open_loop(ingest_url, body, headers, rate=peak / 2, seconds=args.seconds)
            return levels, produced, half

        levels, produced, half = asyncio.run(run())
        for item in reversed(started[2:]):
            item.stop()
        del started[2:]
        settings = IngestSettings(
            organizations_file=config.organizations_file,
            redis_url=redis.url,
            kafka=KafkaSettings(bootstrap_servers=broker.url, enable_idempotence=False),
            background=False,
        )
        asyncio.run(ensure_topics(settings.kafka, topics.ALL))
        stages = asyncio.run(profile(settings, config.webhook_secret("org1")))
    finally:
        for item in reversed(started):
            item.stop()

    rows = []
    for level, (bare, ingest) in levels.items():
        bare.name, ingest.name = "bare Starlette endpoint", "ingest `POST /v1/notify/{org}`"
        rows += [
            bare.row(str(level), "", _cpu(bare)),
            ingest.row(str(level), f"**{ingest.rps / bare.rps:.0%}**", _cpu(ingest)),
        ]
    target_bare, target_ingest = levels[TARGET_LEVEL]
    cpu_ratio = (
        f" Per request the server spent {target_ingest.server_cpu_us:.0f} µs of CPU against the bare endpoint's "
        f"{target_bare.server_cpu_us:.0f} µs (1 : {target_ingest.server_cpu_us / target_bare.server_cpu_us:.1f});"
        f" ingest kept its core {target_ingest.rps * target_ingest.server_cpu_us / 1e4:.0f} % busy."
        if target_ingest.server_cpu_us and target_bare.server_cpu_us
        else ""
    )
    whole = stages[0][1]
    report = "\n".join(
        [
            f"### Ingest — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            "",
            f"`python bench/ingest/bench_ingest.py --seconds {args.seconds:g}` on {os.cpu_count()} cores "
            f"({platform.machine()}, Python {platform.python_version()}); one uvicorn worker each, loopback; "
            f"load from {LOAD}; every request a new R4 backport full-resource notification "
            f"({len(body)} bytes), published with acks=all to Tansu.",
            "",
            "| endpoint | concurrency | of bare | server CPU µs/request | requests/s | p50 ms | p99 ms | requests "
            "| non-200 |",
            "|---|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"- at a concurrency of {TARGET_LEVEL}, ingest reaches **{target_ingest.rps / target_bare.rps:.0%}** of the "
            f"bare endpoint's requests/s (target: at least 25 %).{cpu_ratio}",
            f"- at half of ingest's peak ({half.rps:,.0f} requests/s offered in an open loop): p50 "
            f"{half.p50_ms:.1f} ms, **p99 {half.p99_ms:.1f} ms** (target: under 50 ms); {half.errors} non-200.",
            f"- the broker alone confirms **{produced:,.0f} records/s** (acks=all, 32 in flight, one producer): "
            f"ingest's peak is {max(i.rps for _, i in levels.values()) / produced:.0%} of it.",
            "",
            f"Where a request's CPU time goes ({PROFILED_REQUESTS:,} requests through the ASGI app in-process "
            "under cProfile, real broker and Redis; a coroutine is counted only while it runs, so waiting for "
            "Redis or the broker is not in these shares):",
            "",
            "| stage | share of the route handler |",
            "|---|---|",
            *[f"| {stage} | {seconds / whole:.0%} |" for stage, seconds in stages[1:]],
            "",
        ]
    )
    publish_report(report, args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
