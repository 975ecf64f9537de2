"""The numpy compiler of Airloop's sklearn preprocessing: :func:`compile_pipeline` takes a fitted pipeline,
its input columns and the task, and returns a :class:`CompiledPipeline` that scores parsed request columns
({column: values}) without pandas, or None when it cannot reproduce the pipeline exactly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from airloop.serving.spec import Column, to_frame

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NumericBlock:
    """The numeric columns of the preprocessing: missing values become the imputer's medians, then
    ``(x - mean) / scale``."""

    columns: list[str]
    medians: np.ndarray
    mean: np.ndarray
    scale: np.ndarray


@dataclass(frozen=True, slots=True)
class CategoryBlock:
    """One categorical column: its value's text looked up in ``index`` picks a row of ``rows`` (the one-hot
    columns the fitted step produced); ``missing_row`` and ``unseen_row`` are the rows of null and of a value
    not seen in training."""

    column: str
    index: dict[str, int]
    rows: np.ndarray
    missing_row: int
    unseen_row: int


class CompiledPipeline:
    """Airloop's fitted preprocessing (``airloop.model.candidates.build_pipeline``) as numpy lookups, in front of the
    fitted estimator: median imputation + scaling become two vector operations, and each categorical column's
    text-cast + impute + one-hot becomes a dict lookup into the rows the fitted step itself produced.

    A 1-row ``Pipeline.predict_proba`` spends milliseconds in pandas indexing and input validation; this path
    takes tens of microseconds plus the estimator. :func:`compile_pipeline` checks it against the real pipeline
    on probe rows (every category, missing and unseen values) and refuses anything it does not reproduce.
    """

    _UNSEEN = "\x00airloop-unseen\x00"

    def __init__(self, model: Any):
        if list(getattr(model, "named_steps", {})) != ["prep", "model"]:
            raise ValueError("not an Airloop pipeline (steps 'prep', 'model')")
        from sklearn.impute import SimpleImputer
        from sklearn.preprocessing import OneHotEncoder, StandardScaler

        prep, self.estimator = model.named_steps["prep"], model.named_steps["model"]
        self.blocks: list[NumericBlock | CategoryBlock] = []
        for name, trans, cols in prep.transformers_:
            cols = [str(c) for c in cols]
            if trans == "drop" or not cols:
                continue
            steps = [type(s) for _, s in getattr(trans, "steps", [])]
            if name == "num" and steps == [SimpleImputer, StandardScaler]:
                imputer, scaler = trans.steps[0][1], trans.steps[1][1]
                if imputer.add_indicator or len(imputer.statistics_) != len(cols):
                    raise ValueError("numeric imputer with indicator columns")
                mean = scaler.mean_ if scaler.with_mean else np.zeros(len(cols))
                scale = scaler.scale_ if scaler.with_std and scaler.scale_ is not None else np.ones(len(cols))
                self.blocks.append(NumericBlock(cols, np.asarray(imputer.statistics_, float), mean, scale))
            elif name == "cat" and steps and steps[-1] is OneHotEncoder:
                self.blocks.extend(self._lookups(trans, cols))
            else:
                raise ValueError(f"transformer {name!r} ({steps}) is not one the compiled path knows")

    def _lookups(self, trans: Any, cols: list[str]) -> list[CategoryBlock]:
        """One :class:`CategoryBlock` per column of a fitted categorical transformer, in its column order."""
        enc = trans.steps[-1][1]
        widths = list(enc._n_features_outs)
        offsets = np.cumsum([0, *widths])
        base = {c: str(enc.categories_[k][0]) for k, c in enumerate(cols)}
        out = []
        for j, col in enumerate(cols):
            values = [str(v) for v in enc.categories_[j]] + [None, self._UNSEEN]
            frame = pd.DataFrame({c: values if c == col else [base[c]] * len(values) for c in cols}, dtype=object)
            rows = trans.transform(frame)
            rows = rows.toarray() if hasattr(rows, "toarray") else np.asarray(rows)
            block = np.ascontiguousarray(rows[:, offsets[j] : offsets[j + 1]], dtype=float)
            index = {v: i for i, v in enumerate(values[:-2])}
            out.append(CategoryBlock(col, index, block, len(values) - 2, len(values) - 1))
        return out

    def transform(self, cols: dict[str, list]) -> np.ndarray:
        parts = []
        for block in self.blocks:
            if type(block) is NumericBlock:
                x = np.array([cols[n] for n in block.columns], dtype=float).T
                x = np.where(np.isnan(x), block.medians, x)
                parts.append((x - block.mean) / block.scale)
            else:
                get, missing, unseen = block.index.get, block.missing_row, block.unseen_row
                idx = [
                    missing if v is None else get(v if type(v) is str else str(v), unseen) for v in cols[block.column]
                ]
                parts.append(block.rows[idx])
        return np.hstack(parts) if len(parts) > 1 else parts[0]

    def predict_proba(self, cols: dict[str, list]) -> np.ndarray:
        return self.estimator.predict_proba(self.transform(cols))

    def predict(self, cols: dict[str, list]) -> np.ndarray:
        return self.estimator.predict(self.transform(cols))

    def probe_rows(self) -> dict[str, list]:
        """Rows covering every category, a missing and an unseen value per column, and missing numbers."""
        n = max([6] + [len(b.index) + 2 for b in self.blocks if type(b) is CategoryBlock])
        cols: dict[str, list] = {}
        for block in self.blocks:
            if type(block) is NumericBlock:
                for k, name in enumerate(block.columns):
                    center, spread = block.medians[k], block.scale[k]
                    cols[name] = [None if i % 5 == 3 else float(center + spread * (i - n / 2) / n) for i in range(n)]
            else:
                cats = [*block.index, None, "never-seen-in-training"]
                cols[block.column] = [cats[i % len(cats)] for i in range(n)]
        return cols


def compile_pipeline(model: Any, columns: list[Column], task: str) -> CompiledPipeline | None:
    """A :class:`CompiledPipeline` that reproduces ``model`` on probe rows (to 1e-9), else None (the server then
    calls the sklearn pipeline itself)."""
    try:
        compiled = CompiledPipeline(model)
        probe = compiled.probe_rows()
        names = [c.name for c in columns]
        if set(probe) != set(names):
            raise ValueError(f"preprocessing columns {sorted(probe)} differ from the input columns {sorted(names)}")
        frame = to_frame(probe, [c for c in columns])
        if task == "classification" and hasattr(model, "predict_proba"):
            same = np.allclose(compiled.predict_proba(probe), model.predict_proba(frame), rtol=0, atol=1e-9)
        else:
            same = np.allclose(compiled.predict(probe), model.predict(frame), rtol=0, atol=1e-9)
        if not same:
            raise ValueError("compiled predictions differ from the pipeline's on the probe rows")
        return compiled
    except Exception as err:  # noqa: BLE001 - any surprise means: use the real pipeline
        log.warning("compiled scoring path not used (%s); scoring with the sklearn pipeline", err)
        return None
