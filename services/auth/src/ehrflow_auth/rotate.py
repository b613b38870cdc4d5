"""Rotate an organization's signing key with overlap (docs/design/smart.md F2).

    ehrflow-auth-rotate-key --registry organizations.yaml --org org1 [--publish-for 360] [--retire-after 3600]

Writes a new key beside the current one and edits the registry: the new key is published at once and
signs from ``now + publish-for`` (longer than our JWKS ``max-age`` and EHRs' JWKS caches: SEKMET keeps
one for 300 s, Epic up to 29 h, so choose accordingly); the keys it replaces are retired ``retire-after``
seconds later, once tokens they obtained have expired. The auth service picks the change up by itself.
YAML comments in the registry are not preserved.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa


def new_private_key_pem(alg: str) -> bytes:
    key = rsa.generate_private_key(65537, 3072) if alg == "RS384" else ec.generate_private_key(ec.SECP384R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def plan(
    keys: list[dict[str, Any]],
    *,
    new_key: dict[str, Any],
    now: datetime,
    publish_for: timedelta,
    retire_after: timedelta,
) -> list[dict[str, Any]]:
    """The organization's key list after a rotation. Pure: no files are touched."""
    sign_from = now + publish_for
    retire_at = sign_from + retire_after
    updated = []
    for key in keys:
        key = dict(key)
        if key.get("retire_at") is None or datetime.fromisoformat(str(key["retire_at"])) > retire_at:
            key["retire_at"] = retire_at.isoformat()
        updated.append(key)
    return [*updated, {**new_key, "sign_from": sign_from.isoformat()}]


def write_private(path: Path, data: bytes) -> None:
    """Write a new private key readable by its owner only from the first byte: the file is created with
    mode 0600 (whatever the umask), never written first and restricted after. An existing file is an error."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def rotate(registry: Path, org_id: str, *, publish_for: timedelta, retire_after: timedelta, now: datetime) -> str:
    data = yaml.safe_load(registry.read_text(encoding="utf-8"))
    record = data["organizations"][org_id]
    keys = record["backend_auth"]["keys"]
    current = keys[-1]
    alg = current.get("alg", "RS384")
    kid = f"{org_id}-{now.strftime('%Y%m%dT%H%M%S')}"
    current_file = Path(current["file"])
    new_file = current_file.with_name(f"{kid}.pem")
    target = new_file if new_file.is_absolute() else registry.parent / new_file
    write_private(target, new_private_key_pem(alg))
    record["backend_auth"]["keys"] = plan(
        keys,
        new_key={"file": str(new_file), "kid": kid, "alg": alg},
        now=now,
        publish_for=publish_for,
        retire_after=retire_after,
    )
    staged = registry.with_suffix(".rotating")
    staged.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    staged.replace(registry)  # atomic: a reader sees the old file or the new one
    return kid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ehrflow-auth-rotate-key", description=__doc__.split("\n\n")[0])
    parser.add_argument("--registry", type=Path, required=True)
    parser.add_argument("--org", required=True)
    parser.add_argument("--publish-for", type=float, default=360.0, help="seconds before the new key signs")
    parser.add_argument("--retire-after", type=float, default=3600.0, help="seconds the old key stays published")
    args = parser.parse_args(argv)
    kid = rotate(
        args.registry,
        args.org,
        publish_for=timedelta(seconds=args.publish_for),
        retire_after=timedelta(seconds=args.retire_after),
        now=datetime.now(UTC),
    )
    print(f"{args.org}: published {kid}; it signs in {args.publish_for:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
