"""Load generators for the benchmarks in ``bench/``: wrk when installed, aiohttp otherwise.

- ``closed_loop``: ``concurrency`` connections, each sending its next request when the last is answered
  (wrk, one thread; or aiohttp). Gives the peak rate.
- ``open_loop``: requests started at a fixed rate whatever the answers do (aiohttp), so latency at a
  chosen load is not hidden by the client slowing down with the server.

A body may contain ``__N__``, replaced by a request counter, so each request is a new event.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from ehrflow_devstack.processes import Process, http_ok

COUNTER = "__N__"
TOOL = "wrk" if shutil.which("wrk") else "aiohttp"
PIN = bool(shutil.which("taskset")) and (os.cpu_count() or 1) >= 2
"""Servers on CPU 0, the load generator on CPU 1, so they do not take turns on one core."""
SERVER_CORE, CLIENT_CORE = 0, 1
SERVER_CPU = ["taskset", "-c", str(SERVER_CORE)] if PIN else []
CLIENT_CPU = ["taskset", "-c", str(CLIENT_CORE)] if PIN else []
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
    server_cpu_us: float | None = None
    """CPU time (user + system) the server process spent per request while measured, where known."""

    def row(self, *extra: str) -> str:
        cells = [self.name, *extra, f"{self.rps:,.0f}", f"{self.p50_ms:.2f}", f"{self.p99_ms:.2f}"]
        return "| " + " | ".join([*cells, f"{self.requests:,}", str(self.errors)]) + " |"


def median_round(rounds: list[Result]) -> Result:
    """One row for several rounds of the same endpoint: the median of each figure, the sum of the counts.

    Benchmarks alternate the endpoint under test with its baseline round by round, so that a machine that
    gets busier or quieter midway shifts both alike; the median keeps one odd round from deciding."""
    return Result(
        rounds[0].name,
        statistics.median(r.rps for r in rounds),
        statistics.median(r.p50_ms for r in rounds),
        statistics.median(r.p99_ms for r in rounds),
        sum(r.requests for r in rounds),
        sum(r.errors for r in rounds),
    )


def _ms(text: str) -> float:
    value = float(re.sub(r"[a-z]+$", "", text))
    unit = re.sub(r"^[0-9.]+", "", text)
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def _percentile(ordered: list[float], p: float) -> float:
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else float("nan")


def cpu_seconds(pid: int | None) -> float | None:
    """CPU time (user + system) process ``pid`` has used so far, from /proc (Linux); None where unknown."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(
    url: str,
    body: str,
    headers: dict[str, str],
    *,
    concurrency: int,
    seconds: float,
    warmup: float,
    server_pid: int | None = None,
) -> Result:
    """Drive ``url`` with wrk (one thread, ``concurrency`` connections) and read its latency distribution;
    with ``server_pid``, also the server's CPU time per request over the measured run."""
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(body)}"]
    lines += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()]
    if COUNTER in body:
        lines += [
            "counter = os.time() * 1000000",  # rising across runs: each run continues the numbering
            "request = function()",
            "  counter = counter + 1",
            f'  return wrk.format(nil, nil, nil, (string.gsub(wrk.body, "{COUNTER}", string.format("%d", counter))))',
            "end",
        ]
    script.write_text("\n".join(lines) + "\n")
    base = [*CLIENT_CPU, "wrk", "-t1", f"-c{concurrency}", "-s", str(script), "--latency", url]
    cut = len(CLIENT_CPU) + 3
    subprocess.run([*base[:cut], f"-d{max(1, int(warmup))}s", *base[cut:]], check=True, capture_output=True)
    cpu_before = cpu_seconds(server_pid)
    out = subprocess.run(
        [*base[:cut], f"-d{int(seconds)}s", *base[cut:]], check=True, capture_output=True, text=True
    ).stdout
    cpu_after = cpu_seconds(server_pid)
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    cpu = None if cpu_before is None or cpu_after is None else (cpu_after - cpu_before) / max(requests, 1) * 1e6
    return Result(url, rps, _ms(percentiles["50"]), _ms(percentiles["99"]), requests, errors, cpu)


async def closed_loop(
    url: str, body: str, headers: dict[str, str], *, concurrency: int, seconds: float, warmup: float
) -> Result:
    """The fallback for wrk (it is slower than the endpoints it measures: it saturates first)."""
    latencies: list[float] = []
    errors = 0
    counter = int(time.time()) * 1_000_000
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        start = time.perf_counter()
        measure_from, stop_at = start + warmup, start + warmup + seconds

        async def worker() -> None:
            nonlocal errors, counter
            while (now := time.perf_counter()) < stop_at:
                counter += 1
                async with session.post(url, data=body.replace(COUNTER, str(counter)).encode()) as r:
                    await r.read()
                    ok = r.status == 200
                done = time.perf_counter()
                if now >= measure_from:
                    latencies.append((done - now) * 1000)
                    errors += not ok

        await asyncio.gather(*[worker() for _ in range(concurrency)])
    ordered = sorted(latencies)
    return Result(url, len(ordered) / seconds, _percentile(ordered, 50), _percentile(ordered, 99), len(ordered), errors)


@contextlib.contextmanager
def quiet_client() -> Iterator[None]:
    """Keep the in-process load generator from adding its own pauses to the latencies it measures: it
    runs on the load generator's CPU, and its garbage collector waits (thousands of tasks in flight made
    its full passes take tens of milliseconds, which showed up as the server's p99)."""
    affinity = os.sched_getaffinity(0) if PIN else None
    if PIN:
        os.sched_setaffinity(0, {CLIENT_CORE})
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        if affinity is not None:
            os.sched_setaffinity(0, affinity)


async def open_loop(url: str, body: str, headers: dict[str, str], *, rate: float, seconds: float) -> Result:
    """Start ``rate`` requests per second for ``seconds``, each timed from its scheduled start."""
    with quiet_client():
        return await _open_loop(url, body, headers, rate=rate, seconds=seconds)


async def _open_loop(url: str, body: str, headers: dict[str, str], *, rate: float, seconds: float) -> Result:
    latencies: list[float] = []
    errors = 0
    counter = int(time.time()) * 1_000_000
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), headers=headers) as session:

        async def one(at: float, n: int) -> None:
            nonlocal errors
            async with session.post(url, data=body.replace(COUNTER, str(n)).encode()) as r:
                await r.read()
                errors += r.status != 200
            latencies.append((time.perf_counter() - at) * 1000)

        tasks = []
        start = time.perf_counter()
        total = int(rate * seconds)
        for i in range(total):
            at = start + i / rate
            if (delay := at - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(at, counter + i)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    ordered = sorted(latencies)
    return Result(url, len(ordered) / elapsed, _percentile(ordered, 50), _percentile(ordered, 99), len(ordered), errors)


async def drive(
    url: str,
    body: str,
    headers: dict[str, str],
    *,
    concurrency: int,
    seconds: float,
    warmup: float,
    server_pid: int | None = None,
) -> Result:
    """A closed loop with the best tool available (with wrk, also the server's CPU per request)."""
    if TOOL == "wrk":
        return await asyncio.to_thread(
            wrk, url, body, headers, concurrency=concurrency, seconds=seconds, warmup=warmup, server_pid=server_pid
        )
    return await closed_loop(url, body, headers, concurrency=concurrency, seconds=seconds, warmup=warmup)


def start_server(name: str, argv: list[str], log: Path, env: dict[str, str], ready_url: str) -> Process:
    """Start one process under test and wait until ``ready_url`` answers."""
    proc = Process(name, argv, log, env=env, ready=lambda: http_ok(ready_url))
    proc.start(timeout=60)
    return proc


def publish_report(report: str, write: Path | None) -> None:
    """Print a benchmark's Markdown section and append it to ``write`` (docs/benchmarks.md)."""
    print(report)
    if write:
        write.parent.mkdir(parents=True, exist_ok=True)
        with write.open("a", encoding="utf-8") as out:
            out.write(report + "\n")
