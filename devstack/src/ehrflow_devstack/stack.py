"""Starting and stopping the whole local stack."""

from __future__ import annotations

import functools
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import yaml

from ehrflow_devstack.config import ORGS, SEKMET_SCOPES, GeneratedConfig, generate, write_registry
from ehrflow_devstack.model_servers import start_llama_server, start_mlserver
from ehrflow_devstack.parts import Part, start_broker, start_redis, start_sekmet
from ehrflow_devstack.processes import Process, free_port, http_ok
from ehrflow_devstack.scenario import TOPIC_URL

log = logging.getLogger("ehrflow.devstack")

SERVICES = ("auth", "ingest", "inference", "writeback")

Startable = TypeVar("Startable", Part, Process)


@dataclass
class Stack:
    """Everything the reference scenario needs, on this machine. Use as a context manager."""

    state: Path
    progress: bool = True
    config: GeneratedConfig | None = None
    broker: Part | None = None
    redis: Part | None = None
    ehrs: dict[str, Part] = field(default_factory=dict)
    models: dict[str, Part] = field(default_factory=dict)
    """The model servers, by the workflow that calls them (``readmission``, ``tumor-board``)."""
    services: dict[str, Process] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)
    _started: list[Part | Process] = field(default_factory=list)

    def _say(self, message: str) -> None:
        if self.progress:
            print(f"  · {message}", flush=True)

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    def service_env(self, name: str) -> dict[str, str]:
        assert self.config and self.broker and self.redis
        env = {
            "EHRFLOW_ORGANIZATIONS_FILE": str(self.config.organizations_file),
            "EHRFLOW_KAFKA__BOOTSTRAP_SERVERS": self.broker.url,
            "EHRFLOW_KAFKA__ENABLE_IDEMPOTENCE": "false" if self.broker.kind == "tansu" else "true",
            "EHRFLOW_REDIS_URL": self.redis.url,
            "EHRFLOW_PORT": self.urls[name].rsplit(":", 1)[1],
            "EHRFLOW_AUTH__URL": self.urls["auth"],
            "EHRFLOW_AUTH__SERVICE_NAME": name,
            "EHRFLOW_AUTH__CREDENTIAL_FILE": str(self.config.credentials_dir / name),
            "EHRFLOW_CONSUMER__RETRY_DELAY_S": "1",
            "EHRFLOW_CONSUMER__BACKOFF_S": "0.2",
            "OTEL_TRACES_EXPORTER": "none",
        }
        if name == "ingest":  # the background loop at a pace a test can wait for
            env["EHRFLOW_PUBLIC_URL"] = self.urls["ingest"]
            env["EHRFLOW_TICK_S"] = "0.5"
            env["EHRFLOW_MANAGE_EVERY_S"] = "2"
            env["EHRFLOW_GAP_GRACE_S"] = "2"
            env["EHRFLOW_RECOVERY_OVERLAP_S"] = "5"
        if name == "auth":
            env["EHRFLOW_SERVICE_POLICY_FILE"] = str(self.config.policy_file)
            env["EHRFLOW_TOKEN_CACHE_KEY_FILE"] = str(self.config.cache_key_file)
        if name == "writeback":
            env["EHRFLOW_QUEUE_KEY_FILE"] = str(self.config.queue_key_file)
            env["EHRFLOW_AUDIT_SUMMARY_S"] = "2"
        return env

    def start(self) -> Stack:
        self.logs.mkdir(parents=True, exist_ok=True)
        for old in self.logs.glob("*.log"):
            old.unlink()
        self.config = generate(self.state / "config")
        try:
            self.broker = self._track(start_broker(self.state))
            self._say(f"broker ({self.broker.kind}) at {self.broker.url}")
            self.redis = self._track(start_redis(self.state))
            self._say(f"redis ({self.redis.kind}) ready")
            self.urls = {name: f"http://127.0.0.1:{free_port()}" for name in SERVICES}
            for org in ORGS:
                self.ehrs[org.id] = self._track(
                    start_sekmet(
                        self.state,
                        org.id,
                        client_id=org.client_id,
                        scopes=SEKMET_SCOPES,
                        jwks_url=f"{self.urls['auth']}/orgs/{org.id}/jwks.json",
                        admin_token=self.config.admin_token,
                    )
                )
                self._say(f"sandbox EHR {org.id} ({org.name}) at {self.ehrs[org.id].url}")
            self.models["readmission"] = self._track(start_mlserver(self.state))
            self._say(f"MLServer (KServe v2) at {self.models['readmission'].url}")
            self.models["tumor-board"] = self._track(start_llama_server(self.state))
            self._say(f"llama.cpp server (OpenAI-compatible) at {self.models['tumor-board'].url}")
            write_registry(
                self.config,
                {org: part.url for org, part in self.ehrs.items()},
                self.model_endpoints(),
            )
            for name in SERVICES:
                self.services[name] = self._track(
                    launch_service(name, self.urls[name], self.logs / f"{name}.log", self.service_env(name))
                )
                self._say(f"{name} ready at {self.urls[name]}")
        except BaseException:
            self.stop()
            raise
        return self

    def model_endpoints(self) -> dict[str, str]:
        """What the organizations' contracts call, by workflow: the base URL each adapter takes."""
        found = {}
        if "readmission" in self.models:
            found["readmission"] = self.models["readmission"].url
        if "tumor-board" in self.models:
            found["tumor-board"] = f"{self.models['tumor-board'].url}/v1"
        return found

    def _track(self, item: Startable) -> Startable:
        self._started.append(item)
        return item

    def replica_env(self, service: str, url: str, **overrides: str) -> dict[str, str]:
        """The settings of another replica of ``service`` on this stack, listening at ``url``."""
        return {
            **self.service_env(service),
            "EHRFLOW_PUBLIC_URL": url,
            **overrides,
            "EHRFLOW_PORT": url.rsplit(":", 1)[1],
        }

    def start_service(
        self, service: str, log: Path, *, url: str | None = None, **overrides: str
    ) -> tuple[Process, str]:
        """Another replica of ``service`` on this stack, with settings overridden (``EHRFLOW_*`` names);
        the caller stops it. Returns the process and its URL."""
        url = url or f"http://127.0.0.1:{free_port()}"
        return launch_service(service, url, log, self.replica_env(service, url, **overrides)), url

    def registry_declaring(self, name: str, criteria: str, *, topic: str | None = None) -> Path:
        """The stack's organization file plus one subscription org1 declares (``name``, ``criteria``; on the
        vital-signs ``topic`` by default), in the same folder so the secrets resolve alike."""
        assert self.config
        registry = yaml.safe_load(self.config.organizations_file.read_text())
        registry["organizations"]["org1"]["ingest"]["subscriptions"] = [
            {"name": name, "topic": topic or TOPIC_URL, "criteria": criteria, "content": "full-resource"}
        ]
        path = self.config.organizations_file.with_name(f"organizations-{name}.yaml")
        path.write_text(yaml.safe_dump(registry))
        return path

    def start_ingest_on(self, broker: Part, folder: Path, **overrides: str) -> tuple[Process, str, GeneratedConfig]:
        """An ingest replica publishing to ``broker`` (a test's own, which it may pause or stop), for two
        organizations with no EHR behind them: the webhook path only. Returns it, its URL and its config."""
        config = generate(folder / "config")
        write_registry(config, {"org1": "http://127.0.0.1:9/fhir", "org2": "http://127.0.0.1:10/fhir"})
        proc, url = self.start_service(
            "ingest",
            folder / "ingest.log",
            EHRFLOW_ORGANIZATIONS_FILE=str(config.organizations_file),
            EHRFLOW_KAFKA__BOOTSTRAP_SERVERS=broker.url,
            EHRFLOW_KAFKA__ENABLE_IDEMPOTENCE="false",
            EHRFLOW_BACKGROUND="false",
            **overrides,
        )
        return proc, url, config

    def stop(self) -> None:
        """Stop exactly what this stack started, in reverse order."""
        while self._started:
            self._started.pop().stop()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def launch_service(
    service: str, url: str, log: Path, env: dict[str, str], timeout: float = 90, argv: list[str] | None = None
) -> Process:
    """Start one ehrflow service process and wait until its ``/readyz`` answers 200."""
    proc = Process(
        service,
        argv or [sys.executable, "-m", f"ehrflow_{service}.main"],
        log,
        env=env,
        ready=functools.partial(http_ok, f"{url}/readyz"),
    )
    proc.start(timeout=timeout)
    return proc
