"""The real model servers the local stack runs: MLServer (KServe v2 / Open Inference Protocol) serving a
scikit-learn model trained at start on synthetic data, and llama.cpp's OpenAI-compatible server with a tiny
GGUF model written at start (``devstack/model_servers/``).

Both live in their own virtualenv (``.venv-models``, from ``requirements-models.lock``; ``make setup`` makes
it and builds ``llama-server``), as a model server is a process of its own in production.
``EHRFLOW_MODELS_VENV`` points elsewhere; ``MLSERVER_URL`` / ``LLAMA_SERVER_URL`` use servers already running.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from ehrflow_devstack.parts import Part
from ehrflow_devstack.processes import Process, free_port, http_ok

ROOT = Path(__file__).resolve().parents[3]
SCRIPTS = ROOT / "devstack" / "model_servers"
READMISSION_MODEL = "readmission-risk"
SUMMARY_MODEL = "ehrflow-tiny"
"""The name llama-server answers to (its ``--alias``); any name reaches its one model."""


def models_venv() -> Path:
    venv = Path(os.environ.get("EHRFLOW_MODELS_VENV") or ROOT / ".venv-models")
    if not (venv / "bin" / "python").exists():
        raise RuntimeError(f"no model-server virtualenv at {venv}: run `make setup`")
    return venv


def _mlserver_ready(url: str) -> bool:
    return http_ok(f"{url}/v2/health/ready") and http_ok(f"{url}/v2/models/{READMISSION_MODEL}/ready")


def start_mlserver(state: Path, *, port: int | None = None) -> Part:
    """MLServer serving the readmission model, trained now (a few seconds) into ``state/mlserver-models``; on
    ``port`` when given (a restarted server where its clients expect it)."""
    if url := os.environ.get("MLSERVER_URL"):
        return Part(url.rstrip("/"), "external")
    venv = models_venv()
    models = state / "mlserver-models"
    if not (models / READMISSION_MODEL / "model.joblib").exists():
        subprocess.run(  # noqa: S603 (our own script, our own interpreter)
            [str(venv / "bin" / "python"), str(SCRIPTS / "train_readmission.py"), str(models)],
            check=True,
            capture_output=True,
        )
    http, grpc, metrics = port or free_port(), free_port(), free_port()
    url = f"http://127.0.0.1:{http}"
    proc = Process(
        "mlserver",
        [str(venv / "bin" / "mlserver"), "start", str(models)],
        state / "logs" / "mlserver.log",
        env={
            "MLSERVER_HOST": "127.0.0.1",
            "MLSERVER_HTTP_PORT": str(http),
            "MLSERVER_GRPC_PORT": str(grpc),
            "MLSERVER_METRICS_PORT": str(metrics),
            "MLSERVER_PARALLEL_WORKERS": "0",
            "MLSERVER_LOAD_MODELS_AT_STARTUP": "true",
        },
        ready=lambda: _mlserver_ready(url),
    )
    proc.start(timeout=90)
    return Part(url, "mlserver", process=proc)


def start_llama_server(state: Path, *, parallel: int = 2) -> Part:
    """llama.cpp's server with the tiny model, written now (under a second): its OpenAI-compatible API is
    at ``{url}/v1``."""
    if url := os.environ.get("LLAMA_SERVER_URL"):
        return Part(url.rstrip("/"), "external")
    venv = models_venv()
    model = state / "tiny.gguf"
    if not model.exists():
        subprocess.run(  # noqa: S603 (our own script, our own interpreter)
            [str(venv / "bin" / "python"), str(SCRIPTS / "tiny_gguf.py"), str(model)], check=True, capture_output=True
        )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = Process(
        "llama-server",
        [
            str(venv / "bin" / "llama-server"),
            "--model",
            str(model),
            "--alias",
            SUMMARY_MODEL,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--ctx-size",
            "16384",
            "--parallel",
            str(parallel),
            "--threads",
            "1",
            # llama.cpp's built-in chatml template: its Jinja templates put the template's own markers into the
            # structured-output grammar, which a model whose vocabulary is bytes cannot start.
            "--no-jinja",
            "--chat-template",
            "chatml",
            "--no-webui",
        ],
        state / "logs" / "llama-server.log",
        ready=lambda: http_ok(f"{url}/health"),
    )
    proc.start(timeout=60)
    return Part(url, "llama-server", process=proc)
