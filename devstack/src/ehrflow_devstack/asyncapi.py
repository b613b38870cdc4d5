"""Each service's AsyncAPI document, generated from its FastStream declarations."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import yaml
from faststream import FastStream


def _apps() -> dict[str, Callable[[], FastStream]]:
    from ehrflow_auth.main import asyncapi as auth
    from ehrflow_inference.main import asyncapi as inference
    from ehrflow_ingest.main import asyncapi as ingest
    from ehrflow_writeback.main import asyncapi as writeback

    return {"auth": auth, "ingest": ingest, "inference": inference, "writeback": writeback}


def render() -> dict[str, str]:
    """``{service: yaml}`` for every service.

    Keys are sorted: FastStream lists publishers in no stable order, and the committed documents
    must only change when the declarations do.
    """
    return {
        name: yaml.safe_dump(factory().schema.to_specification().to_jsonable(), sort_keys=True, allow_unicode=True)
        for name, factory in _apps().items()
    }


def write_documents(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render().items():
        path = folder / f"{name}.yaml"
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
