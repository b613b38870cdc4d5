"""Auth benchmark: cached-token requests next to a bare endpoint, and a cold stampede.

    .venv/bin/python bench/auth/bench_auth.py [--seconds 10] [--concurrency 32] [--write docs/benchmarks.md]

Starts its own broker, Redis, counting token endpoint, auth service and bare endpoint on loopback; drives
each with a closed loop of ``concurrency`` aiohttp requests for ``seconds`` (after a warm-up); reports
requests/s and p50/p99 latency of both (same ASGI server, same worker count, same machine, same run) and
their ratio; then fires 200 concurrent requests for a never-requested organization and counts the
upstream token requests. Bounded in time and count; loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import yaml

from ehrflow_devstack.config import generate
from ehrflow_devstack.parts import Part, start_redis, start_tansu
from ehrflow_devstack.processes import Process, free_port, http_ok

COLD_REQUESTS = 200
TOOL = "wrk" if shutil.which("wrk") else "aiohttp"
PIN = bool(shutil.which("taskset")) and (os.cpu_count() or 1) >= 2
"""Servers on CPU 0, the load generator on CPU 1, so they do not take turns on one core."""
SERVER_CPU = ["taskset", "-c", "0"] if PIN else []
CLIENT_CPU = ["taskset", "-c", "1"] if PIN else []
LOAD = ("wrk, one thread" if TOOL == "wrk" else "an aiohttp closed loop (wrk is not installed)") + (
    "; servers pinned to CPU 0, the load generator to CPU 1" if PIN and TOOL == "wrk" else ""
)
"""wrk (Debian/Ubuntu: `apt-get install wrk`, macOS: `brew install wrk`) when installed; aiohttp otherwise."""


@dataclass
class Result:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int

    def row(self) -> str:
        return f"| {self.name} | {self.rps:,.0f} | {self.p50_ms:.2f} | {self.p99_ms:.2f} | {self.requests:,} | {self.errors} |"


def _ms(text: str) -> float:
    value = float(re.sub(r"[a-z]+$", "", text))
    unit = re.sub(r"^[0-9.]+", "", text)
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(
    url: str, body: dict[str, object], headers: dict[str, str], *, concurrency: int, seconds: float, warmup: float
) -> Result:
    """Drive ``url`` with wrk (one thread, ``concurrency`` connections) and read its latency distribution."""
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    lines = [
        'wrk.method = "POST"',
        f"wrk.body = {json.dumps(json.dumps(body))}",
        'wrk.headers["Content-Type"] = "application/json"',
    ]
    lines += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()]
    script.write_text("\n".join(lines) + "\n")
    base = [*CLIENT_CPU, "wrk", "-t1", f"-c{concurrency}", "-s", str(script), "--latency", url]
    cut = len(CLIENT_CPU) + 3
    subprocess.run([*base[:cut], f"-d{max(1, int(warmup))}s", *base[cut:]], check=True, capture_output=True)
    out = subprocess.run(
        [*base[:cut], f"-d{int(seconds)}s", *base[cut:]], check=True, capture_output=True, text=True
    ).stdout
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    return Result(url.rsplit("/", 1)[-1], rps, _ms(percentiles["50"]), _ms(percentiles["99"]), requests, errors)


async def closed_loop(
    url: str, body: dict[str, object], headers: dict[str, str], *, concurrency: int, seconds: float, warmup: float
) -> Result:
    """The fallback load generator when wrk is not installed (it is slower than the endpoints it measures)."""
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        payload = json.dumps(body).encode()
        start = time.perf_counter()
        measure_from, stop_at = start + warmup, start + warmup + seconds

        async def worker() -> None:
            nonlocal errors
            while (now := time.perf_counter()) < stop_at:
                async with session.post(url, data=payload, headers={"Content-Type": "application/json"}) as r:
                    await r.read()
                    ok = r.status == 200
                done = time.perf_counter()
                if now >= measure_from:
                    latencies.append((done - now) * 1000)
                    errors += not ok

        await asyncio.gather(*[worker() for _ in range(concurrency)])
    ordered = sorted(latencies)
    pct = lambda p: ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]  # noqa: E731
    return Result(url.rsplit("/", 1)[-1], len(ordered) / seconds, pct(50), pct(99), len(ordered), errors)


async def stampede(url: str, body: dict[str, object], headers: dict[str, str]) -> tuple[list[float], int]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=COLD_REQUESTS), headers=headers) as s:

        async def one() -> float:
            started = time.perf_counter()
            async with s.post(url, json=body) as r:
                await r.read()
                assert r.status == 200, r.status
            return (time.perf_counter() - started) * 1000

        return list(await asyncio.gather(*[one() for _ in range(COLD_REQUESTS)])), COLD_REQUESTS


def start(name: str, argv: list[str], log: Path, env: dict[str, str], ready_url: str) -> Process:
    proc = Process(name, argv, log, env=env, ready=lambda: http_ok(ready_url))
    proc.start(timeout=60)
    return proc


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
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
            start(
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
            start(
                "auth",
                [*SERVER_CPU, sys.executable, "-m", "ehrflow_auth.main"],
                state / "auth.log",
                env,
                f"http://127.0.0.1:{auth_port}/readyz",
            )
        )
        started.append(
            start(
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

        async def run() -> tuple[Result, Result, list[float], int]:
            async with aiohttp.ClientSession(headers=headers) as s, s.post(token_url, json=hot) as r:
                assert r.status == 200, await r.text()  # the first request fetches the token upstream
            loop_args = {"concurrency": args.concurrency, "seconds": args.seconds, "warmup": args.warmup}
            bare_url = f"http://127.0.0.1:{bare_port}/bare"
            if TOOL == "wrk":
                bare = await asyncio.to_thread(wrk, bare_url, hot, headers, **loop_args)
                cached = await asyncio.to_thread(wrk, token_url, hot, headers, **loop_args)
            else:
                bare = await closed_loop(bare_url, hot, headers, **loop_args)
                cached = await closed_loop(token_url, hot, headers, **loop_args)
            cold, _ = await stampede(token_url, {"organization": "cold", "feature": "news2"}, headers)
            async with aiohttp.ClientSession() as s, s.get(f"{upstream}/stats") as r:
                upstream_requests = int((await r.json())["token_requests"])
            return bare, cached, cold, upstream_requests

        bare, cached, cold, upstream_requests = asyncio.run(run())
    finally:
        for item in reversed(started):
            item.stop()

    bare.name, cached.name = "bare Starlette endpoint (baseline)", "auth: cached token (`POST /internal/v1/tokens`)"
    cold_sorted = sorted(cold)
    report = "\n".join(
        [
            f"### Auth — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            "",
            f"`python bench/auth/bench_auth.py --seconds {args.seconds:g} --concurrency {args.concurrency}` on "
            f"{os.cpu_count()} cores ({platform.machine()}, Python {platform.python_version()}); one uvicorn worker "
            f"each, loopback; load from {LOAD}.",
            "",
            "| endpoint | requests/s | p50 ms | p99 ms | requests | errors |",
            "|---|---|---|---|---|---|",
            bare.row(),
            cached.row(),
            "",
            f"- cached-token throughput is **{cached.rps / bare.rps:.0%}** of the bare endpoint's; "
            f"cached p99 **{cached.p99_ms:.2f} ms** at a concurrency of {args.concurrency}.",
            f"- cold stampede: {COLD_REQUESTS} concurrent requests for a never-requested organization → "
            f"**{upstream_requests - 1} upstream token request(s)** (one more was the warm-up's), "
            f"p50 {statistics.median(cold_sorted):.0f} ms, max {cold_sorted[-1]:.0f} ms "
            "(the counting token endpoint answers after 100 ms).",
            "",
        ]
    )
    print(report)
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        with args.write.open("a", encoding="utf-8") as out:
            out.write(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
