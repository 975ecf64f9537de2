"""EDA report (the feasibility phase): one self-contained HTML page per pipeline, logged to MLflow.

``profile_frame(cfg, frame)`` computes the facts (descriptive statistics, distributions, missing values,
outliers by the 1.5 IQR rule, association with the target); ``render_html`` turns them into a page with inline
SVG charts (no scripts, no external files); ``profile_pipeline`` writes it to the lake's ``reports/profile/``
and logs it to MLflow.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from airloop.config import PipelineConfig
from airloop.data.datasets import feature_columns

_BINS = 20
_TOP_CATEGORIES = 12


@dataclass
class ColumnProfile:
    """What the report says about one column."""

    name: str
    kind: str  # numeric | categorical | datetime
    dtype: str
    missing: int
    missing_pct: float
    distinct: int
    stats: dict[str, float] = field(default_factory=dict)
    outliers: int = 0
    outlier_pct: float = 0.0
    histogram: list[tuple[str, int]] = field(default_factory=list)
    target_association: float | None = None
    association_measure: str = ""


@dataclass
class Profile:
    pipeline: str
    rows: int
    target: str
    task: str
    columns: list[ColumnProfile]
    target_distribution: list[tuple[str, int]]
    created_at: str

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def _numeric_profile(s: pd.Series, target: pd.Series | None, task: str) -> dict[str, Any]:
    values = s.dropna().astype(float)
    out: dict[str, Any] = {"stats": {}, "histogram": []}
    if values.empty:
        return out
    q1, q3 = values.quantile(0.25), values.quantile(0.75)
    iqr = q3 - q1
    outliers = int(((values < q1 - 1.5 * iqr) | (values > q3 + 1.5 * iqr)).sum()) if iqr > 0 else 0
    out["stats"] = {
        "mean": float(values.mean()),
        "std": float(values.std()) if len(values) > 1 else 0.0,
        "min": float(values.min()),
        "p25": float(q1),
        "median": float(values.median()),
        "p75": float(q3),
        "max": float(values.max()),
        "skew": float(values.skew()) if len(values) > 2 else 0.0,
    }
    out["outliers"] = outliers
    counts, edges = np.histogram(values, bins=min(_BINS, max(1, values.nunique())))
    out["histogram"] = [(f"{edges[i]:.4g}", int(c)) for i, c in enumerate(counts)]
    if target is not None:
        y = pd.to_numeric(target, errors="coerce")
        both = pd.concat([s.astype(float), y], axis=1).dropna()
        if len(both) > 2 and both.iloc[:, 0].std() > 0 and both.iloc[:, 1].std() > 0:
            out["target_association"] = float(both.iloc[:, 0].corr(both.iloc[:, 1]))
            out["association_measure"] = "Pearson r" if task == "regression" else "point-biserial r"
    return out


def _categorical_profile(s: pd.Series, target: pd.Series | None, task: str) -> dict[str, Any]:
    counts = s.astype("string").fillna("(missing)").value_counts()
    top = counts.head(_TOP_CATEGORIES)
    hist = [(str(k), int(v)) for k, v in top.items()]
    if len(counts) > _TOP_CATEGORIES:
        hist.append((f"({len(counts) - _TOP_CATEGORIES} others)", int(counts.iloc[_TOP_CATEGORIES:].sum())))
    out: dict[str, Any] = {"histogram": hist, "stats": {"top_share": float(top.iloc[0] / counts.sum())}}
    if target is not None and target.notna().any():
        frame = pd.DataFrame({"x": s.astype("string"), "y": target}).dropna()
        if task == "regression":
            y = pd.to_numeric(frame["y"], errors="coerce")
            total = ((y - y.mean()) ** 2).sum()
            between = frame.assign(y=y).groupby("x")["y"].agg(["mean", "size"])
            ss_between = (between["size"] * (between["mean"] - y.mean()) ** 2).sum()
            if total > 0:
                out["target_association"] = float(math.sqrt(ss_between / total))
                out["association_measure"] = "correlation ratio (eta)"
        else:
            table = pd.crosstab(frame["x"], frame["y"])
            if table.shape[0] > 1 and table.shape[1] > 1:
                from scipy.stats import chi2_contingency

                chi2 = chi2_contingency(table, correction=False)[0]
                n = table.to_numpy().sum()
                out["target_association"] = float(math.sqrt(chi2 / (n * (min(table.shape) - 1))))
                out["association_measure"] = "Cramér's V"
    return out


def profile_frame(cfg: PipelineConfig, frame: pd.DataFrame) -> Profile:
    """Compute the EDA facts of a frame for a pipeline (its features, id/event columns and target)."""
    target = frame[cfg.target] if cfg.target in frame.columns else None
    numeric, categorical = feature_columns(cfg, frame)
    columns: list[ColumnProfile] = []
    order = [c for c in (cfg.id_column, cfg.event_time_column) if c and c in frame.columns] + numeric + categorical
    for col in order:
        s = frame[col]
        missing = int(s.isna().sum())
        if pd.api.types.is_datetime64_any_dtype(s) or col == cfg.event_time_column:
            kind, facts = "datetime", {"stats": {}, "histogram": []}
            times = pd.to_datetime(s, errors="coerce").dropna()
            if len(times):
                facts["stats"] = {"min": str(times.min()), "max": str(times.max())}
        elif col in numeric:
            kind, facts = "numeric", _numeric_profile(s, target, cfg.task)
        else:
            kind = "categorical"
            facts = _categorical_profile(s, target if col != cfg.id_column else None, cfg.task)
        columns.append(
            ColumnProfile(
                name=str(col),
                kind=kind,
                dtype=str(s.dtype),
                missing=missing,
                missing_pct=round(100 * missing / max(len(s), 1), 3),
                distinct=int(s.nunique(dropna=True)),
                stats=facts.get("stats", {}),
                outliers=facts.get("outliers", 0),
                outlier_pct=round(100 * facts.get("outliers", 0) / max(len(s) - missing, 1), 3),
                histogram=facts.get("histogram", []),
                target_association=facts.get("target_association"),
                association_measure=facts.get("association_measure", ""),
            )
        )
    target_dist: list[tuple[str, int]] = []
    if target is not None:
        if cfg.task == "classification":
            known = target.dropna()
            if pd.api.types.is_float_dtype(known) and (known == known.round()).all():
                known = known.astype(int)  # labels joined next to missing ones became floats: 1.0 is class 1
            target_dist = [(str(k), int(v)) for k, v in known.value_counts().sort_index().items()]
            unlabeled = int(target.isna().sum())
            if unlabeled:  # rows whose label has not arrived: say so instead of a "nan" class
                target_dist.append(("not labeled yet", unlabeled))
        else:
            target_dist = _numeric_profile(target, None, cfg.task)["histogram"]
    return Profile(
        pipeline=cfg.name,
        rows=len(frame),
        target=cfg.target,
        task=cfg.task,
        columns=columns,
        target_distribution=target_dist,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


# --- HTML ----------------------------------------------------------------------------------------------------

_CSS = """body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:1rem 0;font-size:.9rem}td,th{border:1px solid #ccc;padding:.25rem .5rem;
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.cols{display:flex;flex-wrap:wrap;gap:1rem}.card{border:1px solid #ddd;border-radius:6px;padding:.5rem 1rem;
width:360px}.warn{color:#b35900;font-weight:600}h3{margin:.4rem 0}small{color:#666}"""


def _bars(hist: list[tuple[str, int]], width: int = 340, height: int = 120) -> str:
    if not hist:
        return "<small>no values</small>"
    peak = max(c for _, c in hist) or 1
    bar_w = width / len(hist)
    rects = []
    for i, (label, count) in enumerate(hist):
        h = (height - 14) * count / peak
        rects.append(
            f'<rect x="{i * bar_w + 1:.1f}" y="{height - 14 - h:.1f}" width="{max(bar_w - 2, 1):.1f}" '
            f'height="{h:.1f}" fill="#4a7bb7"><title>{html.escape(label)}: {count}</title></rect>'
        )
    first, last = html.escape(hist[0][0]), html.escape(hist[-1][0])
    return (
        f'<svg width="{width}" height="{height}" role="img">{"".join(rects)}'
        f'<text x="0" y="{height - 2}" font-size="10">{first}</text>'
        f'<text x="{width}" y="{height - 2}" font-size="10" text-anchor="end">{last}</text></svg>'
    )


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def render_html(profile: Profile, source: str = "") -> str:
    """A self-contained HTML page (inline CSS and SVG only) for a :class:`Profile`."""
    esc = html.escape
    missing_rows = "".join(
        f"<tr><td>{esc(c.name)}</td><td>{c.missing}</td><td class='{'warn' if c.missing_pct > 20 else ''}'>"
        f"{c.missing_pct:.2f}%</td></tr>"
        for c in sorted(profile.columns, key=lambda c: -c.missing_pct)
    )
    numeric = [c for c in profile.columns if c.kind == "numeric"]
    stat_keys = ["mean", "std", "min", "p25", "median", "p75", "max", "skew"]
    stats_rows = "".join(
        f"<tr><td>{esc(c.name)}</td>{''.join('<td>' + _fmt(c.stats.get(k, '')) + '</td>' for k in stat_keys)}"
        f"<td>{c.outliers} ({c.outlier_pct:.2f}%)</td></tr>"
        for c in numeric
    )
    assoc = sorted(
        (c for c in profile.columns if c.target_association is not None),
        key=lambda c: -abs(c.target_association or 0),
    )
    assoc_rows = "".join(
        f"<tr><td>{esc(c.name)}</td><td>{c.target_association:+.3f}</td><td>{esc(c.association_measure)}</td></tr>"
        for c in assoc
    )
    cards = "".join(
        f"<div class='card'><h3>{esc(c.name)}</h3><small>{c.kind}, {esc(c.dtype)}, {c.distinct} distinct, "
        f"{c.missing_pct:.1f}% missing</small><br>{_bars(c.histogram)}</div>"
        for c in profile.columns
        if c.histogram
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Airloop profile: {esc(profile.pipeline)}</title>
<style>{_CSS}</style></head><body>
<h1>Profile of pipeline <code>{esc(profile.pipeline)}</code></h1>
<p>{profile.rows} rows, {len(profile.columns)} columns; target <code>{esc(profile.target)}</code> ({profile.task}).
{esc(source)} <small>Created {esc(profile.created_at)}.</small></p>
<h2>Target</h2>{_bars(profile.target_distribution, 500, 140)}
<h2>Association with the target</h2>
<table><tr><th>column</th><th>association</th><th>measure</th></tr>{assoc_rows}</table>
<h2>Descriptive statistics (numeric)</h2>
<table><tr><th>column</th>{"".join(f"<th>{k}</th>" for k in stat_keys)}<th>outliers (1.5 IQR)</th></tr>
{stats_rows}</table>
<h2>Missing values</h2>
<table><tr><th>column</th><th>missing</th><th>share</th></tr>{missing_rows}</table>
<h2>Distributions</h2><div class="cols">{cards}</div>
</body></html>
"""


def join_labels(cfg: PipelineConfig, frame: pd.DataFrame, lake: Any = None) -> tuple[pd.DataFrame, int]:
    """``frame`` with the target filled from the pipeline's delayed labels feed (the lake's ``labels/`` zone),
    and how many rows got a label that way. Without a labels feed or an id column the frame is returned as is."""
    from airloop.data.datasets import attach_labels
    from airloop.store.lake import Lake

    if cfg.labels is None or cfg.id_column is None or cfg.id_column not in frame.columns:
        return frame, 0
    labels = (lake or Lake(cfg.name)).read_zone("labels")
    before = int(frame[cfg.target].notna().sum()) if cfg.target in frame.columns else 0
    out = attach_labels(cfg, frame, labels)
    after = int(out[cfg.target].notna().sum()) if cfg.target in out.columns else 0
    return out, after - before


def profile_pipeline(
    cfg: PipelineConfig, frame: pd.DataFrame, *, source: str = "", track: bool = True
) -> dict[str, Any]:
    """Profile a frame, write the HTML to ``reports/profile/<date>.html`` in the lake and (with ``track``)
    log it to MLflow as an artifact of a small run. Returns {"uri", "rows", "columns", "mlflow_run_id",
    "summary"}."""
    from airloop.store import lake as lk

    frame, joined = join_labels(cfg, frame)
    profile = profile_frame(cfg, frame)
    page = render_html(profile, source)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%M%S")
    uri = lk.write_bytes(lk.Lake(cfg.name).report("profile", f"{stamp}.html"), page.encode("utf-8"))
    run_id = _log_to_mlflow(cfg, profile, page) if track else None
    top = [c.name for c in sorted(profile.columns, key=lambda c: -abs(c.target_association or 0))[:3]]
    return {
        "uri": uri,
        "rows": profile.rows,
        "columns": len(profile.columns),
        "mlflow_run_id": run_id,
        "labels_joined": joined,
        "summary": f"Profiled {profile.rows} rows of {cfg.name!r} ({joined} labels joined from the labels feed); "
        "most associated with the target: "
        f"{', '.join(top) or '-'}; report {uri}",
    }


def _log_to_mlflow(cfg: PipelineConfig, profile: Profile, page: str) -> str:
    from mlflow.tracking import MlflowClient

    from airloop.store import tracking

    experiment_id = tracking.ensure_experiment(cfg, "data")  # configures the tracking URI before the client exists
    client = MlflowClient()
    run = client.create_run(
        experiment_id,
        run_name="profile",
        tags={**tracking.lineage_tags(None), "airloop.stage": "profile", tracking.RUN_TYPE_TAG: "profile"},
    )
    client.log_text(run.info.run_id, page, "profile/profile.html")
    client.log_dict(run.info.run_id, profile.to_dict(), "profile/profile.json")
    client.log_metric(run.info.run_id, "rows", profile.rows)
    client.set_terminated(run.info.run_id)
    return run.info.run_id
