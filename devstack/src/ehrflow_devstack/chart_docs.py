"""The Helm chart's generated files, from their one source each (``make docs``; a test fails when they drift):

- ``deploy/helm/ehrflow/README.md``: every value, its default and its description, from the ``# --``
  comments in ``values.yaml`` (the style helm-docs reads), so the table cannot disagree with the file;
- ``deploy/helm/ehrflow/files/topics.yaml``: the topics the chart's Job or Strimzi resources create, from
  ``ehrflow_contracts.topics``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from ehrflow_contracts import topics

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "deploy" / "helm" / "ehrflow"

INTRO = """# ehrflow Helm chart

<!-- Generated from values.yaml by `make docs` (ehrflow_devstack.chart_docs); edit values.yaml instead. -->

One chart for ehrflow's four services (auth, ingest, inference, writeback). Installing it, the values a
production install sets, adding an organization, rotating a key and upgrading are in the repository's
`docs/deploy.md`. `values.schema.json` rejects unknown keys and wrong types, and the chart refuses to
guess what it cannot know: the images' registry, Kafka's bootstrap servers, the Redis URL, the organizations and the names of
the Secrets are required. The `ci/*-values.yaml` files are the cases the tests render and check.

## Values

| key | default | description |
|---|---|---|
"""


def described_values(text: str) -> list[tuple[str, str]]:
    """``(dotted key, description)`` for every key a ``# --`` comment describes, in file order."""
    found: list[tuple[str, str]] = []
    stack: list[tuple[int, str]] = []
    comment: list[str] | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            comment = [stripped[4:].strip()]
            continue
        if stripped.startswith("#"):
            if comment is not None:
                comment.append(stripped[1:].strip())
            continue
        if not stripped or stripped.startswith("- ") or ":" not in stripped:
            continue
        indent = len(line) - len(line.lstrip())
        key = stripped.split(":", 1)[0].strip().strip('"')
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key))
        if comment is not None:
            found.append((".".join(k for _, k in stack), " ".join(comment)))
            comment = None
    return found


def leaves(values: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Every value a user can set: scalars, lists and empty (free-form) mappings, by dotted key."""
    found: list[tuple[str, Any]] = []
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            found += leaves(value, f"{dotted}.")
        else:
            found.append((dotted, value))
    return found


def describe(key: str, described: dict[str, str]) -> str:
    """A key's own description; a service's field described once for another service; else its parent's."""
    if key in described:
        return described[key]
    parts = key.split(".")
    if parts[0] == "services" and len(parts) > 2:
        for other in ("auth", "ingest", "inference", "writeback"):
            twin = ".".join([parts[0], other, *parts[2:]])
            if twin in described:
                return described[twin]
    return describe(".".join(parts[:-1]), described) if len(parts) > 1 else ""


def _default(value: Any) -> str:
    rendered = json.dumps(value, separators=(", ", ": "))
    return f"`{rendered}`" if len(rendered) <= 60 else "(see values.yaml)"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def readme() -> str:
    text = (CHART / "values.yaml").read_text()
    described = dict(described_values(text))
    rows = [
        f"| `{key}` | {_default(value)} | {_cell(describe(key, described))} |"
        for key, value in leaves(yaml.safe_load(text))
    ]
    return INTRO + "\n".join(rows) + "\n"


def topics_file() -> str:
    body = yaml.safe_dump({"topics": list(topics.ALL)}, sort_keys=False)
    return "# Generated from ehrflow_contracts.topics by `make docs`; the topics ehrflow uses.\n" + body


def generated() -> dict[Path, str]:
    return {CHART / "README.md": readme(), CHART / "files" / "topics.yaml": topics_file()}


def main() -> None:
    for path, content in generated().items():
        path.write_text(content)
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
