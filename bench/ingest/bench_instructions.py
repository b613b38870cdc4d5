"""The webhook's own Python per notification, in instructions: repeatable on a noisy machine.

    .venv/bin/python bench/ingest/bench_instructions.py [--base PATH]

Drives the ingest app in-process (ASGI calls, no network) with a sink that serializes records as the
Kafka sink does, no dedupe and an in-memory tracking store, so what it counts is ingest's own code:
routing, authentication, parsing, the bus record, serialization, tracking and the answer. Under
``valgrind --tool=callgrind`` it runs twice (300 and 2,300 notifications) and reports the difference per
notification, which repeats to within 0.1 %; wall-clock figures on shared machines vary by ±10 % or more.
``--base PATH`` also counts another checkout of the repository (e.g. ``git worktree add /tmp/base HEAD~1``),
for a before/after of one change (a checkout with ``IngestApp``, commit 1c9ee2c or later). Without
valgrind it prints CPU time per notification instead.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RUNS = (300, 2_300)
WARMUP = 200
STATE = Path(os.environ.get("EHRFLOW_BENCH_STATE", ".ehrflow/bench-instructions"))
"""Keys and secrets generated once and reused: RSA key generation would otherwise swamp the count."""


def drive(count: int) -> float:
    """Post ``count`` notifications (after a warm-up) and return the CPU seconds they took."""
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_ingest import notification_body

    from ehrflow_devstack.config import WEBHOOK_HEADER, generate, write_registry
    from ehrflow_devstack.loadgen import COUNTER
    from ehrflow_ingest import app as ingest_app
    from ehrflow_ingest.app import IngestApp, IngestContext, Webhook, routes
    from ehrflow_ingest.recording import Recorder
    from ehrflow_ingest.sender_auth import SenderSecrets
    from ehrflow_ingest.sink import headers
    from ehrflow_ingest.tracker import Tracker
    from ehrflow_ingest.tracking import SubscriptionState
    from ehrflow_runtime import serve
    from ehrflow_runtime.organizations import load_registry

    tune_gc = getattr(serve, "tune_garbage_collector", None) or serve.freeze_startup_heap  # (older --base)

    class SerializingSink:
        async def send(self, topic: str, record: Any, key: bytes) -> asyncio.Future[object]:
            record.model_dump_json().encode(), headers()
            done: asyncio.Future[object] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done

        async def ready(self) -> bool:
            return True

    class MemoryStore:
        def __init__(self) -> None:
            self.states: dict[tuple[str, str], SubscriptionState] = {}

        async def update(self, org_id: str, key: str, change: Any) -> Any:
            state = self.states.setdefault((org_id, key), SubscriptionState(organization=org_id, key=key))
            return change(state)

    config = generate(STATE / "config")
    write_registry(config, {"org1": "http://127.0.0.1:9/fhir", "org2": "http://127.0.0.1:10/fhir"})
    if hasattr(ingest_app, "Configured"):  # the registry held live (reloaded on change)
        from ehrflow_runtime.live import Live

        configured = ingest_app.Configured
        where = {"live": Live(config.organizations_file, lambda r: configured(r, SenderSecrets(list(r))))}
    else:  # an older --base: the registry and secrets given as they are
        registry = load_registry(config.organizations_file)
        where = {"registry": registry, "secrets": SenderSecrets(list(registry))}
    ctx = IngestContext(
        **where,  # type: ignore[arg-type]
        recorder=Recorder(SerializingSink(), None, 5.0),
        max_body_bytes=1 << 20,
        tracker=Tracker(MemoryStore()),  # type: ignore[arg-type]
    )
    webhook = Webhook(ctx)
    app = IngestApp(webhook, routes=routes(webhook))
    body = notification_body()
    secret = config.webhook_secret("org1").encode()

    async def post(n: int) -> None:
        raw = body.replace(COUNTER, str(n)).encode()
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/v1/notify/org1",
            "headers": [
                (b"content-type", b"application/fhir+json"),
                (WEBHOOK_HEADER.lower().encode(), secret),
                (b"content-length", str(len(raw)).encode()),
            ],
        }
        messages = [{"type": "http.request", "body": raw, "more_body": False}]
        status = []

        async def receive() -> dict[str, Any]:
            return messages.pop()

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await app(scope, receive, send)
        assert status == [200], status

    async def run() -> float:
        for n in range(WARMUP):
            await post(n)
        tune_gc()  # as the services do before serving
        started = time.process_time()
        for n in range(WARMUP, WARMUP + count):
            await post(n)
            if n % 64 == 0:
                await asyncio.sleep(0)  # let the tracking writer run, as the server's loop would
        elapsed = time.process_time() - started
        await ctx.tracker.flush()
        return elapsed

    return asyncio.run(run())


def instructions(count: int, base: Path | None) -> int:
    env = dict(os.environ, PYTHONHASHSEED="0")
    if base is not None:
        env["PYTHONPATH"] = ":".join(
            str(base / p / "src") for p in ("libs/contracts", "libs/runtime", "services/ingest", "devstack")
        )
    argv = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, __file__]
    out = subprocess.run([*argv, "--count", str(count)], env=env, capture_output=True, text=True, check=True)  # noqa: S603
    return int(re.search(r"Collected : (\d+)", out.stderr).group(1))  # type: ignore[union-attr]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, help="post this many notifications and print the CPU time (internal)")
    parser.add_argument("--base", type=Path, help="another checkout to count as well")
    args = parser.parse_args()
    if args.count is not None:
        print(f"{drive(args.count) / args.count * 1e6:.1f} us of CPU per notification over {args.count:,}")
        return 0
    generate_once = [sys.executable, __file__, "--count", "1"]
    subprocess.run(generate_once, check=True, capture_output=True)  # noqa: S603
    if not shutil.which("valgrind"):
        print("valgrind is not installed: CPU time instead (noisy on shared machines)")
        return subprocess.run([sys.executable, __file__, "--count", str(RUNS[1])], check=False).returncode  # noqa: S603
    trees = {"this checkout": None, **({f"base ({args.base})": args.base} if args.base else {})}
    for name, tree in trees.items():
        low, high = (instructions(n, tree) for n in RUNS)
        print(f"{name}: {(high - low) / (RUNS[1] - RUNS[0]):,.0f} instructions per notification")
    return 0


if __name__ == "__main__":
    sys.exit(main())
