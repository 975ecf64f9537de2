"""``airloop trace PREDICTION_ID``: the chain behind one prediction, from the answer back to its data.

prediction (batch-scored ``{pipeline}:{batch}:{id}`` or served ``{pipeline}:serve-{day}:{hex}``)
  → model version (registry tags: who promoted it, when, why, what it replaced)
  → training run (candidate, metrics, gate verdict, git sha, uv.lock hash, the Airflow run that trained it)
  → training data (the frozen split, its fingerprint, and every batch in it)
  → each batch's manifest (source files with sha256, ingest and validation runs, validation verdict, Data Docs)
  → the DAG runs met along the way;
and, on request (the default of ``airloop trace``), the prediction's top SHAP contributions, computed now by
:mod:`airloop.model.explain` against the version that served it (its artifact in the tracking store, its
training run's reference rows in the lake: nothing is fetched from anywhere else).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from airloop.config import PipelineConfig
from airloop.errors import BadInput, NothingToDo
from airloop.store import lake as lk
from airloop.store.lake import Lake
from airloop.values import plain

SCHEMA_VERSION = 1


class TraceError(BadInput):
    """A prediction id that cannot be traced as written; the message says what was expected."""


class PredictionNotFound(NothingToDo):
    """The prediction id is well formed but no record of it exists (yet) in the lake."""


def parse_prediction_id(prediction_id: str) -> tuple[str, str, str]:
    """(pipeline, source, key): source is a batch date (batch scoring) or ``serve-<day>`` (online serving)."""
    parts = prediction_id.split(":", 2)
    if len(parts) != 3 or not all(parts):
        raise TraceError(
            f"prediction id {prediction_id!r}: expected PIPELINE:BATCH:ID (batch scoring, e.g. "
            "churn:2026-01-05:C0004211) or PIPELINE:serve-DAY:HEX (online serving)"
        )
    pipeline, source, key = parts
    day = source.removeprefix("serve-")
    try:
        lk.check_batch_id(day)
    except BadInput:
        raise TraceError(
            f"prediction id {prediction_id!r}: the middle part {source!r} should be a batch date "
            "(YYYY-MM-DD) or serve-YYYY-MM-DD"
        ) from None
    return pipeline, source, key


def find_prediction(lake: Lake, prediction_id: str) -> dict:
    """The lake record of one prediction (from ``predictions/`` or the serving log); PredictionNotFound if absent."""
    _, source, _ = parse_prediction_id(prediction_id)
    if source.startswith("serve-"):
        from airloop.serving.servinglog import SERVING_ZONE

        uris = lk.list_uris(lake.partition(SERVING_ZONE, source.removeprefix("serve-")))
        where = f"the serving log of {source.removeprefix('serve-')}"
    else:
        uris = lake.prediction_parts(source)
        where = f"the predictions of batch {source}"
    found = []
    for uri in uris:
        ids = lk.read_parquet(uri, columns=["prediction_id"])["prediction_id"]
        hit = ids.index[ids == prediction_id]
        if len(hit):
            row = lk.read_parquet(uri).iloc[hit[0]]
            record = {k: _json_value(v) for k, v in row.items()}
            record["log_uri"] = uri
            found.append(record)
    if found:
        # A batch scored again by a later champion keeps its first answer: the prediction that was served.
        found.sort(key=lambda r: str(r.get("scored_at") or ""))
        first = found[0]
        if len(found) > 1:
            first["rescored_by"] = [
                {"model_version": r.get("model_version"), "log_uri": r["log_uri"]} for r in found[1:]
            ]
        return first
    raise PredictionNotFound(
        f"prediction {prediction_id!r} is not in {where} under {lake.root} "
        "(served predictions reach the lake within serving.log_flush_s seconds)"
    )


def _json_value(value: Any) -> Any:
    """A lake value as JSON: plain Python (a list column, such as ``prediction_set``, as a list), NaN as null."""
    if hasattr(value, "tolist") and getattr(value, "ndim", 0) == 1:
        return [_json_value(v) for v in value.tolist()]
    value = plain(value)
    return None if isinstance(value, float) and value != value else value


def training_batches(split_uris: list[str]) -> list[str]:
    """The batch ids (``_batch_id``) of the rows in a frozen train/test split, sorted."""
    from airloop.store.lake import BATCH_COLUMN

    found: set[str] = set()
    for uri in split_uris:
        if uri and lk.exists(uri):
            frame = lk.read_parquet(uri)
            if BATCH_COLUMN in frame.columns:
                found.update(map(str, frame[BATCH_COLUMN].dropna().unique()))
    return sorted(found)


def batch_record(lake: Lake, batch_id: str) -> dict:
    """A batch's manifest, reduced to what a trace shows: sources and their sha256, runs, validation verdict."""
    if batch_id.startswith("review:"):
        return {"batch_id": batch_id, "kind": "reviewed labels from the review queue", "manifest_uri": None}
    uri = lake.manifest(batch_id)
    if not lk.exists(uri):
        return {"batch_id": batch_id, "manifest_uri": None, "note": "no manifest in the lake"}
    m = lk.read_json(uri)
    validation = m.get("validation") or {}
    return {
        "batch_id": batch_id,
        "manifest_uri": uri,
        "rows": m.get("rows"),
        "sources": [{k: s.get(k) for k in ("uri", "sha256", "rows")} for s in m.get("sources", [])],
        "ingest_run": m.get("run") or {},
        "validation": {
            "verdict": validation.get("verdict"),
            "suite": validation.get("suite"),
            "critical": len(validation.get("critical") or []),
            "warnings": len(validation.get("warnings") or []),
            "data_docs": validation.get("data_docs"),
            "run": validation.get("run_info") or {},
        },
    }


def _dag_run(info: dict | None, role: str) -> dict | None:
    if not info or not info.get("dag_id"):
        return None
    return {"role": role, "dag_id": info["dag_id"], "run_id": info.get("run_id")}


def prediction_features(cfg: PipelineConfig, lake: Lake, record: dict) -> pd.DataFrame:
    """The one raw row the model scored for ``record``: the features logged with a served prediction, or the
    row of the validated batch a batch-scored prediction id points at. BadInput when it is not in the lake."""
    import json

    if record.get("features"):
        row = pd.DataFrame([json.loads(record["features"])])
        for col in row.columns:  # a null sent for a numeric column: NaN, as the model was trained on
            if row[col].isna().all():
                row[col] = float("nan")
        return row
    from airloop.serving.score import prediction_ids

    batch = str(record.get(lk.BATCH_COLUMN) or "")
    uri = lake.part("validated", batch) if batch else ""
    if not uri or not lk.exists(uri):
        raise BadInput(f"prediction {record['prediction_id']!r}: its batch {batch!r} has no validated rows in the lake")
    frame = lk.read_parquet(uri)
    hit = frame[(prediction_ids(cfg, frame, batch) == record["prediction_id"]).to_numpy()]
    if hit.empty:
        raise BadInput(f"prediction {record['prediction_id']!r}: no row of {uri} has this prediction id")
    return hit.head(1).reset_index(drop=True)


def explain_prediction(cfg: PipelineConfig, lake: Lake, record: dict, run_tags: dict, top: int = 5) -> dict:
    """The top SHAP contributions of one traced prediction, against the version that made it:
    {"explainer", "expected_value", "contributions": [{"feature", "value", "contribution"}]}, or {"error": why}
    (an explanation that cannot be made never hides the rest of the trace)."""
    from airloop.model.explain import explainer_for_run, top_contributions
    from airloop.store import models

    try:
        model = models.load_version(cfg, str(record["model_version"]))
        explainer = explainer_for_run(model, run_tags, seed=cfg.training.seed)
        (row,) = top_contributions(explainer, prediction_features(cfg, lake, record), top=top)
    except Exception as err:  # noqa: BLE001 - reported in the trace instead
        return {"error": f"{type(err).__name__}: {err}"}
    return {"explainer": explainer.kind, **row}


def trace(prediction_id: str, cfg: PipelineConfig | None = None, *, explain: bool = True, top: int = 5) -> dict:
    """The whole chain behind ``prediction_id`` as a JSON-able dict (``schema_version`` 1); see the module doc.
    ``cfg`` defaults to the pipeline named in the id; ``explain`` adds ``explanation`` (the ``top`` SHAP
    contributions, :func:`explain_prediction`)."""
    from mlflow.tracking import MlflowClient

    from airloop.config import get_pipeline
    from airloop.store import tracking

    pipeline, source, _ = parse_prediction_id(prediction_id)
    cfg = cfg or get_pipeline(pipeline)
    lake = Lake(cfg.name)
    record = find_prediction(lake, prediction_id)
    tracking.configure_mlflow()
    client = MlflowClient()
    version = str(record["model_version"])
    mv = client.get_model_version(cfg.registered_model_name, version)
    tags = dict(mv.tags or {})
    run = client.get_run(mv.run_id)
    rtags = run.data.tags
    split_uris = [rtags.get("airloop.train_uri", ""), rtags.get("airloop.test_uri", "")]
    batches = [batch_record(lake, b) for b in training_batches(split_uris)]
    scored_batch = None if source.startswith("serve-") else batch_record(lake, source)
    dag_runs = [
        _dag_run({"dag_id": record.get("airflow_dag_id"), "run_id": record.get("airflow_run_id")}, "score"),
        _dag_run({"dag_id": rtags.get("airflow.dag_id"), "run_id": rtags.get("airflow.run_id")}, "train"),
    ]
    for b in ([scored_batch] if scored_batch else []) + batches:
        dag_runs.append(_dag_run(b.get("ingest_run"), f"ingest {b['batch_id']}"))
        dag_runs.append(_dag_run((b.get("validation") or {}).get("run"), f"validate {b['batch_id']}"))
    for key in ("airloop.promote_dag_run", "airloop.promoted_dag_run"):
        if tags.get(key):
            dag_runs.append({"role": "promote", "dag_id": cfg.dag_id("promote"), "run_id": tags[key]})
    return {
        "schema_version": SCHEMA_VERSION,
        "prediction_id": prediction_id,
        "pipeline": cfg.name,
        "prediction": record,
        "explanation": explain_prediction(cfg, lake, record, rtags, top) if explain else None,
        "model": {
            "name": cfg.registered_model_name,
            "version": version,
            "source": mv.source,
            "aliases": list(getattr(mv, "aliases", []) or []),
            "created_at": pd.Timestamp(mv.creation_timestamp, unit="ms", tz="UTC").isoformat(),
        },
        "promotion": {
            "promoted_by": tags.get("airloop.promoted_by"),
            "promoted_at": tags.get("airloop.promoted_at"),
            "reason": tags.get("airloop.promotion_reason"),
            "previous_champion": tags.get("airloop.previous_champion"),
            "replaced_by": tags.get("airloop.replaced_by"),
            "retired_at": tags.get("airloop.retired_at"),
            "tags": {k: v for k, v in sorted(tags.items()) if k.startswith("airloop.")},
        },
        "training_run": {
            "run_id": run.info.run_id,
            "run_url": tracking.run_url(run.info.run_id),
            "candidate": rtags.get("airloop.candidate"),
            "metrics": {k: round(v, 5) for k, v in sorted(run.data.metrics.items())},
            "gate": {k: v for k, v in sorted(rtags.items()) if k.startswith("airloop.gate")},
            "train_uri": split_uris[0] or None,
            "test_uri": split_uris[1] or None,
            "data_fingerprint": rtags.get("airloop.data_fingerprint"),
        },
        "code": {"git_sha": rtags.get("airloop.git_sha"), "uv_lock_sha256": rtags.get("airloop.uv_lock_sha256")},
        "scored_batch": scored_batch,
        "training_batches": batches,
        "dag_runs": [r for r in dag_runs if r],
    }


def render(chain: dict) -> str:
    """The human-readable form of :func:`trace`."""
    p, m, pr, tr = chain["prediction"], chain["model"], chain["promotion"], chain["training_run"]
    when = p.get("served_at") or p.get("scored_at")
    lines = [
        f"prediction {chain['prediction_id']}",
        f"  value       {p.get('prediction')} (probability {p.get('probability')}) at {when}",
        f"  record      {p.get('log_uri')}",
        *_uncertainty_lines(p),
        *_explanation_lines(chain.get("explanation")),
        f"model        {m['name']} v{m['version']} ({m['source']})",
        f"  promoted    by {pr['promoted_by']} at {pr['promoted_at']}: {pr['reason']} "
        f"(previous champion: {pr['previous_champion']})",
        f"training run {tr['run_id']} ({tr['candidate']}) {tr['run_url']}",
        "  metrics     " + ", ".join(f"{k}={v}" for k, v in tr["metrics"].items() if k.startswith("test_")),
        f"  data        {tr['train_uri']} (fingerprint {tr['data_fingerprint']})",
        f"code         git {chain['code']['git_sha']}, uv.lock {str(chain['code']['uv_lock_sha256'])[:12]}",
    ]
    if chain["scored_batch"]:
        lines.append("scored batch")
        lines += _batch_lines(chain["scored_batch"])
    lines.append(f"training batches ({len(chain['training_batches'])})")
    for b in chain["training_batches"]:
        lines += _batch_lines(b)
    lines.append("DAG runs")
    lines += [f"  {r['role']:24} {r['dag_id']} {r['run_id']}" for r in chain["dag_runs"]] or ["  none recorded"]
    return "\n".join(lines)


def _uncertainty_lines(p: dict) -> list[str]:
    if p.get("prediction_set") is not None:
        return [f"  set         {p['prediction_set']} (conformal prediction set)"]
    if p.get("interval_low") is not None:
        return [f"  interval    [{p['interval_low']:.4g}, {p['interval_high']:.4g}] (conformal interval)"]
    return []


def _explanation_lines(e: dict | None) -> list[str]:
    if not e:
        return []
    if "error" in e:
        return [f"  explained   not available: {e['error']}"]
    lines = [f"  explained   {e['explainer']} SHAP, expected value {e['expected_value']:.4g}; top contributions:"]
    return lines + [
        f"    {c['feature']:24} = {str(c['value']):20} {c['contribution']:+.4f}" for c in e["contributions"]
    ]


def _batch_lines(b: dict) -> list[str]:
    if not b.get("manifest_uri"):
        return [f"  {b['batch_id']}: {b.get('kind') or b.get('note')}"]
    v = b["validation"]
    out = [
        f"  {b['batch_id']}: {b['rows']} rows, validation {v['verdict']} "
        f"({v['critical']} critical, {v['warnings']} warnings; suite {v['suite']})",
        f"    manifest  {b['manifest_uri']}",
    ]
    out += [f"    source    {s['uri']} sha256 {str(s['sha256'])[:16]}" for s in b["sources"]]
    if v.get("data_docs"):
        out.append(f"    data docs {v['data_docs']}")
    return out
