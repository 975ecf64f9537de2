"""The feasibility report: before a pipeline's first model, is there something to learn, and is it honest?

It covers the label balance; the signal of a simple model (the task's linear candidate, out-of-fold) against
the trivial baseline with a paired bootstrap interval (:mod:`airloop.model.baseline`); a learning curve (does
more data help?); leakage suspects (one feature that alone nearly predicts the target, or an id-like column);
high-cardinality and constant columns; and a go/no-go sentence with its reasons.

No-go when there is one class or too few rows, when the signal is not credibly above the baseline, or when a
leakage suspect is found. The report is written to the lake (``feasibility/report.html`` and ``report.json``)
and to an MLflow run (``airloop.stage`` = feasibility). A no-go stops the pipeline's first promotion at the
gate (check ``feasibility``) until someone overrides it with ``airloop feasibility NAME --force``.
"""

from __future__ import annotations

import datetime as dt
import html
import logging
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_predict

from airloop.config import PipelineConfig
from airloop.store import lake as lk
from airloop.store.lake import Lake

log = logging.getLogger(__name__)

MIN_ROWS = 50
LEAK_AUC = 0.98  # one feature alone ranks the classes (nearly) perfectly
LEAK_R2 = 0.95  # one feature alone explains the target (nearly) fully
ID_UNIQUE_SHARE = 0.95  # a non-float column with (nearly) one value per row
HIGH_CARDINALITY = 50  # categorical values beyond the one-hot limit (airloop.model.candidates)
MINORITY_WARN = 0.05
CURVE_SHARES = (0.25, 0.5, 1.0)
FOLDS = 3


def _report_uri(lake: Lake, name: str) -> str:
    return lk.join(lake.zone("feasibility"), name)


# ----------------------------------------------------------------------------------------------- checks


def label_balance(cfg: PipelineConfig, y: pd.Series) -> dict[str, Any]:
    if cfg.task == "regression":
        v = pd.to_numeric(y, errors="coerce")
        return {"kind": "regression", "mean": float(v.mean()), "std": float(v.std()), "rows": int(v.notna().sum())}
    shares = y.value_counts(normalize=True)
    return {
        "kind": "classification",
        "classes": {str(k): float(s) for k, s in shares.items()},
        "minority_share": float(shares.min()),
        "rows": int(len(y)),
    }


def _univariate(cfg: PipelineConfig, x: pd.Series, y: pd.Series, categorical: bool) -> float | None:
    """How well one feature alone predicts the target: ROC-AUC (binary, either direction) or R² of its
    per-value target mean (categorical) / squared correlation (numeric)."""
    mask = x.notna()
    if mask.sum() < MIN_ROWS or x[mask].nunique() < 2:
        return None
    x, y = x[mask], y[mask]
    if categorical:
        codes = x.astype(str)
        target = (y == sorted(y.unique())[-1]).astype(float) if cfg.task == "classification" else y.astype(float)
        score = codes.map(target.groupby(codes).mean()).astype(float)
    else:
        score = x.astype(float)
    if cfg.task == "classification":
        if y.nunique() != 2:
            return None
        auc = roc_auc_score(y == sorted(y.unique())[-1], score)
        return float(max(auc, 1 - auc))
    corr = np.corrcoef(score, y.astype(float))[0, 1]
    return float(corr**2) if np.isfinite(corr) else None


def column_checks(cfg: PipelineConfig, frame: pd.DataFrame, numeric: list[str], categorical: list[str]) -> dict:
    """{"leakage": [...], "id_like": [...], "high_cardinality": [...], "constant": [...]} (dicts with detail)."""
    y = frame[cfg.target]
    out: dict[str, list] = {"leakage": [], "id_like": [], "high_cardinality": [], "constant": []}
    for col in numeric + categorical:
        values = frame[col]
        distinct = int(values.nunique(dropna=True))
        if distinct <= 1:
            out["constant"].append({"column": col, "distinct": distinct})
            continue
        is_cat = col in categorical
        if not pd.api.types.is_float_dtype(values) and distinct >= ID_UNIQUE_SHARE * values.notna().sum():
            out["id_like"].append({"column": col, "distinct": distinct, "rows": int(values.notna().sum())})
            continue
        if is_cat and distinct > HIGH_CARDINALITY:
            out["high_cardinality"].append({"column": col, "distinct": distinct})
        strength = _univariate(cfg, values, y, is_cat)
        limit = LEAK_AUC if cfg.task == "classification" else LEAK_R2
        if strength is not None and strength >= limit:
            measure = "ROC-AUC" if cfg.task == "classification" else "R²"
            out["leakage"].append({"column": col, "measure": measure, "value": strength})
    return out


def signal_and_curve(cfg: PipelineConfig, frame: pd.DataFrame, numeric: list[str], categorical: list[str]) -> dict:
    """Out-of-fold primary metric of the task's linear candidate vs the baseline (paired bootstrap), and the
    same at growing shares of the rows (a learning curve)."""
    from airloop.model.baseline import baseline_check, baseline_scored
    from airloop.model.candidates import build_pipeline, default_candidates
    from airloop.model.gate import compare
    from airloop.model.metrics import compute_metrics, greater_is_better

    metric = cfg.primary_metric
    seed = cfg.training.seed
    candidate = default_candidates(cfg.task)[0]
    X, y = frame[numeric + categorical], frame[cfg.target]
    splitter = (StratifiedKFold if cfg.task == "classification" else KFold)(FOLDS, shuffle=True, random_state=seed)

    def oof(rows: pd.Index) -> dict:
        model = build_pipeline(candidate, numeric, categorical, seed, task=cfg.task)
        method = "predict_proba" if cfg.task == "classification" else "predict"
        got = cross_val_predict(model, X.loc[rows], y.loc[rows], cv=splitter, method=method, n_jobs=1)
        if cfg.task == "regression":
            return {"y_pred": got, "y_proba": None, "classes": None}
        classes = np.unique(y.loc[rows])
        return {"y_pred": classes[np.argmax(got, axis=1)], "y_proba": got, "classes": classes}

    scored = oof(frame.index)
    y_true = y.to_numpy()
    value = compute_metrics(cfg.task, y_true, scored["y_pred"], scored["y_proba"], classes=scored["classes"])[metric]
    base = baseline_scored(cfg.task, y_true, len(y_true), scored["classes"])
    base_value = compute_metrics(cfg.task, y_true, base["y_pred"], base["y_proba"], classes=base["classes"])[metric]
    cmp = compare(cfg, metric, y_true, scored, base)
    check = baseline_check(cfg, metric, value, base_value, cmp)
    curve = []
    rng = np.random.default_rng(seed)
    order = rng.permutation(frame.index.to_numpy())
    for share in CURVE_SHARES:
        rows = pd.Index(np.sort(order[: max(int(len(order) * share), FOLDS * 10)]))
        if cfg.task == "classification" and y.loc[rows].value_counts().min() < FOLDS:
            continue
        s = scored if share == 1.0 else oof(rows)
        got = compute_metrics(cfg.task, y.loc[rows].to_numpy(), s["y_pred"], s["y_proba"], classes=s["classes"])
        curve.append({"share": share, "rows": int(len(rows)), metric: got.get(metric)})
    gain = None
    if len(curve) >= 2 and curve[-1][metric] is not None and curve[-2][metric] is not None:
        gain = curve[-1][metric] - curve[-2][metric]
        gain = gain if greater_is_better(metric) else -gain
    return {
        "model": candidate.estimator,
        "metric": metric,
        "value": value,
        "baseline": base_value,
        "improvement": cmp["improvement"],
        "ci": cmp["ci"],
        "lower_bound": cmp["bounds"][0] if cmp["bounds"] else None,
        "credible": check["passed"],
        "detail": check["detail"],
        "curve": curve,
        "last_doubling_gain": gain,
    }


def assess(cfg: PipelineConfig, frame: pd.DataFrame) -> dict[str, Any]:
    """The report as a dict: {"pipeline", "rows", "at", "label_balance", "signal", "columns", "decision"
    ("go"|"no-go"), "reasons" (why no-go), "warnings", "sentence"}."""
    from airloop.data.datasets import feature_columns

    frame = frame[frame[cfg.target].notna()].reset_index(drop=True) if cfg.target in frame.columns else frame
    reasons, warnings = [], []
    report: dict[str, Any] = {"pipeline": cfg.name, "rows": int(len(frame)), "at": dt.datetime.now(dt.UTC).isoformat()}
    if cfg.target not in frame.columns or len(frame) < MIN_ROWS:
        reasons.append(f"{len(frame)} labeled rows in target column {cfg.target!r}; need at least {MIN_ROWS}")
        return _decide(report, reasons, warnings)
    balance = label_balance(cfg, frame[cfg.target])
    report["label_balance"] = balance
    if cfg.task == "classification":
        if len(balance["classes"]) < 2:
            reasons.append(f"a single class in target column {cfg.target!r}: nothing to learn")
            return _decide(report, reasons, warnings)
        if balance["minority_share"] < MINORITY_WARN:
            warnings.append(f"the rarest class is {balance['minority_share']:.1%} of the rows: imbalanced")
    numeric, categorical = feature_columns(cfg, frame)
    columns = column_checks(cfg, frame, numeric, categorical)
    report["columns"] = columns
    for leak in columns["leakage"]:
        reasons.append(
            f"leakage suspect: column {leak['column']!r} alone reaches {leak['measure']} {leak['value']:.3f} on "
            f"{cfg.target!r}; a feature that predicts the target this well is usually the target in disguise"
        )
    for col in columns["id_like"]:
        reasons.append(
            f"id-like column {col['column']!r} ({col['distinct']} distinct values in {col['rows']} rows) is a "
            "feature; declare it as id_column or leave it out of features"
        )
    for col in columns["high_cardinality"]:
        warnings.append(f"high-cardinality column {col['column']!r}: {col['distinct']} values")
    for col in columns["constant"]:
        warnings.append(f"constant column {col['column']!r}: carries no information")
    usable_num = [c for c in numeric if c not in _names(columns, "id_like", "constant")]
    usable_cat = [c for c in categorical if c not in _names(columns, "id_like", "constant")]
    if usable_num or usable_cat:
        signal = signal_and_curve(cfg, frame, usable_num, usable_cat)
        report["signal"] = signal
        if not signal["credible"]:
            reasons.append(f"no credible signal: {signal['detail']}")
        gain = signal["last_doubling_gain"]
        if gain is not None and gain > 0.005:
            warnings.append(f"the learning curve still rises ({gain:+.4f} {signal['metric']} from half to all rows)")
    else:
        reasons.append("no usable feature columns (all constant or id-like)")
    return _decide(report, reasons, warnings)


def _names(columns: dict, *kinds: str) -> set[str]:
    return {c["column"] for k in kinds for c in columns.get(k, [])}


def _decide(report: dict, reasons: list[str], warnings: list[str]) -> dict:
    report.update(decision="no-go" if reasons else "go", reasons=reasons, warnings=warnings)
    if reasons:
        report["sentence"] = f"No-go for {report['pipeline']}: " + "; ".join(reasons) + "."
    else:
        sig = report.get("signal", {})
        report["sentence"] = (
            f"Go for {report['pipeline']}: a simple model beats the baseline credibly "
            f"({sig.get('metric')} {sig.get('value', float('nan')):.4f} vs {sig.get('baseline', float('nan')):.4f}, "
            f"one-sided 95% lower bound of the improvement {sig.get('lower_bound') or 0:+.4f}) and no leakage "
            "suspect was found."
        )
    return report


# ---------------------------------------------------------------------------------------------- the page


def render_html(report: dict[str, Any]) -> str:
    """One self-contained HTML page (no scripts, no external assets)."""
    esc = html.escape

    def table(header: list[str], rows: list[list[Any]]) -> str:
        head = "".join(f"<th>{esc(h)}</th>" for h in header)
        body = "".join(
            "<tr>" + "".join(f"<td>{esc(f'{c:.4f}' if isinstance(c, float) else str(c))}</td>" for c in r) + "</tr>"
            for r in rows
        )
        return f"<table><tr>{head}</tr>{body}</table>"

    parts = [
        f"<h1>Feasibility: {esc(report['pipeline'])}</h1>",
        f"<p class='{report['decision']}'><b>{esc(report['decision'].upper())}</b>: {esc(report['sentence'])}</p>",
        f"<p>{report['rows']} labeled rows; {esc(report['at'])}</p>",
    ]
    if report.get("reasons"):
        parts += ["<h2>Why no-go</h2><ul>", *[f"<li>{esc(r)}</li>" for r in report["reasons"]], "</ul>"]
    if report.get("warnings"):
        parts += ["<h2>Warnings</h2><ul>", *[f"<li>{esc(w)}</li>" for w in report["warnings"]], "</ul>"]
    balance = report.get("label_balance")
    if balance and balance["kind"] == "classification":
        parts += ["<h2>Label balance</h2>", table(["class", "share"], [[k, v] for k, v in balance["classes"].items()])]
    elif balance:
        parts += [
            "<h2>Target</h2>",
            table(["mean", "std", "rows"], [[balance["mean"], balance["std"], balance["rows"]]]),
        ]
    sig = report.get("signal")
    if sig:
        ci = sig["ci"] or [None, None]
        parts += [
            "<h2>Signal against the baseline</h2>",
            f"<p>{esc(sig['detail'])}</p>",
            table(
                ["model", sig["metric"], "baseline", "improvement", "95% CI low", "95% CI high"],
                [[sig["model"], sig["value"], sig["baseline"], sig["improvement"], ci[0], ci[1]]],
            ),
            "<h2>Learning curve (out-of-fold)</h2>",
            table(["share", "rows", sig["metric"]], [[c["share"], c["rows"], c[sig["metric"]]] for c in sig["curve"]]),
        ]
    cols = report.get("columns", {})
    rows = [
        [k, c["column"], ", ".join(f"{a}={b}" for a, b in c.items() if a != "column")] for k in cols for c in cols[k]
    ]
    parts += ["<h2>Columns</h2>", table(["finding", "column", "detail"], rows) if rows else "<p>nothing to report</p>"]
    if report.get("override"):
        o = report["override"]
        parts.append(f"<p><b>No-go overridden</b> by {esc(o['by'])} at {esc(o['at'])}: {esc(o['reason'])}</p>")
    style = (
        "body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.2em .6em}.go{color:#176b2c}.no-go{color:#a31515}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Feasibility {esc(report['pipeline'])}</title>"
        f"<style>{style}</style></head><body>{''.join(parts)}</body></html>"
    )


# ------------------------------------------------------------------------------------------ the workflow


def publish(cfg: PipelineConfig, report: dict[str, Any]) -> dict[str, Any]:
    """Write report.html and report.json to the lake's ``feasibility/`` zone and to an MLflow run; returns the
    report with "html_uri", "json_uri", "run_id"."""
    import mlflow

    from airloop.store import tracking

    lake = Lake(cfg.name)
    page = render_html(report)
    html_uri = lk.write_bytes(_report_uri(lake, "report.html"), page.encode())
    report = {**report, "html_uri": html_uri, "json_uri": _report_uri(lake, "report.json")}
    try:
        experiment_id = tracking.ensure_experiment(cfg, "data")  # a study of the data, not a candidate
        tags = {
            **tracking.lineage_tags(None),
            "airloop.pipeline": cfg.name,
            "airloop.stage": "feasibility",
            tracking.RUN_TYPE_TAG: "feasibility",
        }
        with mlflow.start_run(experiment_id=experiment_id, run_name="feasibility", tags=tags) as run:
            mlflow.log_text(page, "feasibility/report.html")
            mlflow.log_dict(report, "feasibility/report.json")
            mlflow.set_tag("airloop.feasibility", report["decision"])
            if report.get("signal"):
                mlflow.log_metric(f"feasibility_{report['signal']['metric']}", report["signal"]["value"])
            report["run_id"] = run.info.run_id
    except Exception as err:  # the lake copy is the record; MLflow is the convenient view
        log.warning("feasibility report not logged to MLflow: %s", err)
    lk.write_json(report["json_uri"], report)
    return report


def run_feasibility(cfg: PipelineConfig, frame: pd.DataFrame | None = None) -> dict[str, Any]:
    """Assess ``frame`` (default: every labeled validated row of the pipeline) and publish the report."""
    from airloop.data.datasets import labeled_frame

    lake = Lake(cfg.name)
    if frame is None:
        frame = labeled_frame(cfg, lake, lake.batches("validated"))
    report = publish(cfg, assess(cfg, frame))
    log.info("%s\n  report: %s", report["sentence"], report["html_uri"])
    return report


def latest(cfg: PipelineConfig) -> dict[str, Any] | None:
    """The pipeline's last feasibility report, or None."""
    uri = _report_uri(Lake(cfg.name), "report.json")
    return lk.read_json(uri) if lk.exists(uri) else None


def force(cfg: PipelineConfig, reason: str, by: str) -> dict[str, Any]:
    """Record a person's override of a no-go, so the first promotion may go ahead; returns the report."""
    report = latest(cfg)
    if report is None:
        from airloop.errors import BadInput

        raise BadInput(
            f"pipeline {cfg.name!r}: no feasibility report to override; run `airloop feasibility {cfg.name}`"
        )
    report["override"] = {"by": by, "reason": reason, "at": dt.datetime.now(dt.UTC).isoformat()}
    lk.write_json(report["json_uri"], report)
    lk.write_bytes(report["html_uri"], render_html(report).encode())
    return report


def gate_check(cfg: PipelineConfig) -> dict[str, Any]:
    """The gate's ``feasibility`` check for a first promotion: fails on a no-go report without an override."""
    report = latest(cfg)
    if report is None:
        return {"check": "feasibility", "passed": True, "detail": "no feasibility report for this pipeline"}
    where = report.get("html_uri", "the lake's feasibility/ zone")
    if report["decision"] == "go":
        return {"check": "feasibility", "passed": True, "detail": f"go ({where})"}
    if report.get("override"):
        o = report["override"]
        return {
            "check": "feasibility",
            "passed": True,
            "detail": f"no-go overridden by {o['by']} ({o['reason']}): {'; '.join(report['reasons'])} ({where})",
        }
    return {
        "check": "feasibility",
        "passed": False,
        "detail": f"{report['sentence']} First promotion stopped; fix the data or override with "
        f"`airloop feasibility {cfg.name} --force --reason ...` ({where})",
    }
