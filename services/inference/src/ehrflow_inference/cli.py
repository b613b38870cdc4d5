"""``ehrflow-inference``: the service (no arguments), and the operator's commands beside it.

- ``ehrflow-inference check-contracts [--org ID] [--organizations FILE]``: validate every enabled contract and
  compare it with its EHR's CapabilityStatement and scopes; exit 0 when all match, 1 on a mismatch or an EHR
  that cannot be read, 2 when a contract does not validate.
- ``ehrflow-inference contract-schemas [--out DIR]``: write each workflow's contract JSON Schema.
- ``ehrflow-inference dead-letters list [--org ID]``: what was given up on (ids and reasons, no record content).
- ``ehrflow-inference dead-letters replay (--event-id ID ... | --all) [--org ID]``: publish those letters'
  records back to where they came from. Both read ``EHRFLOW_KAFKA__*`` like the services.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

from ehrflow_inference.checking import check_all, render
from ehrflow_inference.enabled import enabled_contracts
from ehrflow_inference.workflows import SHIPPED
from ehrflow_runtime import dead_letters
from ehrflow_runtime.errors import ConfigurationError
from ehrflow_runtime.organizations import load_registry
from ehrflow_runtime.serve import make_http_client
from ehrflow_runtime.tls import OrganizationClients


def contract_schemas() -> dict[str, str]:
    """``{workflow: JSON Schema text}`` of every shipped workflow's contract."""
    return {
        name: json.dumps(workflow.contract_model.model_json_schema(), indent=2, sort_keys=True) + "\n"
        for name, workflow in sorted(SHIPPED.items())
    }


async def _check(organizations: Path, only: str | None, timeout_s: float) -> int:
    try:
        registry = load_registry(organizations, credentials=False)
        enabled = enabled_contracts(registry)
    except ConfigurationError as exc:
        print(f"invalid configuration: {exc}", file=sys.stderr)
        return 2
    if only is not None and only not in registry:
        print(f"no organization '{only}' in {organizations}", file=sys.stderr)
        return 2
    http = make_http_client(timeout_s)
    clients = OrganizationClients(http, timeout_s=timeout_s)
    try:
        reports = await check_all(registry, enabled, clients.for_org, only=only)
    finally:
        await clients.aclose()
        await http.aclose()
    print(render(reports))
    return 0 if all(r.ok for r in reports) else 1


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ehrflow-inference", description="ehrflow's inference service and tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check-contracts", help="compare enabled contracts with each EHR's capabilities")
    check.add_argument("--org", help="only this organization")
    check.add_argument(
        "--organizations", type=Path, default=os.environ.get("EHRFLOW_ORGANIZATIONS_FILE"), help="organization file"
    )
    check.add_argument("--timeout", type=float, default=10.0, help="seconds per EHR request")
    schemas = sub.add_parser("contract-schemas", help="write each workflow's contract JSON Schema")
    schemas.add_argument("--out", type=Path, default=Path("docs/contracts"))
    dead_letters.add_command(sub)
    args = parser.parse_args(argv)
    if args.command == "dead-letters":
        return dead_letters.run_command(parser, args)
    if args.command == "check-contracts":
        if args.organizations is None:
            parser.error("give --organizations or set EHRFLOW_ORGANIZATIONS_FILE")
        return asyncio.run(_check(args.organizations, args.org, args.timeout))
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in contract_schemas().items():
        path = args.out / f"{name}.schema.json"
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    return 0
