"""Writeback benchmark: approvals per second end to end, from the clinician's decision to the EHR's answer,
next to what the EHR itself accepts of the same writes.

    .venv/bin/python bench/writeback/bench_writeback.py [--drafts 200] [--workers 4] [--write docs/benchmarks.md]

Starts its own broker (Tansu), Redis, sandbox EHR (SEKMET, organization 1's), auth service and writeback
service (``EHRFLOW_WORKERS`` consumers of the decision partitions).

1. Ceiling, same run: the EHR's own write rate. Writeback's write (``writer.write_approved``: the drafted
   RiskAssessment, then its Provenance, each a conditional create) for N fresh drafts, straight from this
   process with the same FHIR client and tokens, ``workers`` at a time: drafts written per second. This is
   what the EHR accepts with no bus, queue or API in between.
2. Measured: N drafts proposed and queued; then each approved through the review API (``POST …/approve``,
   ``workers`` requests in flight, as clinicians at their screens), and writeback's consumers write them.
   Approvals/s = N / (the last ``write.completed`` record's Kafka timestamp - the first approval's start).
   Latency per draft: the decision's ``decided_at`` to its ``write.completed`` record (one clock).
A warm-up batch is approved and written first (consumer groups joined, tokens cached, the EHR's search
indexes warm).
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

import httpx

from ehrflow_contracts import DraftProposed, topics
from ehrflow_devstack.config import ORGS, SEKMET_SCOPES, generate, write_registry
from ehrflow_devstack.drafts import news2_draft
from ehrflow_devstack.kafka_read import publish_events, read_records
from ehrflow_devstack.loadgen import publish_report
from ehrflow_devstack.parts import Part, start_redis, start_sekmet, start_tansu
from ehrflow_devstack.processes import Process, free_port
from ehrflow_devstack.stack import launch_service
from ehrflow_runtime.fhir_client import FhirClient
from ehrflow_runtime.organizations import load_registry
from ehrflow_runtime.settings import KafkaSettings, read_secret_file
from ehrflow_runtime.tls import OrganizationClients
from ehrflow_runtime.tokens import TokenClient
from ehrflow_runtime.topic_reader import read_topic
from ehrflow_writeback.writer import write_approved

REVIEWER = "Practitioner/bench"
WARM_UP = 20


class Bench:
    def __init__(self, state: Path, workers: int) -> None:
        self.state, self.workers = state, workers
        self.started: list[Part | Process] = []

    def __enter__(self) -> Bench:
        self.config = generate(self.state / "config")
        self.broker = self._keep(start_tansu(self.state))
        self.redis = self._keep(start_redis(self.state))
        self.auth_url, self.writeback_url = (f"http://127.0.0.1:{free_port()}" for _ in range(2))
        org1 = next(o for o in ORGS if o.id == "org1")
        self.ehr = self._keep(
            start_sekmet(
                self.state,
                "org1",
                client_id=org1.client_id,
                scopes=SEKMET_SCOPES,
                jwks_url=f"{self.auth_url}/orgs/org1/jwks.json",
                admin_token=self.config.admin_token,
            )
        )
        write_registry(self.config, {"org1": self.ehr.url, "org2": "http://127.0.0.1:9/fhir"})
        self._keep(self._service("auth", self.auth_url))
        self._keep(self._service("writeback", self.writeback_url, EHRFLOW_WORKERS=str(self.workers)))
        return self

    def __exit__(self, *_: object) -> None:
        for item in reversed(self.started):
            item.stop()

    def _keep(self, item: Any) -> Any:
        self.started.append(item)
        return item

    def _service(self, name: str, url: str, **extra: str) -> Process:
        env = {
            "EHRFLOW_ORGANIZATIONS_FILE": str(self.config.organizations_file),
            "EHRFLOW_KAFKA__BOOTSTRAP_SERVERS": self.broker.url,
            "EHRFLOW_KAFKA__ENABLE_IDEMPOTENCE": "false",
            "EHRFLOW_REDIS_URL": self.redis.url,
            "EHRFLOW_PORT": url.rsplit(":", 1)[1],
            "EHRFLOW_PUBLIC_URL": url,
            "EHRFLOW_AUTH__URL": self.auth_url,
            "EHRFLOW_AUTH__SERVICE_NAME": name,
            "EHRFLOW_AUTH__CREDENTIAL_FILE": str(self.config.credentials_dir / name),
            "EHRFLOW_SERVICE_POLICY_FILE": str(self.config.policy_file),
            "EHRFLOW_TOKEN_CACHE_KEY_FILE": str(self.config.cache_key_file),
            "EHRFLOW_QUEUE_KEY_FILE": str(self.config.queue_key_file),
            "EHRFLOW_LOG_LEVEL": "WARNING",
            "OTEL_TRACES_EXPORTER": "none",
            **extra,
        }
        return launch_service(name, url, self.state / "logs" / f"{name}.log", env)

    async def ceiling(self, n: int) -> float:
        """Drafts written per second by writeback's own write, straight to the EHR, ``workers`` at a time."""
        org = load_registry(self.config.organizations_file).get("org1")
        assert org is not None
        async with httpx.AsyncClient(timeout=30) as http:
            tokens = TokenClient(
                http,
                base_url=self.auth_url,
                service_name="writeback",
                credential=read_secret_file(self.config.credentials_dir / "writeback"),
            )
            fhir = FhirClient(OrganizationClients(http).for_org(org), tokens, org, "news2")
            gate = asyncio.Semaphore(self.workers)

            async def one(draft: DraftProposed) -> None:
                async with gate:
                    await write_approved(fhir, draft, REVIEWER, datetime.now(UTC))

            await asyncio.gather(*(one(d) for d in drafts("warm-direct", WARM_UP)))
            started = time.perf_counter()
            await asyncio.gather(*(one(d) for d in drafts("direct", n)))
            return n / (time.perf_counter() - started)

    async def approvals(self, n: int) -> tuple[float, list[float]]:
        """Approvals per second through the review API and writeback's consumers, and each one's latency."""
        await self._approve_all(drafts("warm", WARM_UP))
        measured = drafts("bench", n)
        started = await self._approve_all(measured)
        ids = {d.draft_id for d in measured}
        done = await self._completed(ids)
        stamps = [ts for _, ts in done.values()]
        decided = {
            r["draft_id"]: datetime.fromisoformat(r["decided_at"]).timestamp()
            for r, _ in await read_records(self.broker.url, topics.REVIEW_DECIDED)
            if r["draft_id"] in ids
        }
        latency = [(ts / 1000 - decided[d]) * 1000 for d, (_, ts) in done.items()]
        return n / (max(stamps) / 1000 - started), latency

    async def _approve_all(self, proposed: list[DraftProposed]) -> float:
        """Propose and queue the drafts, approve them all, wait until all are written; returns when (Unix
        time) the first approval was sent."""
        await publish_events(self.broker.url, topics.DRAFT_PROPOSED, proposed)
        key = self.config.review_key("org1")
        async with httpx.AsyncClient(
            base_url=f"{self.writeback_url}/v1/orgs/org1/drafts",
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        ) as api:
            for draft in proposed:  # queued before the clock starts: the measured part is approve → written
                while (await api.get(f"/{draft.draft_id}")).json().get("status") != "pending":
                    await asyncio.sleep(0.1)
            gate = asyncio.Semaphore(self.workers)
            started = time.time()

            async def approve(draft: DraftProposed) -> None:
                async with gate:
                    answer = await api.post(f"/{draft.draft_id}/approve", json={"reviewer": REVIEWER})
                    assert answer.status_code == 202, answer.text

            await asyncio.gather(*(approve(d) for d in proposed))
        await self._completed({d.draft_id for d in proposed})
        return started

    async def _completed(self, ids: set[str], timeout: float = 600) -> dict[str, tuple[dict[str, Any], int]]:
        """The ``write.completed`` records (value, Kafka timestamp) of ``ids``, once there is one for each."""
        deadline = time.monotonic() + timeout
        while True:
            found = {
                value["draft_id"]: (value, ts)
                for value, ts in await read_timed(self.broker.url, topics.WRITEBACK_COMPLETED)
                if value["draft_id"] in ids
            }
            if len(found) == len(ids):
                failed = [v for v, _ in found.values() if v["status"] != "written"]
                assert not failed, failed[:3]
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(found)} of {len(ids)} written after {timeout:.0f}s")
            await asyncio.sleep(0.5)


async def read_timed(bootstrap: str, topic: str) -> list[tuple[dict[str, Any], int]]:
    """Every record on ``topic`` with its Kafka timestamp (ms)."""
    records = await read_topic(KafkaSettings(bootstrap_servers=bootstrap), topic)
    return [(json.loads(r.value or b"{}"), r.timestamp) for r in records]


def drafts(prefix: str, n: int) -> list[DraftProposed]:
    """NEWS2 drafts for ``n`` patients of organization 1, one each (so none supersedes another)."""
    return [news2_draft("org1", f"Patient/{prefix}-{i}") for i in range(n)]


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def run(n: int, workers: int, write: Path | None) -> None:
    with tempfile.TemporaryDirectory(prefix="ehrflow-bench-writeback-") as tmp, Bench(Path(tmp), workers) as bench:
        ceiling = await bench.ceiling(n)
        rate, latency = await bench.approvals(n)
    lines = [
        "",
        f"## Writeback — {datetime.now(UTC):%Y-%m-%d} ({platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()})",
        "",
        f"{n} drafts approved through the review API, {workers} at a time, written by writeback with "
        f"{workers} workers to the sandbox EHR (`bench/writeback/bench_writeback.py`):",
        "",
        "| what | drafts/s | ceiling (same run) | ratio |",
        "|---|---:|---|---:|",
        f"| approval → written (resource and Provenance confirmed) | {rate:,.1f} | the EHR's own rate for the same "
        f"writes, {workers} at a time: {ceiling:,.1f}/s | {rate / ceiling:.2f} |",
        "",
        f"Decision recorded → write confirmed: p50 {statistics.median(latency):,.0f} ms, "
        f"p99 {_percentile(latency, 99):,.0f} ms.",
    ]
    publish_report("\n".join(lines), write)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drafts", type=int, default=200)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    asyncio.run(run(args.drafts, args.workers, args.write))


if __name__ == "__main__":
    sys.exit(main())
