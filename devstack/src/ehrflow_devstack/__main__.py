"""``python -m ehrflow_devstack up | demo | asyncapi``."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from pathlib import Path

STATE = Path(".ehrflow")


def _up(args: argparse.Namespace) -> int:
    from ehrflow_devstack.stack import Stack

    print("Starting the local stack …", flush=True)
    with Stack(STATE / "stack") as stack:
        assert stack.config
        print(f"\nReady. Organization registry: {stack.config.organizations_file}")
        for name, url in stack.urls.items():
            print(f"  {name:<10} {url}")
        for org, part in stack.ehrs.items():
            print(f"  EHR {org:<6} {part.url}")
        print(f"Logs: {stack.logs}/  —  Ctrl-C stops everything.", flush=True)
        if args.once:
            return 0
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
    return 0


def _demo(_: argparse.Namespace) -> int:
    from ehrflow_devstack.demo import run_demo

    return run_demo(STATE / "demo")


def _asyncapi(args: argparse.Namespace) -> int:
    from ehrflow_devstack.asyncapi import write_documents

    for path in write_documents(Path(args.out)):
        print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ehrflow-devstack")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the local stack and keep it running")
    up.add_argument("--once", action="store_true", help="start, report, stop (a health check)")
    up.set_defaults(func=_up)
    sub.add_parser("demo", help="run the reference scenario").set_defaults(func=_demo)
    docs = sub.add_parser("asyncapi", help="write each service's AsyncAPI document")
    docs.add_argument("--out", default="docs/asyncapi")
    docs.set_defaults(func=_asyncapi)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
