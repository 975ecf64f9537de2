"""The infra check of the gate: the model loads and scores in a fresh Python process, and row order does not
change its output."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
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


class FreshProcessCheck:
    """The infra check started in a new interpreter (``sys.executable``): it loads ``model_uri`` with
    mlflow.pyfunc and scores ``rows`` in order and shuffled, while the caller goes on with other work (the gate
    starts it as soon as the challenger has scored, and reads it after its statistics). :meth:`result` waits for
    it; :meth:`cancel` ends it when the caller gives up."""

    def __init__(self, model_uri: str, rows: pd.DataFrame, expected: list):
        self.expected = [v.item() if hasattr(v, "item") else v for v in expected]
        env = {**os.environ, "MLFLOW_TRACKING_URI": tracking.configure_mlflow()}
        env["MLFLOW_REGISTRY_URI"] = env["MLFLOW_TRACKING_URI"]
        plugins = str(Path(airloop.__file__).resolve().parent.parent)  # the fresh interpreter imports airloop too
        env["PYTHONPATH"] = os.pathsep.join(p for p in (plugins, env.get("PYTHONPATH")) if p)
        self._tmp = tempfile.TemporaryDirectory(prefix="airloop-infra-")
        path = Path(self._tmp.name) / "rows.parquet"
        rows.reset_index(drop=True).to_parquet(path, index=False)
        self._deadline = time.monotonic() + INFRA_TIMEOUT_S
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _INFRA_SCRIPT, model_uri, str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

    def predictions(self) -> dict[str, Any]:
        """{"n", "predictions", "restored" (shuffled run, back in row order)}; RuntimeError with the process's
        last lines when it cannot load or score, or took more than INFRA_TIMEOUT_S."""
        try:
            stdout, stderr = self._proc.communicate(timeout=max(self._deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            self.cancel()
            raise RuntimeError(f"loading and scoring took more than {INFRA_TIMEOUT_S} s") from None
        finally:
            self._tmp.cleanup()
        marker = [line for line in stdout.splitlines() if line.startswith("AIRLOOP_INFRA ")]
        if self._proc.returncode != 0 or not marker:
            tail = (stderr or stdout).strip().splitlines()[-3:]
            raise RuntimeError(f"exit {self._proc.returncode}: {' | '.join(tail)}")
        return json.loads(marker[-1].removeprefix("AIRLOOP_INFRA "))

    def result(self) -> tuple[bool, str]:
        """(passed, detail) of the check (see :func:`infra_check`)."""
        try:
            out = self.predictions()
        except RuntimeError as err:
            return False, f"the model did not load or score in a fresh process ({err})"
        return judge(out, self.expected)

    def cancel(self) -> None:
        """End the process if it still runs, and remove its files."""
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.communicate()
        self._tmp.cleanup()


def start_check(model_uri: str, rows: pd.DataFrame, expected: list) -> FreshProcessCheck:
    """Start the infra check of ``model_uri`` on ``rows`` (``expected``: the in-process predictions); read it
    with ``.result()``."""
    return FreshProcessCheck(model_uri, rows, expected)


def fresh_process_predictions(model_uri: str, rows: pd.DataFrame) -> dict[str, Any]:
    """Load ``model_uri`` with mlflow.pyfunc in a new interpreter and score ``rows`` in order and shuffled,
    waiting for it. Returns {"n", "predictions", "restored"}; RuntimeError when it cannot load or score."""
    return FreshProcessCheck(model_uri, rows, []).predictions()


def judge(out: dict[str, Any], expected: list) -> tuple[bool, str]:
    """(passed, detail): the fresh process's output ``out`` is the same in order and shuffled, and matches
    ``expected``."""
    if not _same(out["predictions"], out["restored"]):
        return False, f"predictions on {out['n']} rows change when the rows are shuffled"
    if not _same(out["predictions"], [v.item() if hasattr(v, "item") else v for v in expected]):
        return False, "fresh-process predictions differ from the in-process predictions"
    return True, f"loads in a fresh process; {out['n']} rows scored identically in order and shuffled"


def infra_check(model_uri: str, rows: pd.DataFrame, expected: list) -> tuple[bool, str]:
    """The model loads and scores in a fresh process, row order does not change its output, and the output
    matches ``expected`` (the in-process predictions). Returns (passed, detail)."""
    try:
        out = fresh_process_predictions(model_uri, rows)
    except RuntimeError as err:
        return False, f"the model did not load or score in a fresh process ({err})"
    return judge(out, expected)
