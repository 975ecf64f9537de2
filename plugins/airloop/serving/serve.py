"""Online serving: ``airloop serve NAME``, an HTTP JSON API in front of the champion (FastAPI + uvicorn).

``POST /invocations`` takes MLflow scoring-server bodies (``dataframe_split``, ``dataframe_records``,
``instances``/``inputs``) and answers ``{"predictions": [...], "probabilities": [...], "model_version": "3",
"prediction_ids": [...], "low_confidence": [...]}`` (``predictions`` is what MLflow's server returns, so
its clients work unchanged). ``GET /health`` and Prometheus-style ``GET /metrics`` complete the API.

How it stays fast and safe:

- the request path is lean: the body is parsed with ``json`` and checked against a column spec computed once
  per model version (from its MLflow signature and its preprocessing), never per request;
- concurrent requests are *micro-batched*: one coroutine drains the queue and scores every pending request in
  one ``predict_proba`` call, in a worker thread, while the event loop keeps accepting;
- a background thread polls the registry alias, loads a new version and swaps one reference: a batch in
  flight finishes on the model it started with, and no request is dropped;
- requests and responses go to the lake in batches from another thread (``serving/date=.../part-*.parquet``);
  low-confidence rows also go to the review queue (:mod:`airloop.serving.review`);
- in shadow mode the challenger scores the same rows after the champion answered; its output is logged only.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import json
import logging
import math
import os
import sys
import threading
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from airloop.config import PipelineConfig
from airloop.store import lake as lk
from airloop.store import models
from airloop.store.lake import Lake

log = logging.getLogger("airloop.serving.serve")

PAYLOAD_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
SERVING_ZONE = "serving"


class PayloadError(ValueError):
    """A request body that cannot be scored; ``status`` is the HTTP code, the message names the field."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{text[:60]}... ({type(value).__name__})" if len(text) > 60 else f"{text} ({type(value).__name__})"


# ------------------------------------------------------------------------------------------ the model spec


@dataclass(frozen=True)
class Column:
    """One input column: ``kind`` is "number", "string", "boolean" or "any"; ``required`` from the signature."""

    name: str
    kind: str
    required: bool = True


@dataclass
class LoadedModel:
    """A model version ready to serve: the estimator, its version and run, and its precomputed input spec."""

    model: Any
    version: str
    run_id: str
    columns: list[Column]
    classes: np.ndarray | None = None
    compiled: CompiledPipeline | None = None
    loaded_at: float = field(default_factory=time.time)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]


_SIGNATURE_KINDS = {
    "double": "number",
    "float": "number",
    "long": "number",
    "integer": "number",
    "string": "string",
    "boolean": "boolean",
}


def input_columns(model: Any, signature: Any | None) -> list[Column]:
    """The input columns of a model, in signature order: their kind from the signature, or (for columns the
    signature declares ``Any``) from the preprocessing step (numeric or categorical transformer)."""
    by_prep: dict[str, str] = {}
    prep = getattr(model, "named_steps", {}).get("prep")
    for name, _, cols in getattr(prep, "transformers_", None) or getattr(prep, "transformers", []):
        for col in cols if isinstance(cols, list | tuple) else []:
            by_prep[str(col)] = "number" if name == "num" else "any"
    if signature is not None and signature.inputs is not None and signature.inputs.has_input_names():
        out = []
        for spec in signature.inputs.inputs:
            kind = _SIGNATURE_KINDS.get(str(getattr(spec.type, "name", spec.type)).lower())
            out.append(Column(spec.name, kind or by_prep.get(spec.name, "any"), bool(getattr(spec, "required", True))))
        return out
    if by_prep:
        return [Column(n, k) for n, k in by_prep.items()]
    names = getattr(model, "feature_names_in_", None)
    if names is None:
        raise ValueError("the model has neither a signature with column names nor feature_names_in_")
    return [Column(str(n), "any") for n in names]


class CompiledPipeline:
    """Airloop's fitted preprocessing (``airloop.model.train.build_pipeline``) as numpy lookups, in front of the
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
        self.blocks: list[tuple] = []
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
                self.blocks.append(("num", cols, np.asarray(imputer.statistics_, float), mean, scale))
            elif name == "cat" and steps and steps[-1] is OneHotEncoder:
                self.blocks.append(("cat", cols, self._lookups(trans, cols)))
            else:
                raise ValueError(f"transformer {name!r} ({steps}) is not one the compiled path knows")

    def _lookups(self, trans: Any, cols: list[str]) -> list[tuple[dict, np.ndarray, int, int]]:
        """Per column: ({text: row}, one-hot rows, row of a missing value, row of an unseen value)."""
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
            out.append((index, block, len(values) - 2, len(values) - 1))
        return out

    def transform(self, cols: dict[str, list]) -> np.ndarray:
        parts = []
        for block in self.blocks:
            if block[0] == "num":
                _, names, stats, mean, scale = block
                x = np.array([cols[n] for n in names], dtype=float).T
                x = np.where(np.isnan(x), stats, x)
                parts.append((x - mean) / scale)
            else:
                for name, (index, rows, missing, unseen) in zip(block[1], block[2], strict=True):
                    get = index.get
                    idx = [missing if v is None else get(v if type(v) is str else str(v), unseen) for v in cols[name]]
                    parts.append(rows[idx])
        return np.hstack(parts) if len(parts) > 1 else parts[0]

    def predict_proba(self, cols: dict[str, list]) -> np.ndarray:
        return self.estimator.predict_proba(self.transform(cols))

    def predict(self, cols: dict[str, list]) -> np.ndarray:
        return self.estimator.predict(self.transform(cols))

    def probe_rows(self) -> dict[str, list]:
        """Rows covering every category, a missing and an unseen value per column, and missing numbers."""
        n = max([6] + [len(lk_[0]) + 2 for b in self.blocks if b[0] == "cat" for lk_ in b[2]])
        cols: dict[str, list] = {}
        for block in self.blocks:
            if block[0] == "num":
                for k, name in enumerate(block[1]):
                    center, spread = block[2][k], block[4][k]
                    cols[name] = [None if i % 5 == 3 else float(center + spread * (i - n / 2) / n) for i in range(n)]
            else:
                for name, (index, _, _, _) in zip(block[1], block[2], strict=True):
                    cats = [*index, None, "never-seen-in-training"]
                    cols[name] = [cats[i % len(cats)] for i in range(n)]
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


def load_version(cfg: PipelineConfig, version: str) -> LoadedModel:
    """Load ``models:/NAME/version`` (sklearn flavor) with its input spec."""
    import mlflow
    import mlflow.sklearn
    from mlflow.tracking import MlflowClient

    uri = models.version_uri(cfg, version)
    mv = MlflowClient().get_model_version(cfg.registered_model_name, str(version))
    model = models.load_uri(uri)
    signature = mlflow.models.get_model_info(uri).signature
    classes = getattr(model, "classes_", None) if cfg.task == "classification" else None
    columns = input_columns(model, signature)
    return LoadedModel(model, str(version), mv.run_id, columns, classes, compile_pipeline(model, columns, cfg.task))


# ---------------------------------------------------------------------------------------- payload parsing


def _check_rows(rows: Any, field_name: str, max_rows: int) -> list:
    if not isinstance(rows, list):
        raise PayloadError(f"field '{field_name}': expected a list of rows, found {_describe(rows)}")
    if not rows:
        raise PayloadError(f"field '{field_name}': expected at least one row, found an empty list")
    if len(rows) > max_rows:
        raise PayloadError(f"field '{field_name}': expected at most {max_rows} rows, found {len(rows)}", status=413)
    return rows


def _from_records(rows: list, field_name: str, names: list[str]) -> dict[str, list]:
    cols: dict[str, list] = {n: [] for n in names}
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise PayloadError(
                f"field '{field_name}[{i}]': expected an object of column: value, found {_describe(row)}"
            )
        for n in names:
            cols[n].append(row.get(n, _MISSING))
    return cols


def _from_lists(rows: list, columns: list, field_name: str, names: list[str]) -> dict[str, list]:
    width = len(columns)
    position = {str(c): j for j, c in enumerate(columns)}
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != width:
            raise PayloadError(
                f"field '{field_name}[{i}]': expected a list of {width} values (one per column), found {_describe(row)}"
            )
    out = {}
    for n in names:
        j = position.get(n)
        out[n] = [_MISSING] * len(rows) if j is None else [row[j] for row in rows]
    return out


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING = _Missing()


def parse_payload(body: bytes, spec: LoadedModel, max_rows: int) -> dict[str, list]:
    """A request body as {column: values} in the model's column order; raises PayloadError naming the field.

    Accepts ``dataframe_split`` ({"columns": [...], "data": [[...]]}), ``dataframe_records`` ([{...}]) and
    ``instances``/``inputs`` (a list of objects, or of lists in the model's column order). Extra columns are
    ignored, as MLflow does; a missing required column or a value of the wrong type is refused.
    """
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise PayloadError(f"body: expected a JSON object, found invalid JSON ({err})") from None
    if not isinstance(doc, dict):
        raise PayloadError(f"body: expected a JSON object with one of {list(PAYLOAD_KEYS)}, found {_describe(doc)}")
    keys = [k for k in PAYLOAD_KEYS if k in doc]
    unknown = [k for k in doc if k not in PAYLOAD_KEYS and k != "params"]
    if unknown or len(keys) != 1:
        found = f"keys {sorted(doc)}" if doc else "an empty object"
        raise PayloadError(f"body: expected exactly one of the fields {list(PAYLOAD_KEYS)}, found {found}")
    key = keys[0]
    names = spec.names
    if key == "dataframe_split":
        split = doc[key]
        if not isinstance(split, dict):
            raise PayloadError(
                f"field 'dataframe_split': expected an object with 'columns' and 'data', found {_describe(split)}"
            )
        columns = split.get("columns")
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise PayloadError(
                f"field 'dataframe_split.columns': expected a list of column names, found {_describe(columns)}"
            )
        rows = _check_rows(split.get("data"), "dataframe_split.data", max_rows)
        cols = _from_lists(rows, columns, "dataframe_split.data", names)
    else:
        rows = _check_rows(doc[key], key, max_rows)
        if isinstance(rows[0], list):
            cols = _from_lists(rows, names, key, names)
        else:
            cols = _from_records(rows, key, names)
    _check_columns(cols, spec, key)
    return cols


def _check_columns(cols: dict[str, list], spec: LoadedModel, field_name: str) -> None:
    """Refuse missing required columns and values of the wrong type, naming the column and the row."""
    missing = [c.name for c in spec.columns if c.required and any(v is _MISSING for v in cols[c.name])]
    if missing:
        raise PayloadError(
            f"field '{field_name}': missing required column(s) {missing}; expected columns {spec.names}", status=422
        )
    for c in spec.columns:
        values = cols[c.name]
        for i, v in enumerate(values):
            if v is None or v is _MISSING:
                values[i] = None
                continue
            t = type(v)
            if c.kind == "number":
                ok = (t is int or t is float) and not (t is float and math.isinf(v))
                expected = "a finite number or null"
            elif c.kind == "string":
                ok, expected = t is str, "a string or null"
            elif c.kind == "boolean":
                ok, expected = t is bool, "true, false or null"
            else:
                ok, expected = t in (str, int, float, bool), "a string, number, boolean or null"
            if not ok:
                raise PayloadError(
                    f"field '{field_name}', column '{c.name}' (row {i}): expected {expected}, found {_describe(v)}",
                    status=422,
                )


def to_frame(cols: dict[str, list], columns: list[Column]) -> pd.DataFrame:
    """The parsed columns as the frame the model was trained on (numbers as float64, NaN for null)."""
    data = {}
    for c in columns:
        values = cols[c.name]
        if c.kind == "number":
            data[c.name] = np.array([np.nan if v is None else v for v in values], dtype="float64")
        else:
            data[c.name] = pd.array(values, dtype=object)
    return pd.DataFrame(data)


# ------------------------------------------------------------------------------------------------- metrics


class Metrics:
    """Counters and a latency histogram, rendered in the Prometheus text format. Updated from the event loop
    and the batch thread; single integer additions under the GIL are enough for monitoring counters."""

    def __init__(self) -> None:
        self.requests: dict[str, int] = {}
        self.predictions = 0
        self.low_confidence = 0
        self.batches = 0
        self.batch_rows = 0
        self.swaps = 0
        self.shadow_rows = 0
        self.shadow_disagreements = 0
        self.logged_rows = 0
        self.log_errors = 0
        self.buckets = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self.latency_sum = 0.0

    def observe(self, status: int, seconds: float) -> None:
        key = str(status)
        self.requests[key] = self.requests.get(key, 0) + 1
        self.latency_sum += seconds
        for i, bound in enumerate(LATENCY_BUCKETS_S):
            if seconds <= bound:
                self.buckets[i] += 1
                return
        self.buckets[-1] += 1

    def render(self, server: ModelServer) -> str:
        p = server.cfg.name
        lines = [
            "# HELP airloop_requests_total Requests to /invocations by HTTP status.",
            "# TYPE airloop_requests_total counter",
            *(f'airloop_requests_total{{pipeline="{p}",status="{s}"}} {n}' for s, n in sorted(self.requests.items())),
            "# HELP airloop_request_seconds Latency of /invocations, from body received to response.",
            "# TYPE airloop_request_seconds histogram",
        ]
        total = 0
        for bound, n in zip(LATENCY_BUCKETS_S, self.buckets, strict=False):
            total += n
            lines.append(f'airloop_request_seconds_bucket{{pipeline="{p}",le="{bound}"}} {total}')
        total += self.buckets[-1]
        lines += [
            f'airloop_request_seconds_bucket{{pipeline="{p}",le="+Inf"}} {total}',
            f'airloop_request_seconds_sum{{pipeline="{p}"}} {self.latency_sum:.6f}',
            f'airloop_request_seconds_count{{pipeline="{p}"}} {total}',
        ]
        current = server.current
        counters = {
            "predictions_total": ("Rows scored by the champion.", self.predictions),
            "low_confidence_total": (
                "Rows below serving.low_confidence_threshold (sent to review).",
                self.low_confidence,
            ),
            "batches_total": ("Model calls (each scores one or more concurrent requests).", self.batches),
            "model_swaps_total": ("Times a new version was loaded after an alias change.", self.swaps),
            "shadow_predictions_total": ("Rows scored by the shadow challenger.", self.shadow_rows),
            "shadow_disagreements_total": (
                "Shadow rows whose prediction differs from the champion's.",
                self.shadow_disagreements,
            ),
            "logged_rows_total": ("Prediction rows written to the lake.", self.logged_rows),
            "log_errors_total": ("Failed writes of the request log (rows kept for the next try).", self.log_errors),
        }
        for name, (help_text, value) in counters.items():
            lines += [f"# HELP airloop_{name} {help_text}", f"# TYPE airloop_{name} counter"]
            lines.append(f'airloop_{name}{{pipeline="{p}"}} {value}')
        lines += [
            "# HELP airloop_model_version Version number of the model being served (0: none).",
            "# TYPE airloop_model_version gauge",
            f'airloop_model_version{{pipeline="{p}"}} {current.version if current else 0}',
            "# HELP airloop_log_queue_rows Prediction rows waiting to be written to the lake.",
            "# TYPE airloop_log_queue_rows gauge",
            f'airloop_log_queue_rows{{pipeline="{p}"}} {server.buffered_rows}',
        ]
        return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------------------- the server


@dataclass
class _Pending:
    cols: dict[str, list]
    rows: int
    future: asyncio.Future
    entity_ids: list | None = None


class ModelServer:
    """The serving state of one pipeline: the current model (swapped atomically), the micro-batcher, the
    alias poller and the lake logger. :func:`create_app` wraps it in FastAPI."""

    def __init__(self, cfg: PipelineConfig, *, lake: Lake | None = None, log_requests: bool = True):
        self.cfg = cfg
        self.lake = lake or Lake(cfg.name)
        self.log_requests = log_requests
        self.current: LoadedModel | None = None
        self.shadow: LoadedModel | None = None
        self.metrics = Metrics()
        self.log_buffer: deque[dict] = deque()  # column chunks, one per scored batch
        self.buffered_rows = 0
        self.threshold = cfg.serving.low_confidence_threshold
        self._queue: asyncio.Queue[_Pending] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="airloop-predict")
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._batcher: asyncio.Task | None = None
        self._ids = _IdMaker(cfg.name)

    # --- model versions -------------------------------------------------------------------------------

    def refresh(self) -> bool:
        """Load the version the alias ``champion`` points at (and the challenger, in shadow mode) if it
        changed; returns True when the champion was swapped. Errors leave the current model serving."""
        from airloop.store import registry, tracking

        tracking.configure_mlflow()
        swapped = False
        mv = registry.get_version(self.cfg, registry.CHAMPION)
        if mv is not None and (self.current is None or self.current.version != str(mv.version)):
            loaded = load_version(self.cfg, str(mv.version))
            previous, self.current = self.current, loaded  # one reference assignment: atomic
            self.metrics.swaps += previous is not None
            swapped = True
            log.info(
                "serving %s v%s (was %s)", self.cfg.registered_model_name, loaded.version, previous and previous.version
            )
        if self.cfg.serving.shadow:
            ch = registry.get_version(self.cfg, registry.CHALLENGER)
            if ch is None:
                self.shadow = None
            elif self.shadow is None or self.shadow.version != str(ch.version):
                self.shadow = load_version(self.cfg, str(ch.version))
                log.info("shadow: challenger v%s", self.shadow.version)
        return swapped

    def _poll(self) -> None:
        while not self._stop.wait(self.cfg.serving.poll_interval_s):
            try:
                self.refresh()
            except Exception:  # the registry may be briefly unreachable: keep serving, try again later
                log.exception("alias poll failed; still serving v%s", self.current and self.current.version)

    # --- scoring ---------------------------------------------------------------------------------------

    def predict_rows(
        self, spec: LoadedModel, cols: dict[str, list]
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(predictions, probability of the predicted class, probability of the positive class) for parsed
        columns: through the compiled path when the model has one, else through the sklearn pipeline."""
        model = spec.compiled
        data: Any = cols
        if model is None:
            model, data = spec.model, to_frame(cols, spec.columns)
        if spec.classes is not None and hasattr(model, "predict_proba"):
            proba = np.asarray(model.predict_proba(data))
            best = proba.argmax(axis=1)
            score = proba[:, 1] if proba.shape[1] == 2 else None
            return spec.classes[best], proba[np.arange(len(best)), best], score
        return np.asarray(model.predict(data)), None, None

    def _score_batch(self, spec: LoadedModel, items: list[_Pending]) -> tuple[list[dict], tuple]:
        """Score every pending request in one model call; returns (one response per request, what
        :meth:`_after` needs to log the batch once the responses are out)."""
        if len(items) == 1:
            cols = items[0].cols
        else:
            cols = {n: [v for it in items for v in it.cols[n]] for n in spec.names}
        pred, prob, score = self.predict_rows(spec, cols)
        n = len(pred)
        self.metrics.batches += 1
        self.metrics.batch_rows += n
        self.metrics.predictions += n
        pred_list = pred.tolist()
        prob_list = prob.tolist() if prob is not None else [None] * n
        low = [p is not None and self.threshold is not None and p < self.threshold for p in prob_list]
        self.metrics.low_confidence += sum(low)
        ids = self._ids.make(n)
        out, start = [], 0
        for it in items:
            end = start + it.rows
            out.append(
                {
                    "predictions": pred_list[start:end],
                    "probabilities": prob_list[start:end],
                    "model_version": spec.version,
                    "prediction_ids": ids[start:end],
                    "low_confidence": low[start:end],
                }
            )
            start = end
        entity = [e for it in items for e in (it.entity_ids or [None] * it.rows)]
        return out, (spec, cols, ids, pred_list, prob_list, score, low, entity)

    def _after(self, spec, cols, ids, pred, prob, score, low, entity) -> None:
        """After the answers: the shadow challenger's predictions, and the log rows (flushed by another thread)."""
        shadow = self.shadow
        s_pred = s_prob = None
        if shadow is not None and set(shadow.names) <= set(cols):
            try:
                sp, sprob, _ = self.predict_rows(shadow, cols)
                s_pred, s_prob = sp.tolist(), (sprob.tolist() if sprob is not None else None)
                self.metrics.shadow_rows += len(s_pred)
                self.metrics.shadow_disagreements += sum(a != b for a, b in zip(pred, s_pred, strict=True))
            except Exception:  # a broken challenger must never hurt the champion's answers
                log.exception("shadow challenger v%s failed", shadow.version)
        if not self.log_requests:
            return
        n = len(ids)
        nothing = [None] * n
        chunk = {  # columns, not rows: cheap here; the flush thread turns them into Parquet
            "prediction_id": ids,
            "served_at": [dt.datetime.now(dt.UTC).isoformat()] * n,
            "model_version": [spec.version] * n,
            "model_run_id": [spec.run_id] * n,
            "prediction": pred,
            "probability": prob,
            "score": nothing if score is None else score.tolist(),
            "low_confidence": low,
            "entity_id": [None if e is None else str(e) for e in entity],
            "shadow_version": nothing if s_pred is None else [shadow.version] * n,
            "shadow_prediction": nothing if s_pred is None else s_pred,
            "shadow_probability": nothing if s_prob is None else s_prob,
            "_inputs": (spec.names, cols),
        }
        self.log_buffer.append(chunk)
        self.buffered_rows += n

    async def _batch_loop(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        limit = self.cfg.serving.max_batch_rows
        while True:
            first = await self._queue.get()
            items, rows = [first], first.rows
            while rows < limit and not self._queue.empty():
                nxt = self._queue.get_nowait()
                items.append(nxt)
                rows += nxt.rows
            spec = self.current  # captured once: a swap during this batch cannot mix versions
            try:
                if spec.compiled is not None:  # well under a millisecond: no thread hop
                    results, after = self._score_batch(spec, items)
                else:  # the sklearn pipeline takes milliseconds: keep the loop accepting meanwhile
                    results, after = await loop.run_in_executor(self._executor, self._score_batch, spec, items)
            except Exception as err:  # noqa: BLE001 - every waiting request gets the error
                for it in items:
                    if not it.future.done():
                        it.future.set_exception(err)
                continue
            for it, res in zip(items, results, strict=True):
                if not it.future.done():
                    it.future.set_result(res)
            if self.log_requests or self.shadow is not None:
                await asyncio.sleep(0)  # let the handlers send their responses first
                try:
                    self._after(*after)
                except Exception:  # logging must never take the server down
                    log.exception("could not record a batch of %d predictions", len(after[2]))

    async def invoke(self, body: bytes) -> dict:
        """Parse, queue and await one request's predictions; raises PayloadError for a bad payload."""
        spec = self.current
        if spec is None:
            raise PayloadError(
                f"model {self.cfg.registered_model_name!r}: no version has the alias 'champion' yet", 503
            )
        cols = parse_payload(body, spec, self.cfg.serving.max_request_rows)
        rows = len(next(iter(cols.values())))
        entity = None
        if self.cfg.id_column and self.log_requests:
            entity = _entity_ids(body, self.cfg.id_column, rows)
        future = asyncio.get_running_loop().create_future()
        assert self._queue is not None
        self._queue.put_nowait(_Pending(cols, rows, future, entity))
        return await future

    # --- the request log -------------------------------------------------------------------------------

    def flush(self) -> int:
        """Write buffered prediction rows to the lake (and low-confidence ones to the review queue);
        returns the number of rows written. Rows stay buffered if the write fails."""
        import pyarrow as pa

        from airloop.serving import review

        chunks = []
        while self.log_buffer:
            chunks.append(self.log_buffer.popleft())
        if not chunks:
            return 0
        columns = {k: [v for c in chunks for v in c[k]] for k in chunks[0] if k != "_inputs"}
        columns["features"] = [
            json.dumps({name: cols[name][i] for name in names})
            for c in chunks
            for names, cols in [c["_inputs"]]
            for i in range(len(c["prediction_id"]))
        ]
        rows = len(columns["prediction_id"])
        try:
            table = pa.table(columns)
            write_serving_log(self.lake, table)
            if any(columns["low_confidence"]):
                low = table.filter(pa.array(columns["low_confidence"])).to_pandas()
                review.enqueue(self.cfg, self.lake, low)
        except Exception:
            self.metrics.log_errors += 1
            self.log_buffer.extendleft(reversed(chunks))
            log.exception("could not write %d prediction rows to the lake; kept for the next try", rows)
            return 0
        self.buffered_rows -= rows
        self.metrics.logged_rows += rows
        return rows

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.cfg.serving.log_flush_s):
            self.flush()

    # --- lifecycle -------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the champion (absent is allowed: /health says so), start the batcher and the threads."""
        try:
            await asyncio.get_running_loop().run_in_executor(None, self.refresh)
        except Exception:
            log.exception("could not load the champion of %s at start-up", self.cfg.name)
        # Long-lived objects (mlflow, sklearn, the model) out of the collector's reach, and short GIL
        # slices for the background threads: both keep pauses out of the request latency tail.
        gc.collect()
        gc.freeze()
        sys.setswitchinterval(0.0005)
        self._queue = asyncio.Queue()
        self._batcher = asyncio.create_task(self._batch_loop())
        self._stop.clear()
        for target, name in ((self._poll, "airloop-alias-poll"), (self._flush_loop, "airloop-lake-log")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    async def stop(self) -> None:
        """Stop the threads and write what is still buffered."""
        self._stop.set()
        if self._batcher:
            self._batcher.cancel()
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads.clear()
        self._executor.shutdown(wait=True)
        if self.log_requests:
            self.flush()


def _entity_ids(body: bytes, id_column: str, rows: int) -> list | None:
    """The id column's values if the client sent it (used to join delayed labels to served predictions)."""
    if id_column.encode() not in body:
        return None
    doc = json.loads(body)
    if "dataframe_split" in doc:
        cols = doc["dataframe_split"].get("columns", [])
        if id_column not in cols:
            return None
        j = cols.index(id_column)
        return [row[j] for row in doc["dataframe_split"]["data"]]
    rows_in = doc.get("dataframe_records") or doc.get("instances") or doc.get("inputs") or []
    return [r.get(id_column) if isinstance(r, dict) else None for r in rows_in]


class _IdMaker:
    """Prediction ids ``{pipeline}:serve-{YYYY-MM-DD}:{hex}``: unique, and the date says where the log is."""

    def __init__(self, pipeline: str):
        self.pipeline = pipeline

    def make(self, n: int) -> list[str]:
        prefix = f"{self.pipeline}:serve-{dt.datetime.now(dt.UTC).date().isoformat()}:"
        return [prefix + uuid.uuid4().hex[:16] for _ in range(n)]


def write_serving_log(lake: Lake, table: Any) -> str:
    """Append served predictions (a pyarrow Table or a DataFrame) to
    ``serving/date=<day>/part-<time>-<uid>.parquet``; returns the URI."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    day = str(table.column("served_at")[0])[:10]
    name = f"part-{dt.datetime.now(dt.UTC).strftime('%H%M%S%f')}-{uuid.uuid4().hex[:8]}.parquet"
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return lk.write_bytes(lk.join(lake.partition(SERVING_ZONE, day), name), buf.getvalue())


def read_serving_log(lake: Lake, days: list[str] | None = None) -> pd.DataFrame:
    """Served predictions of the given days (default: all), oldest file first; empty frame when none."""
    days = days if days is not None else lake.batches(SERVING_ZONE)
    frames = [lk.read_parquet(u) for d in days for u in lk.list_uris(lake.partition(SERVING_ZONE, d))]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# ------------------------------------------------------------------------------------------- the HTTP app


def create_app(cfg: PipelineConfig, *, lake: Lake | None = None, log_requests: bool = True):
    """The FastAPI app serving ``cfg``'s champion; ``app.state.server`` is its :class:`ModelServer`."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, PlainTextResponse, Response

    server = ModelServer(cfg, lake=lake, log_requests=log_requests)

    @asynccontextmanager
    async def lifespan(app):
        await server.start()
        try:
            yield
        finally:
            await server.stop()

    app = FastAPI(title=f"Airloop: {cfg.name}", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.server = server

    @app.post("/invocations")
    async def invocations() -> Response:  # documented here; requests are answered by _Invocations below
        raise AssertionError("POST /invocations is served by the ASGI fast path")

    @app.get("/health")
    async def health() -> Response:
        cur = server.current
        doc = {
            "status": "ok" if cur else "no_model",
            "pipeline": cfg.name,
            "model": cfg.registered_model_name,
            "model_version": cur.version if cur else None,
            "model_run_id": cur.run_id if cur else None,
            "scoring_path": None if cur is None else ("compiled" if cur.compiled is not None else "sklearn"),
            "shadow_version": server.shadow.version if server.shadow else None,
            "log_queue_rows": server.buffered_rows,
        }
        return JSONResponse(doc, status_code=200 if cur else 503)

    @app.get("/ping")
    async def ping() -> Response:  # MLflow's scoring server answers /ping; keep its health checks working
        return await health()

    @app.get("/version")
    async def version() -> Response:
        cur = server.current
        return JSONResponse({"model": cfg.registered_model_name, "model_version": cur.version if cur else None})

    @app.get("/metrics")
    async def metrics() -> Response:
        return PlainTextResponse(server.metrics.render(server), media_type="text/plain; version=0.0.4")

    return _Invocations(app, server)


_JSON_HEADERS = [(b"content-type", b"application/json")]
_ERROR_CODES = {413: "RESOURCE_LIMIT_EXCEEDED", 503: "SERVICE_UNAVAILABLE", 500: "INTERNAL_ERROR"}


class _Invocations:
    """ASGI front of the FastAPI app: ``POST /invocations`` is answered here directly (no routing,
    dependency solving or response classes on the hot path); everything else, lifespan included, goes to
    FastAPI. ``state`` and ``server`` are the app's state and its :class:`ModelServer`."""

    def __init__(self, app: Any, server: ModelServer):
        self.app, self.server, self.state = app, server, app.state

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/invocations" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        server = self.server
        status, doc = 200, None
        ctype = next((v for k, v in scope["headers"] if k == b"content-type"), b"application/json")
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if not ctype.startswith(b"application/json"):
            status, message_text = 415, f"header 'Content-Type': expected application/json, found {ctype.decode()!r}"
        else:
            try:
                doc = await server.invoke(body)
            except PayloadError as err:
                status, message_text = err.status, str(err)
            except Exception as err:  # the model itself failed on valid-looking input
                log.exception("prediction failed")
                status, message_text = 500, str(err)
        if status != 200:
            doc = {"error_code": _ERROR_CODES.get(status, "BAD_REQUEST"), "message": message_text}
        payload = json.dumps(doc).encode()
        server.metrics.observe(status, time.perf_counter() - started)
        headers = [*_JSON_HEADERS, (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


def app_from_env():
    """App factory for ``uvicorn --factory`` with several workers: the pipeline comes from AIRLOOP_SERVE_PIPELINE."""
    from airloop.config import get_pipeline

    return create_app(get_pipeline(os.environ["AIRLOOP_SERVE_PIPELINE"]))


def run(
    cfg: PipelineConfig, *, host: str = "127.0.0.1", port: int = 5001, workers: int = 1, log_level: str = "warning"
) -> None:
    """Serve until interrupted (``airloop serve``). Several workers each load the model and poll the alias."""
    import uvicorn

    opts = {
        "host": host,
        "port": port,
        "log_level": log_level,
        "access_log": False,
        "loop": "uvloop",
        "http": "httptools",
    }
    if workers > 1:
        os.environ["AIRLOOP_SERVE_PIPELINE"] = cfg.name
        uvicorn.run("airloop.serving.serve:app_from_env", factory=True, workers=workers, **opts)
    else:
        uvicorn.run(create_app(cfg), **opts)


# ------------------------------------------------------------------------------------------ shadow report


def shadow_report(cfg: PipelineConfig, *, lake: Lake | None = None, days: list[str] | None = None) -> dict:
    """Compare the shadow challenger with the champion on the rows both scored (from the serving log).

    Returns {"rows", "champion_versions", "shadow_versions", "agreement", "mean_abs_probability_diff",
    "prediction_counts", "live" (per side, once delayed labels arrive), "uri"} and writes it as JSON and HTML
    to ``reports/shadow/``. ``rows`` is 0 when nothing was served in shadow mode.
    """
    lake = lake or Lake(cfg.name)
    served = read_serving_log(lake, days)
    both = served[served["shadow_prediction"].notna()] if "shadow_prediction" in served.columns else served.iloc[0:0]
    doc: dict[str, Any] = {"pipeline": cfg.name, "rows": len(both), "generated_at": dt.datetime.now(dt.UTC).isoformat()}
    if both.empty:
        doc["summary"] = f"{cfg.name}: no prediction was served in shadow mode yet"
        return doc
    champ, shadow = both["prediction"].astype(str), both["shadow_prediction"].astype(str)
    doc.update(
        {
            "champion_versions": sorted(both["model_version"].astype(str).unique()),
            "shadow_versions": sorted(both["shadow_version"].astype(str).unique()),
            "agreement": round(float((champ == shadow).mean()), 4),
            "prediction_counts": {
                "champion": champ.value_counts().to_dict(),
                "shadow": shadow.value_counts().to_dict(),
            },
        }
    )
    if both["probability"].notna().any() and both["shadow_probability"].notna().any():
        doc["mean_abs_probability_diff"] = round(
            float((both["probability"] - both["shadow_probability"]).abs().mean()), 4
        )
    doc["live"] = _shadow_live(cfg, lake, both)
    doc["summary"] = (
        f"{cfg.name}: shadow v{','.join(doc['shadow_versions'])} vs champion v{','.join(doc['champion_versions'])} "
        f"on {len(both)} served rows: agreement {doc['agreement']:.1%}"
        + (
            f", mean |Δprobability| {doc['mean_abs_probability_diff']:.4f}"
            if "mean_abs_probability_diff" in doc
            else ""
        )
    )
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    doc["uri"] = lk.write_json(lake.report("shadow", f"{stamp}.json"), doc)
    rows = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in doc.items() if k not in ("uri",))
    lk.write_bytes(
        lake.report("shadow", f"{stamp}.html"),
        f"<html><body><h1>Shadow report</h1><table>{rows}</table></body></html>".encode(),
    )
    return doc


def _shadow_live(cfg: PipelineConfig, lake: Lake, both: pd.DataFrame) -> dict:
    """Accuracy of each side on served rows whose delayed label arrived (joined on the client's id)."""
    if not cfg.id_column or "entity_id" not in both.columns or both["entity_id"].isna().all():
        return {}
    labels = lake.read_zone("labels")
    if labels.empty or cfg.id_column not in labels.columns:
        return {}
    truth = labels.drop_duplicates(cfg.id_column, keep="last").set_index(cfg.id_column)[cfg.target].astype(str)
    y = both["entity_id"].map(truth)
    known = y.notna()
    if not known.any():
        return {}
    return {
        "rows": int(known.sum()),
        "champion_accuracy": round(float((both["prediction"].astype(str)[known] == y[known]).mean()), 4),
        "shadow_accuracy": round(float((both["shadow_prediction"].astype(str)[known] == y[known]).mean()), 4),
    }
