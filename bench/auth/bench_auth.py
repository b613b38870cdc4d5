"""Auth benchmark: cached-token requests next to a bare endpoint, and a cold stampede.

    .venv/bin/python bench/auth/bench_auth.py [--seconds 10] [--rounds 3] [--concurrency 32] [--write docs/benchmarks.md]

Starts its own broker, Redis, counting token endpoint, auth service and bare endpoint on loopback; drives
each with a closed loop of ``concurrency`` connections for ``seconds`` (after a warm-up), alternating the two
for ``rounds`` rounds; reports the median round's requests/s and p50/p99 latency of both (same ASGI server,
same worker count, same machine, same run), their ratio and every round's p99; then fires 200 concurrent
requests for a never-requested organization and counts the upstream token requests. Bounded in time and
count; loopback only.
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

import aiohttp
import yaml

from ehrflow_devstack.config import generate
from ehrflow_devstack.loadgen import LOAD, SERVER_CPU, Result, drive, median_round, publish_report, start_server
from ehrflow_devstack.parts import Part, start_redis, start_tansu
from ehrflow_devstack.processes import Process, free_port

COLD_REQUESTS = 200


async def stampede(url: str, body: dict[str, object], headers: dict[str, str]) -> tuple[list[float], int]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=COLD_REQUESTS), headers=headers) as s:

        async def one() -> float:
            started = time.perf_counter()
            async with s.post(url, json=body) as r:
                await r.read()
                assert r.status == 200, r.status
            return (time.perf_counter() - started) * 1000

        return list(await asyncio.gather(*[one() for _ in range(COLD_REQUESTS)])), COLD_REQUESTS


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--write", type=Path, help="append the results to this Markdown file")
    args = parser.parse_args()

    state = Path(tempfile.mkdtemp(prefix="ehrflow-bench-auth-"))
    started: list[Process | Part] = []
    try:
        broker = start_tansu(state)
        started.append(broker)
        redis = start_redis(state)
        started.append(redis)
        upstream_port = free_port()
        upstream = f"http://127.0.0.1:{upstream_port}"
        started.append(
            start_server(
                "token-server",
                [
                    sys.executable,
                    "-m",
                    "ehrflow_devstack.token_server",
                    str(upstream_port),
                    "--delay",
                    "0.1",
                    "--expires-in",
                    "3600",
                ],
                state / "token-server.log",
                {},
                f"{upstream}/stats",
            )
        )
        config = generate(state / "config")
        orgs = {
            name: {
                "name": name,
                "fhir_base_url": f"{upstream}/fhir",
                "allow_insecure_http": True,
                "backend_auth": {"client_id": "bench", "keys": [{"file": "keys/org1.pem", "kid": "k1"}]},
                "features": {"news2": ["system/*.read"]},
                "ingest": {"secrets": [{"header": "X-S", "file": "secrets/org1-webhook"}]},
                "review": {"api_key_file": "secrets/org1-review"},
            }
            for name in ("hot", "cold")
        }
        config.organizations_file.write_text(yaml.safe_dump({"organizations": orgs}))
        auth_port, bare_port = free_port(), free_port()
        env = {
            "EHRFLOW_ORGANIZATIONS_FILE": str(config.organizations_file),
            "EHRFLOW_SERVICE_POLICY_FILE": str(config.policy_file),
            "EHRFLOW_TOKEN_CACHE_KEY_FILE": str(config.cache_key_file),
            "EHRFLOW_KAFKA__BOOTSTRAP_SERVERS": broker.url,
            "EHRFLOW_KAFKA__ENABLE_IDEMPOTENCE": "false",
            "EHRFLOW_REDIS_URL": redis.url,
            "EHRFLOW_PORT": str(auth_port),
            "EHRFLOW_LOG_LEVEL": "WARNING",
        }
        started.append(
            start_server(
                "auth",
                [*SERVER_CPU, sys.executable, "-m", "ehrflow_auth.main"],
                state / "auth.log",
                env,
                f"http://127.0.0.1:{auth_port}/readyz",
            )
        )
        started.append(
            start_server(
                "bare",
                [*SERVER_CPU, sys.executable, "-m", "ehrflow_devstack.bare_endpoint", str(bare_port)],
                state / "bare.log",
                {},
                f"http://127.0.0.1:{bare_port}/bare",
            )
        )
        credential = config.service_credential("inference")
        headers = {"Authorization": f"Bearer {credential}", "X-Ehrflow-Service": "inference"}
        hot = {"organization": "hot", "feature": "news2"}
        token_url = f"http://127.0.0.1:{auth_port}/internal/v1/tokens"

        async def run() -> tuple[list[Result], list[Result], list[float], int]:
            async with aiohttp.ClientSession(headers=headers) as s, s.post(token_url, json=hot) as r:
                assert r.status == 200, await r.text()  # the first request fetches the token upstream
            loop_args = {"concurrency": args.concurrency, "seconds": args.seconds, "warmup": args.warmup}
            bare_url = f"http://127.0.0.1:{bare_port}/bare"
            json_headers = {**headers, "Content-Type": "application/json"}
            bare, cached = [], []
            for _ in range(args.rounds):
                bare.append(await drive(bare_url, json.dumps(hot), json_headers, **loop_args))
                cached.append(await drive(token_url, json.dumps(hot), json_headers, **loop_args))
            cold, _ = await stampede(token_url, {"organization": "cold", "feature": "news2"}, headers)
            async with aiohttp.ClientSession() as s, s.get(f"{upstream}/stats") as r:
                upstream_requests = int((await r.json())["token_requests"])
            return bare, cached, cold, upstream_requests

        load_before = os.getloadavg()[0]
        bare_rounds, cached_rounds, cold, upstream_requests = asyncio.run(run())
    finally:
        for item in reversed(started):
            item.stop()

    bare, cached = median_round(bare_rounds), median_round(cached_rounds)
    bare.name, cached.name = "bare Starlette endpoint (baseline)", "auth: cached token (`POST /internal/v1/tokens`)"
    p99s = ", ".join(f"{b.p99_ms:.2f} / {c.p99_ms:.2f}" for b, c in zip(bare_rounds, cached_rounds, strict=True))
    cold_sorted = sorted(cold)
    report = "\n".join(
        [
            f"### Auth — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            "",
            f"`python bench/auth/bench_auth.py --seconds {args.seconds:g} --rounds {args.rounds} "
            f"--concurrency {args.concurrency}` on {os.cpu_count()} cores ({platform.machine()}, Python "
            f"{platform.python_version()}; load average {load_before:.2f} before the run); one uvicorn worker each, "
            f"loopback; load from {LOAD}; {args.rounds} rounds of {args.seconds:g} s, bare and auth alternating, "
            "median round shown.",
            "",
            "| endpoint | requests/s | p50 ms | p99 ms | requests | errors |",
            "|---|---|---|---|---|---|",
            bare.row(),
            cached.row(),
            "",
            f"- cached-token throughput is **{cached.rps / bare.rps:.0%}** of the bare endpoint's; "
            f"cached p99 **{cached.p99_ms:.2f} ms** at a concurrency of {args.concurrency} "
            f"(p99 per round, bare / auth: {p99s} ms).",
            f"- cold stampede: {COLD_REQUESTS} concurrent requests for a never-requested organization → "
            f"**{upstream_requests - 1} upstream token request(s)** (one more was the warm-up's), "
            f"p50 {statistics.median(cold_sorted):.0f} ms, max {cold_sorted[-1]:.0f} ms "
            "(the counting token endpoint answers after 100 ms).",
            "",
        ]
    )
    publish_report(report, args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
