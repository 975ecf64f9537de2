"""The infra check of the gate: the model loads and scores in a fresh Python process, and row order does not
change its output."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

import airloop
from airloop.store import tracking

INFRA_ROWS = 20
INFRA_TIMEOUT_S = 300

# Runs in a fresh interpreter: load the model as pyfunc (through the one loader, store/models.py), score rows,
# score them again shuffled.
_INFRA_SCRIPT = """
import json, sys, warnings
warnings.filterwarnings("ignore")
import numpy as np, pandas as pd
from airloop.store.models import load_pyfunc
model = load_pyfunc(sys.argv[1])
rows = pd.read_parquet(sys.argv[2])
pred = np.asarray(model.predict(rows)).tolist()
perm = np.random.default_rng(0).permutation(len(rows))
shuffled = np.asarray(model.predict(rows.iloc[perm].reset_index(drop=True))).tolist()
restored = [None] * len(rows)
for pos, src in enumerate(perm):
    restored[src] = shuffled[pos]
print("AIRLOOP_INFRA " + json.dumps({"n": len(rows), "predictions": pred, "restored": restored}))
"""


def _same(a: list, b: list) -> bool:
    """Equal predictions; numbers within float noise."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if isinstance(x, float | int) and isinstance(y, float | int):
            if not math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12):
                return False
        elif x != y:
            return False
    return True


def fresh_process_predictions(model_uri: str, rows: pd.DataFrame) -> dict[str, Any]:
    """Load ``model_uri`` with mlflow.pyfunc in a new interpreter (``sys.executable``) and score ``rows``
    in order and shuffled. Returns {"n", "predictions", "restored" (shuffled run, back in row order)};
    RuntimeError with the process's last lines when it cannot load or score."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking.configure_mlflow()}
    env["MLFLOW_REGISTRY_URI"] = env["MLFLOW_TRACKING_URI"]
    plugins = str(Path(airloop.__file__).resolve().parent.parent)  # the fresh interpreter imports airloop too
    env["PYTHONPATH"] = os.pathsep.join(p for p in (plugins, env.get("PYTHONPATH")) if p)
    with tempfile.TemporaryDirectory(prefix="airloop-infra-") as tmp:
        path = Path(tmp) / "rows.parquet"
        rows.reset_index(drop=True).to_parquet(path, index=False)
        try:
            proc = subprocess.run(
                [sys.executable, "-c", _INFRA_SCRIPT, model_uri, str(path)],
                capture_output=True,
                text=True,
                env=env,
                timeout=INFRA_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"loading and scoring took more than {INFRA_TIMEOUT_S} s") from None
    marker = [line for line in proc.stdout.splitlines() if line.startswith("AIRLOOP_INFRA ")]
    if proc.returncode != 0 or not marker:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"exit {proc.returncode}: {' | '.join(tail)}")
    return json.loads(marker[-1].removeprefix("AIRLOOP_INFRA "))


def infra_check(model_uri: str, rows: pd.DataFrame, expected: list) -> tuple[bool, str]:
    """The model loads and scores in a fresh process, row order does not change its output, and the output
    matches ``expected`` (the in-process predictions). Returns (passed, detail)."""
    try:
        out = fresh_process_predictions(model_uri, rows)
    except RuntimeError as err:
        return False, f"the model did not load or score in a fresh process ({err})"
    if not _same(out["predictions"], out["restored"]):
        return False, f"predictions on {out['n']} rows change when the rows are shuffled"
    if not _same(out["predictions"], [v.item() if hasattr(v, "item") else v for v in expected]):
        return False, "fresh-process predictions differ from the in-process predictions"
    return True, f"loads in a fresh process; {out['n']} rows scored identically in order and shuffled"
