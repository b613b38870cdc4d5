"""Train the 30-day readmission model the readmission workflow calls, on synthetic data, and lay it out for
MLServer's scikit-learn runtime (run with .venv-models' Python; no patient data is involved).

    python train_readmission.py MODELS_DIR

Writes ``MODELS_DIR/readmission-risk/{model.joblib,model-settings.json}``. The features, in order, are what
``ehrflow_inference.workflows.readmission`` sends: age in years, inpatient admissions in the last 12 months,
length of the index stay in days, active conditions, active medication requests. The outcome is drawn from a
fixed logistic model of them, so the trained model has known, plausible directions (each feature raises the
risk) and the same seed always gives the same model.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import joblib
import numpy as np
from sklearn.linear_model import LogisticRegression

NAME, VERSION = "readmission-risk", "1.0.0"


def train(models: Path) -> float:
    rng = np.random.default_rng(7)
    n = 5000
    features = np.column_stack(
        [
            rng.integers(18, 95, n),  # age
            rng.poisson(0.8, n),  # admissions in 12 months
            rng.gamma(2.0, 2.5, n),  # length of stay, days
            rng.integers(0, 12, n),  # active conditions
            rng.integers(0, 16, n),  # active medications
        ]
    ).astype(float)
    logit = -6.5 + 0.03 * features[:, 0] + 0.7 * features[:, 1] + 0.09 * features[:, 2]
    logit += 0.22 * features[:, 3] + 0.06 * features[:, 4]
    outcome = rng.random(n) < 1 / (1 + np.exp(-logit))
    model = LogisticRegression(max_iter=2000).fit(features, outcome)
    folder = models / NAME
    folder.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, folder / "model.joblib")
    settings = {
        "name": NAME,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": VERSION},
    }
    (folder / "model-settings.json").write_text(json.dumps(settings, indent=2))
    return float(model.score(features, outcome))


if __name__ == "__main__":
    print(f"trained {NAME} {VERSION}: accuracy {train(Path(sys.argv[1])):.3f} on its synthetic training set")
