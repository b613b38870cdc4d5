"""The organization registry: one YAML file describing every organization (health system) ehrflow serves.

Secrets are never inline: keys, webhook secrets and reviewer keys are referenced by file path, relative
to the registry file's folder (or absolute), so Kubernetes can mount them from Secrets. An invalid file
fails at start-up with a message naming the file, the organization and the field. See README
"Organization file reference" for every field.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ehrflow_runtime.errors import ConfigurationError

_ORG_ID = r"^[a-z0-9][a-z0-9-]{0,62}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SigningKey(_Strict):
    """One of an organization's signing keys. Rotation is data: publish first, sign later, retire later."""

    file: Path = Field(description="PEM private key (PKCS#8), mounted from a Secret.")
    kid: str = Field(min_length=1, description="Key id published in our JWKS and sent in assertions.")
    alg: Literal["RS384", "ES384"] = "RS384"
    sign_from: datetime | None = Field(
        default=None, description="Published before this instant, used for signing from it on (None: at once)."
    )
    retire_at: datetime | None = Field(default=None, description="Neither used nor published from this instant.")

    def publishable(self, now: datetime) -> bool:
        return self.retire_at is None or now < self.retire_at

    def signing(self, now: datetime) -> bool:
        return self.publishable(now) and (self.sign_from is None or self.sign_from <= now)


ScopeStyle = Literal["smart", "omit", "entra"]


class BackendAuth(_Strict):
    """SMART Backend Services client registration at the organization's EHR, with its vendor quirks."""

    client_id: str = Field(min_length=1)
    method: Literal["private_key_jwt", "client_secret_basic"] = "private_key_jwt"
    keys: tuple[SigningKey, ...] = Field(default=(), description="Required for private_key_jwt.")
    client_secret_file: Path | None = Field(default=None, description="Required for client_secret_basic.")
    token_endpoint: str | None = Field(default=None, description="Overrides discovery when set.")
    assertion_audience: str | None = Field(
        default=None, description="Quirk: a fixed assertion `aud` instead of the token endpoint."
    )
    scope_style: ScopeStyle = Field(
        default="smart",
        description="`smart`: the feature's scopes; `omit`: no scope parameter (Epic-style backends); "
        "`entra`: `{fhir_base_url}/.default` (Azure / Entra ID).",
    )

    @model_validator(mode="after")
    def _credentials_for_method(self) -> BackendAuth:
        if self.method == "private_key_jwt" and not self.keys:
            raise ValueError("keys|private_key_jwt needs at least one key")
        if self.method == "client_secret_basic" and self.client_secret_file is None:
            raise ValueError("client_secret_file|client_secret_basic needs a client_secret_file")
        kids = [k.kid for k in self.keys]
        if len(set(kids)) != len(kids):
            raise ValueError("keys|every key needs its own kid")
        return self


class Roles(_Strict):
    """Which ehrflow roles a launched clinician has (a contract names the role that may approve its drafts)."""

    claim: str | None = Field(
        default=None,
        description="An id_token claim listing the user's roles at the EHR (a list, or space-separated text); each "
        "value found in `map` gives that role.",
    )
    map: dict[str, str] = Field(default_factory=dict, description="EHR role (a value of `claim`) → ehrflow role.")
    users: dict[str, tuple[str, ...]] = Field(
        default_factory=dict, description="`fhirUser` (`Practitioner/…`) → ehrflow roles, whatever the claim says."
    )

    def of(self, user: str, claims: dict[str, Any]) -> tuple[str, ...]:
        """The ehrflow roles of ``user`` with these id_token ``claims``, sorted."""
        found = set(self.users.get(user, ()))
        value = claims.get(self.claim) if self.claim else None
        values = value.split() if isinstance(value, str) else value if isinstance(value, list) else []
        found |= {self.map[v] for v in values if isinstance(v, str) and v in self.map}
        return tuple(sorted(found))


class Launch(_Strict):
    """Clinician SMART App Launch (EHR launch and standalone) at this organization."""

    client_id: str = Field(min_length=1, description="Our public client id at the EHR's authorization server.")
    redirect_uri: str = Field(description="Our callback for this organization: `https://<auth>/launch/<org>/callback`.")
    issuers: tuple[str, ...] = Field(
        min_length=1, description="Allowed `iss` values (FHIR bases); the first is used for standalone launches."
    )
    scopes: tuple[str, ...] = ("launch", "openid", "fhirUser", "patient/*.read")
    return_url: str = Field(description="Where the browser goes after a launch; the session id follows as `#session=`.")
    session_ttl_s: int = Field(default=8 * 3600, gt=0, le=24 * 3600)
    starts_per_minute: int = Field(
        default=300,
        ge=1,
        description="Launches that may start per minute at this organization (each stores a state in Redis and "
        "may read the EHR's SMART configuration); beyond it `GET /launch/{org}` answers 429.",
    )
    allow_patientless_sessions: bool = Field(
        default=False,
        description="Accept a launch that names no patient (with no patient scope granted). Such a session sees "
        "every draft of the organization, so it is refused unless this is set.",
    )
    roles: Roles = Roles()


class WebhookSecret(_Strict):
    header: str = Field(min_length=1, pattern=r"^[A-Za-z0-9-]+$", description="Header the EHR sends it in.")
    file: Path


class WebhookSignature(_Strict):
    """An HMAC-SHA256 over the raw body: ``websub`` sends ``X-Hub-Signature: sha256=<hex>`` (athenahealth),
    ``medplum`` sends ``X-Signature: <hex>``."""

    style: Literal["websub", "medplum"]
    file: Path = Field(description="The shared signing secret.")


class DeclaredSubscription(_Strict):
    """A Subscription this organization's EHR should have. Ingest's subscription manager creates it, checks
    that it stays active, re-activates it after ``error``/``off`` and backfills what happened meanwhile."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$", description="Ours: the route and the EHR-side tag.")
    criteria: str = Field(
        pattern=r"^[A-Z][A-Za-z]+\?.+$",
        description="What to watch, as a search (`Observation?code=http://loinc.org|85353-1`): the classic "
        "criteria, or the topic's filter criteria. Recovery searches it with `_lastUpdated`.",
    )
    topic: str | None = Field(
        default=None, description="SubscriptionTopic canonical (R4 backport topic-based); absent: classic R4."
    )
    content: Literal["empty", "id-only", "full-resource"] = "full-resource"
    heartbeat_s: int | None = Field(
        default=None, gt=0, description="Topic-based only: the heartbeat period asked for; silence alerts at 1.5×."
    )
    secrets: tuple[WebhookSecret, ...] = Field(
        default=(),
        max_length=2,
        description="This subscription's own header secrets (one, or two while rotating): its route accepts "
        "these instead of the organization's, and the first is handed to the EHR.",
    )

    @model_validator(mode="after")
    def _classic_limits(self) -> DeclaredSubscription:
        if self.topic is None and self.content == "id-only":
            raise ValueError("content|a classic subscription sends the resource or nothing: full-resource or empty")
        if self.topic is None and self.heartbeat_s is not None:
            raise ValueError("heartbeat_s|classic subscriptions have no heartbeats")
        return self

    @property
    def resource_type(self) -> str:
        return self.criteria.split("?", 1)[0]


class ClientCertificate(_Strict):
    """A sender's client certificate, as the ingress that verified it forwards it (``X-Forwarded-Client-Cert``
    from a trusted proxy): matched on its SHA-256 fingerprint, its subject, or both."""

    sha256: str | None = Field(default=None, description="SHA-256 (hex) of the certificate (DER).")
    subject: str | None = Field(default=None, description='The subject as the ingress writes it, e.g. "CN=ehr,O=Org".')

    @model_validator(mode="after")
    def _something(self) -> ClientCertificate:
        if self.sha256 is None and self.subject is None:
            raise ValueError("sha256|name the certificate by its sha256, its subject, or both")
        if self.sha256 is not None:
            digest = self.sha256.replace(":", "").lower()
            if not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise ValueError("sha256|64 hex digits (colons allowed)")
            object.__setattr__(self, "sha256", digest)
        return self


class Ingest(_Strict):
    secrets: tuple[WebhookSecret, ...] = Field(default=(), max_length=2, description="One, or two while rotating.")
    signatures: tuple[WebhookSignature, ...] = Field(
        default=(), max_length=2, description="One, or two while rotating."
    )
    client_certificates: tuple[ClientCertificate, ...] = Field(
        default=(),
        max_length=2,
        description="Senders' client certificates the ingress verified (one, or two while rotating); needs "
        "EHRFLOW_TRUSTED_PROXIES.",
    )
    keep_resources: bool = Field(
        default=True,
        description="Put the resources senders include on the bus; false keeps ids only (PHI minimisation).",
    )

    subscriptions: tuple[DeclaredSubscription, ...] = Field(
        default=(), description="Subscriptions ingest keeps on the EHR (needs a header secret to give the EHR)."
    )
    numbering: Literal["global", "bundle-relative", "none"] = Field(
        default="global",
        description="How the EHR numbers events: `global` counters reveal gaps; `bundle-relative` (athenahealth) "
        "and `none` do not, so only silences and pings lead to recovery.",
    )
    recovery_per_minute: int = Field(
        default=60,
        ge=1,
        description="At most this many recovery requests per minute against this EHR: each `$events` call, "
        "each search page and each read of a subscription's criteria counts.",
    )

    @model_validator(mode="after")
    def _some_authentication(self) -> Ingest:
        if not self.secrets and not self.signatures and not self.client_certificates:
            raise ValueError(
                "secrets|an organization needs webhook secrets, signatures or client certificates to authenticate "
                "its EHR"
            )
        if any(not s.secrets for s in self.subscriptions) and not self.secrets:
            raise ValueError(
                "subscriptions|managed subscriptions need a header secret for the EHR: their own, or ingest.secrets"
            )
        names = [s.name for s in self.subscriptions]
        if len(set(names)) != len(names):
            raise ValueError("subscriptions|subscription names must be unique")
        return self


class Review(_Strict):
    api_key_file: Path = Field(description="Key a review client of this organization presents (bearer).")
    embed_origins: tuple[str, ...] = Field(
        default=(),
        description="Origins (`https://ehr.example.org`) whose pages may show the review screen in a frame, as "
        "EHRs show SMART apps; the origins of the launch's issuers are always allowed. Elsewhere framing is "
        "refused (`Content-Security-Policy: frame-ancestors`).",
    )

    @field_validator("embed_origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            if not re.fullmatch(r"https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?", origin):
                raise ValueError(f"{origin!r} is not an origin (scheme://host[:port], no path)")
        return value


WRITABLE_TYPES = ("RiskAssessment", "Observation", "DocumentReference", "Flag", "Task", "Communication")
"""What writeback writes: the output types a workflow contract may name."""


class WritebackOutputs(_Strict):
    """Where this organization's approved outputs go, by resource type."""

    routes: dict[str, str] = Field(
        default_factory=dict,
        description="Resource type → another FHIR base of this organization's to write that type to (a document "
        "store, say); the organization's tokens are sent there. Unlisted types go to `fhir_base_url`.",
    )
    refuse: tuple[str, ...] = Field(
        default=(),
        description="Resource types this organization does not accept from ehrflow: an approved draft of such a "
        "type is not written and its review shows why.",
    )

    @field_validator("routes")
    @classmethod
    def _routes(cls, value: dict[str, str]) -> dict[str, str]:
        for kind, base in value.items():
            if kind not in WRITABLE_TYPES:
                raise ValueError(f"routes: {kind} is not a type writeback writes ({', '.join(WRITABLE_TYPES)})")
            if not base.startswith(("https://", "http://")):
                raise ValueError(f"routes.{kind}: {base!r} is not an http(s) FHIR base")
        return value

    @field_validator("refuse")
    @classmethod
    def _refuse(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for kind in value:
            if kind not in WRITABLE_TYPES:
                raise ValueError(f"refuse: {kind} is not a type writeback writes ({', '.join(WRITABLE_TYPES)})")
        return value


class CdsClient(_Strict):
    """An EHR's CDS client that may call ehrflow's CDS Hooks services for this organization: the ``iss`` of
    the JWTs it signs, and where its public keys are (the JWT's ``jku`` header is not followed)."""

    issuer: str = Field(min_length=1, description="The `iss` of the client's JWTs, compared exactly.")
    jwks_url: str = Field(description="The client's JWK Set (https; http only for a local EHR).")


class CdsHooks(_Strict):
    """CDS Hooks services for this organization at `{public url}/cds/{org}/cds-services`."""

    clients: tuple[CdsClient, ...] = Field(min_length=1, description="The CDS clients (issuers) allowed to call.")


class OrganizationTls(_Strict):
    """TLS to this organization's EHR (FHIR, discovery and token endpoints), for EHRs that require mutual
    TLS or a CA of their own (``ehrflow_runtime.tls``)."""

    client_cert_file: Path | None = Field(default=None, description="Our client certificate (PEM, chain).")
    client_key_file: Path | None = Field(default=None, description="Its private key (PEM); from a Secret.")
    ca_file: Path | None = Field(
        default=None, description="CA bundle for the EHR's certificates (default: the system's)."
    )
    pinned_sha256: tuple[str, ...] = Field(
        default=(),
        description="SHA-256 (hex) of the EHR's certificates (DER) to accept; empty: any the CA bundle verifies.",
    )

    @field_validator("pinned_sha256")
    @classmethod
    def _hex_digests(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pin in value:
            if not re.fullmatch(r"[0-9a-fA-F]{64}", pin.replace(":", "")):
                raise ValueError("each pin is a SHA-256 digest: 64 hex digits (colons allowed)")
        return tuple(p.replace(":", "").lower() for p in value)

    @model_validator(mode="after")
    def _pair(self) -> OrganizationTls:
        if (self.client_cert_file is None) != (self.client_key_file is None):
            raise ValueError("client_key_file|a client certificate and its key come together")
        return self


class AuditCopies(_Strict):
    """Whether this organization's audit records are also written to its EHR, as FHIR AuditEvents."""

    write_to_ehr: bool = Field(
        default=False,
        description="Write every audit record of this organization (launches, views, decisions, writes, tokens) "
        "to its FHIR base as an AuditEvent, once each (a conditional create on the record's event id). The audit "
        "topic stays the record; copies wait, in order, while the EHR is down.",
    )
    feature: str = Field(
        default="audit",
        pattern=_ORG_ID,
        description="The feature (in `features`) whose token writes the AuditEvents: its scopes need "
        "`system/AuditEvent.write` (or `.c`).",
    )


class Organization(_Strict):
    id: str = Field(pattern=_ORG_ID)
    name: str = Field(min_length=1)
    fhir_base_url: str
    allow_insecure_http: bool = Field(default=False, description="Permit an http:// FHIR base. Local development only.")
    backend_auth: BackendAuth
    features: dict[str, tuple[str, ...]] = Field(
        min_length=1,
        description="Enabled features and the SMART scopes each needs; a token is only ever for one feature.",
    )
    ingest: Ingest
    review: Review
    launch: Launch | None = None
    cds_hooks: CdsHooks | None = None
    writeback: WritebackOutputs = WritebackOutputs()
    audit: AuditCopies = AuditCopies()
    workflows: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Workflows this organization runs, each with overrides of the workflow's shipped contract "
        "(`{}`: as shipped). Validated by the inference service, which knows the workflows.",
    )
    tls: OrganizationTls | None = None

    @field_validator("features")
    @classmethod
    def _feature_names(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        for name, scopes in value.items():
            if not re.fullmatch(_ORG_ID, name):
                raise ValueError(f"feature name '{name}' must match {_ORG_ID}")
            if not scopes:
                raise ValueError(f"feature '{name}' needs at least one scope")
        return value

    @field_validator("workflows")
    @classmethod
    def _workflow_names(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name in value:
            if not re.fullmatch(_ORG_ID, name):
                raise ValueError(f"workflow name '{name}' must match {_ORG_ID}")
        return value

    @field_validator("fhir_base_url")
    @classmethod
    def _absolute_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an absolute http(s) URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _audit_feature(self) -> Organization:
        if self.audit.write_to_ehr and self.audit.feature not in self.features:
            raise ValueError(f"audit.feature '{self.audit.feature}' is not one of this organization's features")
        return self

    @model_validator(mode="after")
    def _https_unless_allowed(self) -> Organization:
        if urlsplit(self.fhir_base_url).scheme != "https" and not self.allow_insecure_http:
            raise ValueError("fhir_base_url must use https (set allow_insecure_http only for local development)")
        return self

    def scope_for(self, feature: str) -> str | None:
        """The ``scope`` parameter of a token request for ``feature`` (None: send no scope)."""
        style = self.backend_auth.scope_style
        if style == "omit":
            return None
        if style == "entra":
            return f"{self.fhir_base_url}/.default"
        return " ".join(self.features[feature])

    @property
    def fhir_origin(self) -> str:
        """``scheme://host:port`` of the FHIR base: bearer tokens go nowhere else."""
        parts = urlsplit(self.fhir_base_url)
        return f"{parts.scheme}://{parts.netloc}"


class Registry:
    """All organizations, by id. Paths inside are already resolved against the file's folder."""

    def __init__(self, organizations: dict[str, Organization], source: Path) -> None:
        self._orgs = organizations
        self.source = source

    def __contains__(self, org_id: object) -> bool:
        return org_id in self._orgs

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._orgs.values())

    def __len__(self) -> int:
        return len(self._orgs)

    def get(self, org_id: str) -> Organization | None:
        return self._orgs.get(org_id)

    def ids(self) -> list[str]:
        return sorted(self._orgs)


def _field_and_message(err: Any) -> tuple[str, str]:
    """Where a validation error points; validators name a sub-field as ``"field|message"``."""
    loc = [str(x) for x in err["loc"]]
    message = str(err["msg"]).removeprefix("Value error, ")
    if "|" in message:
        sub, _, message = message.partition("|")
        loc.append(sub)
    return ".".join(loc) or "-", message


def _fail(path: Path, org: str | None, field: str, message: str) -> ConfigurationError:
    where = f"organization '{org}', " if org else ""
    return ConfigurationError(f"{path}: {where}field '{field}': {message}")


def _resolve_files(org: Organization, folder: Path, *, credentials: bool) -> Organization:
    """Make every secret path absolute and check that the file exists. The EHR credentials (signing keys,
    client secrets) are only checked where they are used (``credentials``): the auth service alone holds
    them, so the other services' pods need not mount them."""

    def resolve(p: Path) -> Path:
        return p if p.is_absolute() else (folder / p).resolve()

    data = org.model_dump()
    checks: list[tuple[str, list[Any], str, bool]] = [("review.api_key_file", ["review"], "api_key_file", True)]
    checks += [
        (f"backend_auth.keys.{i}.file", ["backend_auth", "keys", i], "file", credentials)
        for i in range(len(org.backend_auth.keys))
    ]
    if org.backend_auth.client_secret_file is not None:
        checks.append(("backend_auth.client_secret_file", ["backend_auth"], "client_secret_file", credentials))
    checks += [
        (f"ingest.secrets.{i}.file", ["ingest", "secrets", i], "file", True) for i in range(len(org.ingest.secrets))
    ]
    checks += [
        (f"ingest.signatures.{i}.file", ["ingest", "signatures", i], "file", True)
        for i in range(len(org.ingest.signatures))
    ]
    checks += [
        (f"ingest.subscriptions.{i}.secrets.{j}.file", ["ingest", "subscriptions", i, "secrets", j], "file", True)
        for i, sub in enumerate(org.ingest.subscriptions)
        for j in range(len(sub.secrets))
    ]
    if org.tls is not None:
        checks += [
            (f"tls.{name}", ["tls"], name, True)
            for name in ("client_cert_file", "client_key_file", "ca_file")
            if getattr(org.tls, name) is not None
        ]
    for dotted, route, key, required in checks:
        node: Any = data
        for step in route:
            node = node[step]
        node[key] = resolve(Path(node[key]))
        if required and not node[key].is_file():
            raise ValueError(f"{dotted}|file not found: {node[key]}")
    return Organization.model_validate(data)


def load_registry(path: Path | str, *, credentials: bool = True) -> Registry:
    """Load and validate the registry; raise ConfigurationError naming file, organization and field.

    ``credentials=False``: the EHR credential files (``backend_auth``) need not exist; every service but
    auth loads the registry so.
    """
    path = Path(path).resolve()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise _fail(path, None, "-", f"cannot read the file ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise _fail(path, None, "-", f"not valid YAML ({exc})") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("organizations"), dict) or not raw["organizations"]:
        raise _fail(path, None, "organizations", "expected a non-empty mapping of organization id to record")
    extra = set(raw) - {"organizations"}
    if extra:
        raise _fail(path, None, sorted(extra)[0], "unknown top-level key")
    orgs: dict[str, Organization] = {}
    for org_id, record in raw["organizations"].items():
        if not isinstance(record, dict):
            raise _fail(path, str(org_id), "-", "expected a mapping")
        try:
            org = Organization.model_validate({"id": org_id, **record})
            orgs[org.id] = _resolve_files(org, path.parent, credentials=credentials)
        except ValidationError as exc:
            raise _fail(path, str(org_id), *_field_and_message(exc.errors()[0])) from None
        except ValueError as exc:
            field, _, message = str(exc).partition("|")
            raise _fail(path, str(org_id), field, message) from None
    return Registry(orgs, path)
