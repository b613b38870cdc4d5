"""The Helm chart, tested without a cluster, the way well-kept charts test themselves.

Every ``ci/*-values.yaml`` is linted and rendered by Helm's own Go library (``helm-python-sdk``), each
rendered object is validated against the Kubernetes API schemas of two minor versions (strict: an unknown
field fails), and assertions check what matters: the restricted pod security profile, probes, NetworkPolicy
rules, no key material in the chart, autoscalers and disruption budgets, and that auth's internal API is
reached by no route. Objects of CRDs (Prometheus Operator, KEDA, External Secrets, Gateway API, Strimzi)
have no schema there; their fields are asserted here. ``checkov`` scans the rendered manifests.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from ehrflow_auth.policy import ServiceGrant
from ehrflow_contracts import topics
from ehrflow_devstack import chart_docs
from ehrflow_runtime.organizations import Organization

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "ehrflow"
CASES = sorted(p.name for p in (CHART / "ci").glob("*-values.yaml"))
KUBERNETES = ("1.34.0", "1.37.0")  # the oldest and newest minor versions kubernetes-validate ships
CRD_GROUPS = {
    "monitoring.coreos.com",
    "keda.sh",
    "external-secrets.io",
    "gateway.networking.k8s.io",
    "kafka.strimzi.io",
}
PUBLIC_PATHS = {
    "ingest": {"/v1/notify"},
    "auth": {"/orgs", "/launch", "/v1/session"},
    "writeback": {"/review", "/cds", "/v1/orgs"},
}
AUTH_CLIENTS = {"ingest", "inference", "writeback"}
CHECKOV = ROOT / ".venv-scan" / "bin" / "checkov"


def values(case: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / "ci" / case).read_text())
    return loaded


@functools.cache
def _chart() -> helm.Chart:
    return helm.Chart.load(CHART)


def render(values: dict[str, Any]) -> dict[str, str]:
    return _chart().render(values=values, name="ehrflow", namespace="clinical-ai", is_install=True)


@functools.cache
def rendered(case: str) -> tuple[dict[str, Any], ...]:
    objects = []
    for name, text in sorted(render(values(case)).items()):
        if name.endswith(".yaml"):
            objects += [o for o in yaml.safe_load_all(text) if o]
    return tuple(objects)


def notes(case: str) -> str:
    return next(text for name, text in render(values(case)).items() if name.endswith("NOTES.txt"))


def of_kind(case: str, kind: str) -> list[dict[str, Any]]:
    return [o for o in rendered(case) if o["kind"] == kind]


def component(obj: dict[str, Any]) -> str:
    return str(obj["metadata"]["labels"]["app.kubernetes.io/component"])


def pods(case: str) -> list[tuple[str, dict[str, Any]]]:
    return [(component(o), o["spec"]["template"]["spec"]) for o in rendered(case) if o["kind"] in ("Deployment", "Job")]


# --- Helm: lint, render, schema -------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_lint_is_clean(case: str) -> None:
    report = helm.lint(CHART, values(case), strict=True, kube_version="v1.34.0")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("kube", KUBERNETES)
@pytest.mark.parametrize("case", CASES)
def test_every_object_is_valid_kubernetes(case: str, kube: str) -> None:
    checked = 0
    for obj in rendered(case):
        assert obj["metadata"]["name"] and len(obj["metadata"]["name"]) <= 63
        if obj["apiVersion"].split("/")[0] in CRD_GROUPS:
            continue
        kubernetes_validate.validate(obj, kube, strict=True)
        checked += 1
    assert checked >= 7


@pytest.mark.parametrize("case", CASES)
def test_every_object_is_in_the_release_namespace(case: str) -> None:
    assert {o["metadata"].get("namespace") for o in rendered(case)} == {"clinical-ai"}


def test_strict_validation_does_reject_an_unknown_field() -> None:
    """The check above can fail: a misspelt field in a Deployment is refused."""
    deployment = json.loads(json.dumps(of_kind("minimal-values.yaml", "Deployment")[0]))
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContex"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES[0], strict=True)


def _with(case: str, **changes: Any) -> dict[str, Any]:
    merged = values(case)
    for dotted, value in changes.items():
        node = merged
        *parents, last = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return merged


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"surprise": True}, "additional properties 'surprise' not allowed"),
        ({"kafka__partitions": "six"}, "/kafka/partitions': got string, want integer"),
        ({"services__ingest__replicas": "2"}, "/services/ingest/replicas': got string, want integer"),
        ({"services__auth__colour": "blue"}, "additional properties 'colour' not allowed"),
        ({"podDisruptionBudget__minAvailable": 1, "podDisruptionBudget__maxUnavailable": 1}, "podDisruptionBudget"),
        ({"exposure__type": "loadbalancer"}, "/exposure/type"),
        ({"publicUrl": "http://ehrflow.example.org"}, "/publicUrl"),
    ],
)
def test_the_schema_rejects(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=re.escape(message)):
        render(_with("minimal-values.yaml", **changes))


def test_the_schema_requires_the_kafka_bootstrap() -> None:
    without = values("minimal-values.yaml")
    del without["kafka"]["bootstrapServers"]
    with pytest.raises(helm.HelmValuesError, match="/kafka/bootstrapServers"):
        render(without)


def test_nothing_is_guessed() -> None:
    """The chart's defaults alone do not install: Kafka, Redis, the organizations and the Secrets are required."""
    with pytest.raises(helm.HelmValuesError) as refused:
        render({})
    for missing in ("/image/registry", "/kafka/bootstrapServers", "/redis", "/secrets/organizations/existingSecret"):
        assert missing in str(refused.value)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"exposure__host": ""}, "exposure.host is required with exposure.type ingress"),
        ({"config__organizations": {}}, "config.organizations is empty"),
        ({"services__auth__enabled": False}, "need services.auth"),
        ({"kafka__securityProtocol": "SASL_SSL"}, "kafka.sasl.username is required"),
    ],
)
def test_inconsistent_values_fail_with_a_message(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError, match=re.escape(message)):
        render(_with("minimal-values.yaml", **changes))


# --- What the rendered objects must be ------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_every_pod_meets_the_restricted_profile(case: str) -> None:
    assert pods(case)
    for name, pod in pods(case):
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert not {"hostNetwork", "hostPID", "hostIPC"} & set(pod), name
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert not [v for v in volumes.values() if "hostPath" in v], name
        assert "emptyDir" in volumes["tmp"], name
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False and context["privileged"] is False, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            assert context["runAsUser"] > 0 and context["runAsNonRoot"] is True, name
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name
            assert "memory" in container["resources"]["limits"], name
            assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"], name  # noqa: S108 (the pod's own emptyDir)
            assert all(m.get("readOnly") for m in container["volumeMounts"] if m["name"] != "tmp"), name


@pytest.mark.parametrize("case", CASES)
def test_probes_and_a_graceful_stop(case: str) -> None:
    for deployment in of_kind(case, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
        sleep = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert pod["terminationGracePeriodSeconds"] >= sleep + 30
        strategy = deployment["spec"]["strategy"]["rollingUpdate"]
        assert strategy["maxUnavailable"] == 0


@pytest.mark.parametrize("case", CASES)
def test_a_config_change_rolls_the_pods(case: str) -> None:
    before = {
        d["metadata"]["name"]: d["spec"]["template"]["metadata"]["annotations"] for d in of_kind(case, "Deployment")
    }
    changed = values(case)
    changed["config"]["organizations"]["org1"]["name"] = "Northfield General Hospital (renamed)"
    after = [o for o in yaml.safe_load_all(render(changed)["ehrflow/templates/deployments.yaml"]) if o]
    for deployment in (o for o in after if o["kind"] == "Deployment"):
        old = before[deployment["metadata"]["name"]]["checksum/config"]
        assert deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"] != old


def _deployments(case: str) -> dict[str, dict[str, Any]]:
    return {component(d): d["spec"]["template"]["spec"] for d in of_kind(case, "Deployment")}


def _mounted_secrets(pod: dict[str, Any]) -> dict[str, list[str] | None]:
    """Secret name → the keys a pod mounts (None: all of them)."""
    found: dict[str, list[str] | None] = {}
    for volume in pod["volumes"]:
        if "secret" in volume:
            items = volume["secret"].get("items")
            found[volume["secret"]["secretName"]] = [i["key"] for i in items] if items else None
    return found


@pytest.mark.parametrize("case", CASES)
def test_only_auth_holds_the_ehr_credentials(case: str) -> None:
    chosen = values(case)["secrets"]
    for name, pod in _deployments(case).items():
        secrets = _mounted_secrets(pod)
        assert (chosen["credentials"]["existingSecret"] in secrets) == (name == "auth"), name
        assert (chosen["tokenCacheKey"]["existingSecret"] in secrets) == (name == "auth"), name
        assert (chosen["queueKey"]["existingSecret"] in secrets) == (name == "writeback"), name
        service_credentials = secrets.get(chosen["serviceCredentials"]["existingSecret"], [])
        assert service_credentials == (None if name == "auth" else [name]), name


@pytest.mark.parametrize("case", CASES)
def test_no_key_material_in_the_chart(case: str) -> None:
    for secret in of_kind(case, "Secret"):
        # The one Secret the chart makes tells KEDA how to connect: a mechanism, a user name, a TLS flag.
        assert set(secret["stringData"]) <= {"sasl", "username", "tls"}, secret["metadata"]["name"]
    for name, pod in _deployments(case).items():
        for env in pod["containers"][0]["env"]:
            assert "valueFrom" not in env, (name, env["name"])  # secrets come as files, never as variables
            assert not re.search(r"PRIVATE KEY|://[^/@]*:[^/@]*@", str(env.get("value", ""))), (name, env["name"])
    for config_map in of_kind(case, "ConfigMap"):
        text = json.dumps(config_map["data"])
        assert "PRIVATE KEY" not in text and "BEGIN" not in text


@pytest.mark.parametrize("case", CASES)
def test_the_configuration_is_what_the_services_accept(case: str) -> None:
    """The rendered registry and policy validate with ehrflow's own models (the file checks aside)."""
    (config_map,) = [c for c in of_kind(case, "ConfigMap") if c["metadata"]["name"].endswith("-config")]
    registry = yaml.safe_load(config_map["data"]["organizations.yaml"])
    for org_id, record in registry["organizations"].items():
        Organization.model_validate({"id": org_id, **record})
    policy = yaml.safe_load(config_map["data"]["policy.yaml"])
    disabled = {name for name, svc in values(case).get("services", {}).items() if not svc["enabled"]}
    assert set(policy["services"]) == AUTH_CLIENTS - disabled
    for name, grant in policy["services"].items():
        assert ServiceGrant.model_validate(grant).credential_file == Path(f"/etc/ehrflow/service-credentials/{name}")


@pytest.mark.parametrize("case", CASES)
def test_auth_internal_api_is_never_routed(case: str) -> None:
    routes: list[tuple[str, str]] = []  # (backend service, path prefix)
    for ingress in of_kind(case, "Ingress"):
        for rule in ingress["spec"]["rules"]:
            routes += [(p["backend"]["service"]["name"], p["path"]) for p in rule["http"]["paths"]]
    for route in of_kind(case, "HTTPRoute"):
        for rule in route["spec"]["rules"]:
            routes += [(b["name"], m["path"]["value"]) for b in rule["backendRefs"] for m in rule["matches"]]
    if values(case).get("exposure", {}).get("type") == "none":
        assert routes == []
        return
    assert routes
    for backend, path in routes:
        service = backend.removeprefix("ehrflow-")
        assert not path.startswith("/internal"), (backend, path)
        assert path in PUBLIC_PATHS[service], (backend, path)  # inference is never a backend


@pytest.mark.parametrize("case", CASES)
def test_network_policies(case: str) -> None:
    policies = {component(p): p["spec"] for p in of_kind(case, "NetworkPolicy")}
    if not values(case).get("networkPolicy", {}).get("enabled", True):
        assert policies == {}
        return
    deployments = _deployments(case)
    assert set(deployments) <= set(policies)
    selector = {name: d["metadata"]["labels"] for name, d in ((component(d), d) for d in of_kind(case, "Deployment"))}
    for name, spec in policies.items():
        assert set(spec["policyTypes"]) == {"Ingress", "Egress"}, name
        assert any({"port": 53, "protocol": "UDP"} in rule["ports"] for rule in spec["egress"]), name
        if name in selector:
            assert spec["podSelector"]["matchLabels"].items() <= selector[name].items()
    auth_rules = policies["auth"]["ingress"]
    from_pods = [
        peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        for rule in auth_rules
        for peer in rule["from"]
        if "podSelector" in peer and "namespaceSelector" not in peer
    ]
    assert sorted(from_pods) == sorted(AUTH_CLIENTS & set(deployments))
    ingress_from = values(case).get("networkPolicy", {}).get("ingressFrom")
    if "inference" in policies:
        peers = [peer for rule in policies["inference"]["ingress"] for peer in rule["from"]]
        assert not [p for p in peers if "podSelector" in p], "nothing but Prometheus reaches inference"
        assert ingress_from is None or not [p for p in peers if p in ingress_from]
    for client in AUTH_CLIENTS & set(policies):
        to_auth = [
            r
            for r in policies[client]["egress"]
            if any(
                p.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component") == "auth"
                for p in r.get("to", [])
            )
        ]
        assert to_auth, client


@pytest.mark.parametrize("case", CASES)
def test_autoscalers_and_disruption_budgets(case: str) -> None:
    deployments = {component(d): d for d in of_kind(case, "Deployment")}
    hpas = {component(h): h for h in of_kind(case, "HorizontalPodAutoscaler")}
    scaled = {component(s): s for s in of_kind(case, "ScaledObject")}
    services = values(case).get("services", {})
    for name, deployment in deployments.items():
        own = services.get(name, {})
        autoscaled = own.get("autoscaling", {}).get("enabled", name in ("auth", "ingest"))
        assert (name in hpas) == autoscaled, name
        assert (name in scaled) == own.get("keda", {}).get("enabled", False), name
        assert ("replicas" in deployment["spec"]) == (name not in hpas and name not in scaled), name
    assert not set(hpas) & {"inference", "writeback"}
    pdbs = {component(p): p["spec"] for p in of_kind(case, "PodDisruptionBudget")}
    if values(case).get("podDisruptionBudget", {}).get("enabled", True):
        assert set(pdbs) == set(deployments)
        assert all(len({"minAvailable", "maxUnavailable"} & set(s)) == 1 for s in pdbs.values())
    else:
        assert pdbs == {}
    for deployment in deployments.values():
        spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert {c["topologyKey"] for c in spread} == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}


def test_keda_watches_the_groups_the_services_consume_with() -> None:
    from ehrflow_inference.handlers import GROUP_ID
    from ehrflow_writeback.handlers import WRITER_GROUP

    triggers = {
        component(s): s["spec"]["triggers"][0]["metadata"] for s in of_kind("production-values.yaml", "ScaledObject")
    }
    assert (triggers["inference"]["consumerGroup"], triggers["inference"]["topic"]) == (
        GROUP_ID,
        topics.NOTIFICATION_RECEIVED,
    )
    assert (triggers["writeback"]["consumerGroup"], triggers["writeback"]["topic"]) == (
        WRITER_GROUP,
        topics.REVIEW_DECIDED,
    )
    (auth,) = of_kind("production-values.yaml", "TriggerAuthentication")
    assert {r["parameter"] for r in auth["spec"]["secretTargetRef"]} == {"sasl", "username", "password", "tls", "ca"}


def test_topics_come_from_the_code() -> None:
    kafka_topics = of_kind("production-values.yaml", "KafkaTopic")
    assert [t["spec"]["topicName"] for t in kafka_topics] == list(topics.ALL)
    assert {t["metadata"]["labels"]["strimzi.io/cluster"] for t in kafka_topics} == {"ehrflow"}
    (job,) = of_kind("ingress-job-values.yaml", "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == [
        "python",
        "-m",
        "ehrflow_runtime.create_topics",
    ]
    for case in ("minimal-values.yaml", "production-values.yaml", "ingress-job-values.yaml"):
        create = {
            e["name"]: e["value"]
            for d in of_kind(case, "Deployment")
            for e in d["spec"]["template"]["spec"]["containers"][0]["env"]
        }["EHRFLOW_KAFKA__CREATE_TOPICS"]
        assert create == ("true" if case == "minimal-values.yaml" else "false")


def test_kafka_security_reaches_every_client() -> None:
    for case, protocol in (("production-values.yaml", "SASL_SSL"), ("ingress-job-values.yaml", "SSL")):
        for _, pod in pods(case):
            env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
            assert env["EHRFLOW_KAFKA__SECURITY_PROTOCOL"] == protocol
            assert env["EHRFLOW_KAFKA__SSL_CA_FILE"] == "/etc/ehrflow/kafka-tls/ca.crt"
            mounts = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
            assert "/etc/ehrflow/kafka-tls" in mounts
            if protocol == "SASL_SSL":
                assert env["EHRFLOW_KAFKA__SASL_PASSWORD_FILE"] == "/etc/ehrflow/kafka-sasl/password"
            else:
                assert env["EHRFLOW_KAFKA__SSL_KEY_FILE"] == "/etc/ehrflow/kafka-tls/tls.key"


def test_operations_objects() -> None:
    (monitor,) = of_kind("production-values.yaml", "ServiceMonitor")
    assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "30s"}]
    (rules,) = of_kind("production-values.yaml", "PrometheusRule")
    alerts = {r["alert"] for g in rules["spec"]["groups"] for r in g["rules"]}
    assert {
        "EhrflowSubscriptionSilent",
        "EhrflowSubscriptionErrorStatus",
        "EhrflowGapsNotRecovered",
        "EhrflowDeadLetters",
        "EhrflowConsumerLag",
        "EhrflowCredentialUnhealthy",
        "EhrflowIngestUnavailable",
    } <= alerts
    (dashboard,) = [
        c for c in of_kind("production-values.yaml", "ConfigMap") if c["metadata"]["name"].endswith("-dashboard")
    ]
    assert json.loads(dashboard["data"]["ehrflow.json"])["panels"]
    secrets = {e["spec"]["target"]["name"] for e in of_kind("production-values.yaml", "ExternalSecret")}
    assert secrets == {v["existingSecret"] for v in values("production-values.yaml")["secrets"].values()}
    assert not of_kind("minimal-values.yaml", "ServiceMonitor") and not of_kind("minimal-values.yaml", "ExternalSecret")


def _metric_names() -> set[str]:
    """Every metric the services register (their modules imported), with the suffixes Prometheus adds."""
    from prometheus_client import REGISTRY

    import ehrflow_auth.app  # noqa: F401
    import ehrflow_inference.main  # noqa: F401
    import ehrflow_ingest.main  # noqa: F401
    import ehrflow_writeback.main  # noqa: F401
    from ehrflow_ingest import metrics

    suffixes = {"counter": ("_total",), "histogram": ("_count", "_bucket", "_sum"), "gauge": ("",)}
    names = {f"{f.name}{x}" for f in REGISTRY.collect() for x in suffixes.get(f.type, ("",))}
    names |= {f"{m._name}_total" for m in (metrics.RECEIVED, metrics.EVENTS)}  # noqa: SLF001 (read at scrape time)
    names |= {f"{metrics.LATENCY._name}{x}" for x in suffixes["histogram"]}  # noqa: SLF001
    return names


def test_alerts_and_dashboard_name_metrics_ehrflow_has() -> None:
    (rules,) = of_kind("production-values.yaml", "PrometheusRule")
    exprs = [r["expr"] for g in rules["spec"]["groups"] for r in g["rules"]]
    exprs += [
        t["expr"] for p in json.loads((CHART / "files" / "dashboard.json").read_text())["panels"] for t in p["targets"]
    ]
    named = {m for e in exprs for m in re.findall(r"\behrflow_[a-z_]+", e)}
    assert named and named <= _metric_names(), named - _metric_names()


@pytest.mark.parametrize("case", CASES)
def test_notes_warn_about_what_a_production_install_lacks(case: str) -> None:
    text = notes(case)
    if case == "webhook-only-values.yaml":
        assert "auth runs ONE replica" in text and "ingest runs ONE replica" in text
        assert "publicUrl is not set" in text and "networkPolicy.enabled is false" in text
    elif case == "production-values.yaml":
        assert "WARNING" not in text
    else:
        assert "allows any address on the EHR ports" in text and "ONE replica" not in text


def test_generated_files_are_current() -> None:
    stale = [str(p.relative_to(ROOT)) for p, text in chart_docs.generated().items() if p.read_text() != text]
    assert not stale, f"run `make docs`: {stale}"


def test_the_readme_describes_every_value() -> None:
    text = (CHART / "values.yaml").read_text()
    described = dict(chart_docs.described_values(text))
    missing = [key for key, _ in chart_docs.leaves(yaml.safe_load(text)) if not chart_docs.describe(key, described)]
    assert missing == []


# --- Policy scan ---------------------------------------------------------------------------------------


def test_the_policy_scan_finds_nothing(tmp_path: Path) -> None:
    """checkov's Kubernetes checks on every case's manifests; the skips, with reasons, are in checkov.yaml."""
    for case in CASES:
        folder = tmp_path / case.removesuffix(".yaml")
        folder.mkdir()
        for name, text in render(values(case)).items():
            if name.endswith(".yaml") and text.strip():
                (folder / Path(name).name).write_text(text)
    skips = yaml.safe_load((CHART / "checkov.yaml").read_text())["skip"]
    assert all(len(reason) > 40 for reason in skips.values())
    result = subprocess.run(  # noqa: S603 (the scan virtualenv's checkov, on files this test wrote)
        [
            str(CHECKOV),
            "-d",
            str(tmp_path),
            "--framework",
            "kubernetes",
            "--quiet",
            "--compact",
            "--skip-download",
            "--skip-check",
            ",".join(skips),
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads(result.stdout)
    summary = report["summary"] if isinstance(report, dict) else report[0]["summary"]
    failed = report["results"]["failed_checks"] if isinstance(report, dict) else report[0]["results"]["failed_checks"]
    assert summary["passed"] > 1000 and summary["parsing_errors"] == 0
    assert [(f["check_id"], f["resource"]) for f in failed] == []


def _setting_names(model: type[Any], prefix: str = "EHRFLOW_") -> set[str]:
    """The environment variables a settings class reads: ``EHRFLOW_<FIELD>``, nested fields joined by ``__``."""
    from pydantic import BaseModel

    names: set[str] = set()
    for field, info in model.model_fields.items():
        name = f"{prefix}{field.upper()}"
        names.add(name)
        for kind in (info.annotation, *getattr(info.annotation, "__args__", ())):
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                names |= _setting_names(kind, f"{name}__")
    return names


@pytest.mark.parametrize("case", CASES)
def test_every_setting_the_chart_gives_is_one_the_service_reads(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A misspelt variable would be ignored silently by the service; here it fails. The values parse, too."""
    from ehrflow_auth.settings import AuthSettings
    from ehrflow_inference.settings import InferenceSettings
    from ehrflow_ingest.settings import IngestSettings
    from ehrflow_runtime.create_topics import TopicSettings
    from ehrflow_writeback.settings import WritebackSettings

    classes = {
        "auth": AuthSettings,
        "ingest": IngestSettings,
        "inference": InferenceSettings,
        "writeback": WritebackSettings,
        "topics": TopicSettings,
    }
    for name, pod in pods(case):
        env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
        assert set(env) <= _setting_names(classes[name]), (name, set(env) - _setting_names(classes[name]))
        for key in [k for k in os.environ if k.startswith("EHRFLOW_")]:
            monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        if "EHRFLOW_REDIS_URL_FILE" in env:
            monkeypatch.delenv("EHRFLOW_REDIS_URL_FILE")  # the file is the Secret's, mounted in the pod only
        if "EHRFLOW_KAFKA__SASL_PASSWORD_FILE" in env:
            assert env["EHRFLOW_KAFKA__SECURITY_PROTOCOL"].startswith("SASL_")
        classes[name]()  # type: ignore[call-arg]
