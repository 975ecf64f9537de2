"""NannyML's CBPE on the data bench_estimate.py wrote (run by it in an isolated environment, see its docstring).

Usage: python bench/nannyml_cbpe.py DIR ROWS_PER_BATCH; reads DIR/reference.parquet and DIR/analysis.parquet,
writes DIR/nannyml.json: {"version", "seconds" (fit + estimate), "estimates" (ROC-AUC per batch)}.
"""

from __future__ import annotations

import json
import sys
import time
import warnings

import pandas as pd


def main(folder: str, rows: int) -> None:
    import nannyml as nml

    reference = pd.read_parquet(f"{folder}/reference.parquet")
    analysis = pd.read_parquet(f"{folder}/analysis.parquet").drop(columns=["chunk"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        estimator = nml.CBPE(
            y_pred_proba="y_pred_proba",
            y_pred="y_pred",
            y_true="y_true",
            problem_type="classification_binary",
            metrics=["roc_auc"],
            chunk_size=rows,
        )
        estimator.fit(reference)
        result = estimator.estimate(analysis).filter(period="analysis").to_df()
        seconds = time.perf_counter() - t0
    estimates = result[("roc_auc", "value")].astype(float).tolist()
    doc = {
        "version": nml.__version__,
        "seconds": seconds,
        "estimates": estimates,
        "calibrated": bool(estimator.needs_calibration),
    }
    with open(f"{folder}/nannyml.json", "w") as out:
        json.dump(doc, out)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
