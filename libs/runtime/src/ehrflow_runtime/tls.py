"""Per-organization TLS to an EHR: a client certificate, a CA bundle and optional certificate pinning.

Some EHRs require mutual TLS, each organization with its own client certificate and CA. Every service
that calls an EHR (auth's discovery and token requests, the FHIR calls of ingest, inference and
writeback) takes its HTTP client for that organization from ``OrganizationClients``: the shared client
for organizations without TLS settings, else one of the organization's own, made from its files and
made again when they change (the registry reload notices a rotated certificate).

Pinning is checked on the connection, right after the handshake and before a byte of the request is
written, so a bearer token never travels over a connection whose certificate is not one of the pins.
A handshake that fails says which organization's it was (``TlsFailure``), never what was sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
import typing
from dataclasses import dataclass

import httpcore
import httpx
from httpcore import AsyncNetworkBackend, AsyncNetworkStream
from httpcore._backends.auto import AutoBackend

from ehrflow_runtime.organizations import Organization, OrganizationTls

log = logging.getLogger("ehrflow.tls")

CLOSE_AFTER_S = 60.0
"""A client replaced by a reload is closed this long after, when requests in flight have ended."""


def ssl_context(tls: OrganizationTls) -> ssl.SSLContext:
    """Verification against the organization's CA bundle (else the system's), with its client certificate."""
    context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    if tls.client_cert_file is not None:
        context.load_cert_chain(str(tls.client_cert_file), str(tls.client_key_file) if tls.client_key_file else None)
    return context


def fingerprint(der: bytes) -> str:
    """SHA-256 of a certificate (DER), as hex: what ``pinned_sha256`` lists."""
    return hashlib.sha256(der).hexdigest()


class PinMismatch(httpcore.ConnectError):
    """The EHR's certificate is valid but is none of the organization's pins."""


class _PinnedStream(AsyncNetworkStream):
    def __init__(self, stream: AsyncNetworkStream, pins: frozenset[str], organization: str) -> None:
        self._stream, self._pins, self._organization = stream, pins, organization

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._stream.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._stream.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> AsyncNetworkStream:
        secured = await self._stream.start_tls(ssl_context, server_hostname, timeout)
        peer = secured.get_extra_info("ssl_object")
        der = peer.getpeercert(binary_form=True) if peer is not None else None
        if der is None or fingerprint(der) not in self._pins:
            await secured.aclose()
            raise PinMismatch(f"{self._organization}: the EHR's certificate is not one of the pinned ones")
        return _PinnedStream(secured, self._pins, self._organization)

    def get_extra_info(self, info: str) -> typing.Any:
        return self._stream.get_extra_info(info)


class _PinningBackend(AsyncNetworkBackend):
    def __init__(self, pins: frozenset[str], organization: str) -> None:
        self._backend = AutoBackend()
        self._pins, self._organization = pins, organization

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> AsyncNetworkStream:
        stream = await self._backend.connect_tcp(host, port, timeout, local_address, socket_options)
        return _PinnedStream(stream, self._pins, self._organization)

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


class _PinningTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over a connection pool whose connections check the pins (httpx takes no network
    backend of its own, so the pool it made is replaced by one that does)."""

    def __init__(self, context: ssl.SSLContext, pins: frozenset[str], organization: str, limits: httpx.Limits) -> None:
        super().__init__(verify=context, limits=limits)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_PinningBackend(pins, organization),
        )


@dataclass
class _Made:
    stamp: str
    client: httpx.AsyncClient


class OrganizationClients:
    """The HTTP client to use for each organization's EHR."""

    def __init__(self, default: httpx.AsyncClient, *, timeout_s: float = 10.0) -> None:
        self.default = default
        self._timeout = timeout_s
        self._made: dict[str, _Made] = {}
        self._retired: dict[asyncio.Task[None], httpx.AsyncClient] = {}

    def for_org(self, org: Organization) -> httpx.AsyncClient:
        if org.tls is None:
            return self.default
        stamp = _stamp(org.tls)
        made = self._made.get(org.id)
        if made is not None and made.stamp == stamp:
            return made.client
        client = _client(org, self._timeout)
        if made is not None:
            self._retire(made.client)
        self._made[org.id] = _Made(stamp, client)
        log.info("organization TLS settings loaded", extra={"org": org.id, "pins": len(org.tls.pinned_sha256)})
        return client

    def _retire(self, client: httpx.AsyncClient) -> None:
        async def close_later() -> None:
            await asyncio.sleep(CLOSE_AFTER_S)
            await client.aclose()

        try:
            task = asyncio.get_running_loop().create_task(close_later())
        except RuntimeError:  # no loop yet (built at start-up): nothing is in flight
            return
        self._retired[task] = client
        task.add_done_callback(lambda done: self._retired.pop(done, None))

    async def aclose(self) -> None:
        for task, client in list(self._retired.items()):
            task.cancel()
            await client.aclose()
        for made in self._made.values():
            await made.client.aclose()


def _stamp(tls: OrganizationTls) -> str:
    """What the organization's client is made of: its settings and the contents of its files."""
    digest = hashlib.sha256(tls.model_dump_json().encode())
    for path in (tls.client_cert_file, tls.client_key_file, tls.ca_file):
        if path is not None:
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _client(org: Organization, timeout_s: float) -> httpx.AsyncClient:
    assert org.tls is not None
    context = ssl_context(org.tls)
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
    pins = frozenset(p.lower() for p in org.tls.pinned_sha256)
    transport = (
        _PinningTransport(context, pins, org.id, limits)
        if pins
        else httpx.AsyncHTTPTransport(verify=context, limits=limits)
    )
    return httpx.AsyncClient(
        transport=transport,
        timeout=httpx.Timeout(timeout_s, connect=min(5.0, timeout_s)),
        follow_redirects=False,
    )


def failure(exc: BaseException, org: Organization) -> str:
    """What to say of a failed call to ``org``'s EHR: the TLS reason where there is one. Under TLS 1.3 a
    server that refuses our client certificate says so only after our side finished the handshake, as a
    closed connection; with a client certificate configured, that is said too."""
    why = handshake_failure(exc)
    if why is not None:
        return why
    if (
        org.tls is not None
        and org.tls.client_cert_file is not None
        and isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError))
    ):
        return (
            f"the EHR closed the connection ({type(exc).__name__}); it may have refused {org.id}'s client certificate"
        )
    return type(exc).__name__


def handshake_failure(exc: BaseException) -> str | None:
    """Why a TLS handshake failed (``CERTIFICATE_VERIFY_FAILED``, an alert, a pin), or None when ``exc``
    is not a handshake failure. Reasons name no secret."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, PinMismatch):
            return "the EHR's certificate is not one of the pinned ones"
        if isinstance(seen, ssl.SSLError):
            return f"TLS handshake failed ({seen.reason or type(seen).__name__})"
        seen = seen.__cause__ or seen.__context__
    return None
