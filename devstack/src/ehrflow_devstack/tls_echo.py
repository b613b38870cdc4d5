"""A TLS server that requires client certificates, for the mutual-TLS tests: a real handshake, a real
verification of the client's certificate, and a record of what reached the application.

``python -m ehrflow_devstack.tls_echo PORT CERT KEY CLIENT_CA LOG`` serves every GET with a small FHIR
Patient, and appends one line per request that got through the handshake: the SHA-256 of its
``Authorization`` header (never the header itself).
"""

from __future__ import annotations

import hashlib
import json
import ssl
import sys
from pathlib import Path
from typing import Any

import uvicorn


def app_logging_to(log: Path) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        authorization = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        with log.open("a") as out:
            out.write(hashlib.sha256(authorization).hexdigest() + "\n")
        body = json.dumps({"resourceType": "Patient", "id": "tls-1"}).encode()
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/fhir+json")]}
        )
        await send({"type": "http.response.body", "body": body})

    return app


def main() -> None:
    port, cert, key, client_ca, log = sys.argv[1:6]
    uvicorn.run(
        app_logging_to(Path(log)),
        host="127.0.0.1",
        port=int(port),
        ssl_certfile=cert,
        ssl_keyfile=key,
        ssl_ca_certs=client_ca,
        ssl_cert_reqs=ssl.CERT_REQUIRED,
        log_level="warning",
        lifespan="off",
    )


if __name__ == "__main__":
    main()
